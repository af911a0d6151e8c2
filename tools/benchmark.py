r"""PruneTrain against what a user would do instead, side by side.

The default (`--mode=comparison`): on one workload, for every seed, the same
data, epochs and schedule, it trains

* `dense`: the full network, no group lasso;
* `thin`: uniformly thinner dense networks, for every `--widths` multiplier
  (the simplest alternative: a smaller model trained from scratch);
* `prunetrain`: `Reconfigure(flops_target=t)` for every `--targets` value;
* `prunetrain_time` (with `--time_rank`): the same with `rank="time"`
  (channels ranked by weight norm per second on the measured roofline);
* `prunetrain_undo` (with `--undo`): the same with `undo_slower=True` (a
  cut whose measured step got slower is put back, and made again coarser);
* `scratch`: each PruneTrain run's final architecture trained dense from
  fresh weights (is pruning while training worth it?);
* `paper`: the paper's setting (λ calibrated from a 0.2 penalty ratio, the
  lasso as a loss term on kernels, a reconfiguration every `--paper_interval`
  epochs, arbitrary widths).

It reports, per setting, mean ± std over seeds of top-1 and of the training
wall time, training FLOPs, final inference FLOPs and parameters, each as a
ratio to the same seed's dense run; marks the settings on the Pareto front of
top-1 vs wall time; checks the goals of BENCHMARKS.md; and writes `--json`
after every run and `--png` (top-1 vs wall time and vs training FLOPs, one
point per run, the fronts drawn) at the end. Training time is `fit`'s wall
time without per-epoch validation (`--novalidate`): top-1 is measured once,
on the whole test set, after training.

    python tools/benchmark.py --json=bench.json --png=bench.png   # Fashion-MNIST (~55 min)
    python tools/benchmark.py --workload=mnist5k --seeds=0        # the quick mode
    python tools/benchmark.py --mode=pair --targets=0.5           # one dense/PruneTrain pair

Workloads (`--workload`; any recipe flag given on the command line wins):
`fashion_mnist` (the default: ResNet-20 on a 10,000-example training
subset, 8 epochs, all 10,000 test images) and `mnist5k` (ResNet-20, 20
epochs; saturated: it cannot rank methods, BENCHMARKS.md). Fashion-MNIST
needs its files (`sudo apt-get install dataset-fashion-mnist`).

`--mode=pair` runs one dense/PruneTrain pair with the recipe flags as given
(`--targets` empty or one value) and adds the group-lasso step overhead (the
initial model's median train-step time with its GroupLasso regularizers vs
without, same widths, alternating rounds). Ratios are the headline;
absolute times are context only (a noisy 2-core machine).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "recipes"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import common  # noqa: E402  (recipes/common.py)
import tf_prunetrain  # noqa: E402

# PruneTrain's tuned settings in both workloads: the proximal lasso on
# kernels and BatchNorm scales at λ = 0.02 until the FLOPs target is met,
# widths rounded to the multiple this device runs fast (round_to="auto",
# the library's default: 8 on the 2-core CPU of BENCHMARKS.md, where it is
# faster than arbitrary counts at the same FLOPs).
_TUNED = dict(model="resnet20", batch_size=128, proximal=True, scales=True,
              strength=0.02, round_to="auto", validate=False, verbose=0)
# ResNet-20, not -32: on 2 cores the whole comparison (3 seeds, 11 settings)
# must finish in under an hour, and ResNet-20's thin 0.25 already trails
# dense by several points on Fashion-MNIST, so width matters at this size.
WORKLOADS = {
    "fashion_mnist": common.Config(data="fashion_mnist", train_size=10_000,
                                   epochs=8, lr_decay_epochs=(4, 6),
                                   **_TUNED),
    "mnist5k": common.Config(data="mnist5k", epochs=20,
                             lr_decay_epochs=(10, 15), **_TUNED),
}
DEFAULTS = WORKLOADS["fashion_mnist"]
METHODS = ("dense", "thin", "prunetrain", "prunetrain_time", "prunetrain_undo",
           "scratch", "paper")
_MODE = flags.DEFINE_enum("mode", "comparison", ["comparison", "pair"],
                          "comparison: every method over seeds; pair: one "
                          "dense/PruneTrain pair with the flags as given.")
_WORKLOAD = flags.DEFINE_enum("workload", "fashion_mnist", list(WORKLOADS),
                              "Defaults of the recipe flags not given.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures here "
                            "(after every run).")
_PNG = flags.DEFINE_string("png", None, "Draw top-1 vs training time and vs "
                           "training FLOPs here (needs matplotlib).")
_TARGETS = flags.DEFINE_list("targets", ["0.25", "0.5"],
                             "PruneTrain flops_target values.")
_WIDTHS = flags.DEFINE_list("widths", ["0.25", "0.5", "0.75"],
                            "Width multipliers of the thin dense runs.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_TIME_RANK = flags.DEFINE_boolean(
    "time_rank", False, "Also run each PruneTrain target with rank='time' "
    "(channels ranked per second on the measured roofline, not per FLOP).")
_UNDO = flags.DEFINE_boolean(
    "undo", False, "Also run each PruneTrain target with undo_slower=True "
    "(method prunetrain_undo).")
_SCRATCH = flags.DEFINE_boolean("scratch", True, "Also train each PruneTrain "
                                "run's final architecture from scratch.")
_PAPER = flags.DEFINE_boolean("paper", True, "Also run the paper's setting.")
_PAPER_INTERVAL = flags.DEFINE_integer(
    "paper_interval", 2, "Epochs between the paper setting's "
    "reconfigurations (the paper: 10 of 182).")
_ROUNDS = flags.DEFINE_integer("overhead_rounds", 8, "Alternating rounds of "
                               "the group-lasso overhead measurement (pair).")
_STEPS = flags.DEFINE_integer("overhead_steps", 5, "Timed steps per round "
                              "(pair).")


def group_lasso_overhead(config: common.Config, rounds: int,
                         steps: int) -> dict[str, float]:
    """Median train-step seconds of the initial model with and without its
    GroupLasso regularizers (same widths, same batch), alternating rounds;
    with `config.proximal` the regularizers' cost is their proximal step."""
    data = common.load_data(config)
    x, y = next(iter(data.train(config.batch_size, True)))
    models = {}
    for name, lasso in (("with", True), ("without", False)):
        model = common.build_model(config, data.shape, data.num_classes)
        if lasso:
            model = tf_prunetrain.add_group_lasso(
                model, strength=1e-4, proximal=config.proximal)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        tf_prunetrain.attach_proximal_step(model)
        model.train_on_batch(x, y)  # trace
        models[name] = model
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - start)
    with_, without = (statistics.median(times[k]) for k in ("with", "without"))
    return {"step_with": with_, "step_without": without,
            "ratio": with_ / without}


def compare(config: common.Config, rounds: int, steps: int) -> dict[str, Any]:
    """Runs dense and PruneTrain with `config`; returns both and the ratios."""
    dense = common.run(dataclasses.replace(config, prunetrain=False))
    pruned = common.run(dataclasses.replace(config, prunetrain=True))
    overhead = group_lasso_overhead(config, rounds, steps)
    d, p = _figures(dense), _figures(pruned)
    wall = p["train_seconds"] / d["train_seconds"]
    flops = p["train_flops_spent"] / d["train_flops_spent"]
    return {
        "config": dataclasses.asdict(config), "dense": d, "prunetrain": p,
        "group_lasso_overhead": overhead,
        "ratios": {
            "wall_time": wall, "train_flops": flops,
            "wall_over_flops": wall / flops,
            "inference_flops": p["inference_flops"] / d["inference_flops"],
            "params": p["params"] / d["params"],
            "gradient_bytes": p["gradient_bytes"] / d["gradient_bytes"],
            "memory_traffic": p["memory_traffic_bytes"]
            / d["memory_traffic_bytes"],
            "top1_points": 100 * (p["accuracy"] - d["accuracy"]),
            "reconfiguration_share": (p["reconfiguration_seconds"]
                                      + p["retrace_seconds"])
            / p["train_seconds"],
        },
    }


def paper_setting(config: common.Config, interval: int) -> common.Config:
    """The paper's PruneTrain on `config`'s workload: λ from a 0.2 penalty
    ratio, the lasso as a loss term on kernels only, dead channels removed
    every `interval` epochs, arbitrary widths."""
    return dataclasses.replace(config, prunetrain=True, flops_target=None,
                               target_epoch=None, proximal=False,
                               scales=False, strength=None, penalty_ratio=0.2,
                               round_to=1, interval=interval)


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in (
        "accuracy", "params", "channels", "inference_flops",
        "train_flops_spent", "train_flops_dense", "gradient_bytes",
        "memory_traffic_bytes", "reconfiguration_seconds", "retrace_seconds",
        "step_changes", "predicted_step_changes", "undone_cuts", "redone_cuts",
        "removed_layers",
        "train_seconds", "seconds")}


_RATIOS = {"wall_time": "train_seconds", "train_flops": "train_flops_spent",
           "final_flops": "inference_flops", "params": "params"}


def _ratios(dense: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """One run against the same seed's dense run."""
    ratios = {name: run[key] / dense[key] for name, key in _RATIOS.items()}
    ratios["top1_points"] = 100 * (run["accuracy"] - dense["accuracy"])
    ratios["reconfiguration_share"] = (run["reconfiguration_seconds"]
                                       + run["retrace_seconds"]) \
        / run["train_seconds"]
    ratios["memory_traffic"] = run["memory_traffic_bytes"] \
        / dense["memory_traffic_bytes"]
    # The slowest step change a reconfiguration caused (1: none timed).
    ratios["worst_step_change"] = max(run["step_changes"], default=1.0)
    ratios["undone_cuts"] = float(run["undone_cuts"])
    ratios["redone_cuts"] = float(run["redone_cuts"])
    return ratios


def comparison(config: common.Config, widths: Sequence[float],
               targets: Sequence[float], seeds: Sequence[int],
               scratch: bool = True, paper_interval: int | None = 2,
               json_path: str | None = None,
               time_rank: bool = False, undo: bool = False) -> dict[str, Any]:
    """Every method of the module docstring for every seed (`paper_interval`
    None: no paper run); the runs, the per-setting summary, the Pareto front
    and the goals, written to `json_path` (if given) after every run."""
    settings: list[tuple[str, float | None]] = [("dense", None)]
    settings += [("thin", w) for w in widths]
    for target in targets:
        settings += [("prunetrain", target)] + (
            [("scratch", target)] if scratch else []) + (
            [("prunetrain_time", target)] if time_rank else []) + (
            [("prunetrain_undo", target)] if undo else [])
    if paper_interval is not None:
        settings.append(("paper", None))
    result: dict[str, Any] = {"config": dataclasses.asdict(config),
                              "seeds": list(seeds), "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            base = dataclasses.replace(config, seed=seed)
            dense: dict[str, Any] = {}
            for method, value in settings:
                run_config = _setting(base, method, value, paper_interval,
                                      os.path.join(folder, f"{seed}_{value}"))
                _fresh_state()
                outcome = common.run(run_config)
                if method == "prunetrain" and scratch:
                    with open(os.path.join(folder, f"{seed}_{value}"), "w",
                              encoding="utf-8") as f:
                        f.write(outcome["model"].to_json())
                figures = _figures(outcome)
                dense = dense or figures
                result["runs"].append({"seed": seed, "method": method,
                                       "setting": value, **figures,
                                       "ratios": _ratios(dense, figures)})
                result["summary"] = summarize(result["runs"])
                _write(result, json_path)
                print(f"seed {seed}, {_label(method, value)}: top-1 "
                      f"{figures['accuracy']:.4f}, " + ", ".join(
                          f"{k} {v:.3f}" for k, v in
                          result["runs"][-1]["ratios"].items()), flush=True)
    result["goals"] = goals(result["summary"])
    _write(result, json_path)
    return result


def _fresh_state() -> None:
    """Frees the previous runs' models and traced functions before a run,
    so that collecting them does not land inside the next run's training.
    Measured once (four identical 2-epoch dense runs in a row): 29.5 / 47.9
    / 27.0 / 23.9 s without it, 25.4 / 25.0 / 28.5 / 25.9 s with it; the
    machine's own drift over an hour is larger still (BENCHMARKS.md)."""
    keras.backend.clear_session()
    gc.collect()


def _setting(base: common.Config, method: str, value: float | None,
             paper_interval: int | None, architecture: str) -> common.Config:
    # A --target_epoch or --undo_slower given on the command line is
    # PruneTrain's.
    dense = dataclasses.replace(base, prunetrain=False, target_epoch=None,
                                undo_slower=False)
    if method == "dense":
        return dense
    if method == "thin":
        return dataclasses.replace(dense, width_multiplier=base.width_multiplier
                                   * value)
    if method in ("prunetrain", "prunetrain_time", "prunetrain_undo"):
        return dataclasses.replace(
            base, prunetrain=True, flops_target=value,
            rank="time" if method == "prunetrain_time" else "flops",
            undo_slower=base.undo_slower or method == "prunetrain_undo")
    if method == "scratch":
        return dataclasses.replace(dense, width_multiplier=1.0,
                                   architecture=architecture)
    return paper_setting(base, paper_interval)


def _label(method: str, value: float | None) -> str:
    return method if value is None else f"{method} {value:g}"


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting, in run order: mean ± std over seeds of top-1 and of each
    ratio to dense, and whether the setting is on the Pareto front of mean
    top-1 vs mean wall-time ratio."""
    keys = list(dict.fromkeys((r["method"], r["setting"]) for r in runs))
    rows = []
    for method, value in keys:
        mine = [r for r in runs if (r["method"], r["setting"]) == (method,
                                                                    value)]
        rows.append({"method": method, "setting": value,
                     "label": _label(method, value), "seeds": len(mine),
                     "top1": _mean_std([r["accuracy"] for r in mine]),
                     **{k: _mean_std([r["ratios"][k] for r in mine])
                        for k in mine[0]["ratios"]}})
    front = pareto([(r["wall_time"]["mean"], r["top1"]["mean"])
                    for r in rows])
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    return rows


def pareto(points: Sequence[tuple[float, float]]) -> set[int]:
    """Indices of the `(cost, accuracy)` points that no other point beats:
    none has a cost as low and an accuracy as high, one of them strictly.

    >>> sorted(pareto([(1.0, 0.9), (0.5, 0.8), (0.6, 0.7), (0.5, 0.8)]))
    [0, 1, 3]
    """
    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and a != b
    return {i for i, p in enumerate(points)
            if not any(beats(q, p) for q in points)}


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goals of BENCHMARKS.md, each reached or not, with the figures
    that decide it (setting means)."""
    pruned = [r for r in summary if r["method"] == "prunetrain"]
    thin = [r for r in summary if r["method"] == "thin"]
    if not pruned:
        return []

    def wall(row: dict[str, Any]) -> float:
        return row["wall_time"]["mean"]

    def top1(row: dict[str, Any]) -> float:
        return row["top1"]["mean"]

    beaten = [f"{t['label']} beats {p['label']}" for p in pruned for t in thin
              if wall(t) < wall(p) and top1(t) > top1(p)]
    out = [{"goal": "no thin dense setting is both faster and more accurate "
            "than a PruneTrain setting", "reached": not beaten,
            "detail": "; ".join(beaten) or "none is"}]
    quarter = next((t for t in thin if t["setting"] == 0.25), None)
    if quarter is not None:
        fast = [p for p in pruned if wall(p) <= wall(quarter)]
        best = max(fast, key=top1, default=None)
        gain = 100 * (top1(best) - top1(quarter)) if best else None
        out.append({
            "goal": "at thin 0.25's training time, >= 2 points more accurate",
            "reached": gain is not None and gain >= 2,
            "detail": f"{best['label']}: {gain:+.2f} points at wall "
                      f"{wall(best):.3f}x vs {wall(quarter):.3f}x" if best
            else f"no PruneTrain setting is as fast (fastest: wall "
                 f"{min(map(wall, pruned)):.3f}x vs {wall(quarter):.3f}x)"})
    fast = [p for p in pruned if wall(p) <= 0.6]
    best = max(fast, key=top1, default=None)
    out.append({
        "goal": "at 0.6x dense wall time, within 0.5 point of dense",
        "reached": best is not None
        and best["top1_points"]["mean"] >= -0.5,
        "detail": f"{best['label']}: {best['top1_points']['mean']:+.2f} "
                  f"points at wall {wall(best):.3f}x" if best
        else f"no PruneTrain setting is that fast (fastest: wall "
             f"{min(map(wall, pruned)):.3f}x)"})
    return out


def comparison_table(result: dict[str, Any]) -> str:
    """Mean ± std over seeds, one row per setting; * marks the Pareto front
    of top-1 vs wall time."""
    header = ("setting", "seeds", "top-1", "vs dense", "wall time",
              "training FLOPs", "final FLOPs", "parameters", "front")

    def cell(row: dict[str, Any], key: str, scale: float = 1.0,
             digits: int = 3, unit: str = "x") -> str:
        return (f"{scale * row[key]['mean']:.{digits}f} ± "
                f"{scale * row[key]['std']:.{digits}f}{unit}")

    rows = [(r["label"], str(r["seeds"]), cell(r, "top1", digits=4, unit=""),
             cell(r, "top1_points", digits=2, unit=" pt"),
             cell(r, "wall_time"), cell(r, "train_flops"),
             cell(r, "final_flops"), cell(r, "params"),
             "*" if r["pareto"] else "") for r in result["summary"]]
    widths = [max(len(row[i]) for row in [header, *rows])
              for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths))
             for row in [header, *rows]]
    for goal in result.get("goals", []):
        lines.append(f"{'reached' if goal['reached'] else 'NOT reached'}: "
                     f"{goal['goal']} ({goal['detail']})")
    return "\n".join(lines)


def comparison_markdown(result: dict[str, Any]) -> str:
    """The summary as a Markdown table (BENCHMARKS.md): mean ± std over
    seeds, median wall ratio in brackets, front settings in bold."""
    def cell(row: dict[str, Any], key: str, scale: float = 1.0,
             digits: int = 3) -> str:
        return (f"{scale * row[key]['mean']:.{digits}f} ± "
                f"{scale * row[key]['std']:.{digits}f}")

    lines = ["| setting | top-1 | vs dense (points) | training wall time "
             "(median) | training FLOPs | final FLOPs | parameters |",
             "|---|---|---|---|---|---|---|"]
    for row in result["summary"]:
        walls = [r["ratios"]["wall_time"] for r in result["runs"]
                 if (r["method"], r["setting"]) == (row["method"],
                                                    row["setting"])]
        label = f"**{row['label']}**" if row["pareto"] else row["label"]
        lines.append(
            f"| {label} | {cell(row, 'top1', digits=4)} | "
            f"{cell(row, 'top1_points', digits=2)} | "
            f"{cell(row, 'wall_time')}x ({statistics.median(walls):.3f}x) | "
            f"{cell(row, 'train_flops')}x | {cell(row, 'final_flops')}x | "
            f"{cell(row, 'params')}x |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Top-1 vs training wall time and vs training FLOPs (ratios to dense),
    one point per run, setting means with their Pareto front drawn."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colors = dict(zip(METHODS, ("black", "tab:blue", "tab:red", "tab:purple",
                                "tab:brown", "tab:orange", "tab:green"),
                      strict=True))
    for ax, key, name in ((axes[0], "wall_time", "training wall time"),
                          (axes[1], "train_flops", "training FLOPs")):
        for method in METHODS:
            runs = [r for r in result["runs"] if r["method"] == method]
            if runs:
                ax.scatter([r["ratios"][key] for r in runs],
                           [r["accuracy"] for r in runs], s=14, alpha=0.45,
                           color=colors[method], label=method)
        summary = result["summary"]
        means = [(r[key]["mean"], r["top1"]["mean"]) for r in summary]
        for row, (x, y) in zip(summary, means):
            ax.errorbar(x, y, xerr=row[key]["std"], yerr=row["top1"]["std"],
                        fmt="D", ms=5, color=colors[row["method"]],
                        capsize=2)
            ax.annotate(row["label"], (x, y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = sorted(means[i] for i in pareto(means))
        ax.step([p[0] for p in front], [p[1] for p in front], where="post",
                color="gray", linestyle="--", label="Pareto front (means)")
        ax.set_xlabel(f"{name} / dense (same seed)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (test set)")
    axes[0].legend(fontsize=8, loc="lower right")
    config = result["config"]
    figure.suptitle(f"{config['model']} on {config['data']}, "
                    f"{config['epochs']} epochs, seeds {result['seeds']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _write(result: dict[str, Any], path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1,
                      default=lambda v: np.asarray(v).tolist())


def table(result: dict[str, Any]) -> str:
    d, p, r = result["dense"], result["prunetrain"], result["ratios"]
    o = result["group_lasso_overhead"]
    rows = [
        ("training wall time", f"{d['train_seconds']:.1f} s",
         f"{p['train_seconds']:.1f} s", f"{r['wall_time']:.3f}x"),
        ("training FLOPs spent", f"{d['train_flops_spent']:.3e}",
         f"{p['train_flops_spent']:.3e}", f"{r['train_flops']:.3f}x"),
        ("wall / FLOPs ratio", "", "", f"{r['wall_over_flops']:.3f}"),
        ("inference FLOPs/example", f"{d['inference_flops']:,}",
         f"{p['inference_flops']:,}", f"{r['inference_flops']:.3f}x"),
        ("parameters", f"{d['params']:,}", f"{p['params']:,}",
         f"{r['params']:.3f}x"),
        ("gradient bytes/step", f"{d['gradient_bytes']:,}",
         f"{p['gradient_bytes']:,}", f"{r['gradient_bytes']:.3f}x"),
        ("memory traffic/step (final)", f"{d['memory_traffic_bytes']:.3e}",
         f"{p['memory_traffic_bytes']:.3e}", f"{r['memory_traffic']:.3f}x"),
        ("top-1 (held out)", f"{d['accuracy']:.4f}", f"{p['accuracy']:.4f}",
         f"{r['top1_points']:+.2f} points"),
        ("in reconfigurations", "",
         f"{p['reconfiguration_seconds']:.2f} s + "
         f"{p['retrace_seconds']:.2f} s re-trace",
         f"{100 * r['reconfiguration_share']:.2f}% of training"),
        ("group-lasso step", f"{1e3 * o['step_without']:.1f} ms",
         f"{1e3 * o['step_with']:.1f} ms", f"{o['ratio']:.3f}x"),
    ]
    header = ("", "dense", "PruneTrain", "PruneTrain / dense")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in [header, *rows])


def _apply_workload(name: str) -> None:
    """The workload's value for every recipe flag not on the command line."""
    workload = WORKLOADS[name]
    for field in dataclasses.fields(common.Config):
        flag = flags.FLAGS[field.name]
        if not flag.present:
            value = getattr(workload, field.name)
            flag.value = [str(v) for v in value] \
                if field.name == "lr_decay_epochs" else value


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _apply_workload(_WORKLOAD.value)
    config = common.config_from_flags()
    targets = [float(t) for t in _TARGETS.value]
    if _MODE.value == "pair":
        if len(targets) > 1:
            raise app.UsageError("--mode=pair takes at most one --targets "
                                 f"value, got {targets}.")
        config = dataclasses.replace(
            config, flops_target=targets[0] if targets else config.flops_target)
        result = compare(config, _ROUNDS.value, _STEPS.value)
        print(table(result))
        _write(result, _JSON.value)
        return
    if not targets:
        raise app.UsageError("--targets: give at least one flops_target.")
    result = comparison(config, [float(w) for w in _WIDTHS.value], targets,
                        [int(s) for s in _SEEDS.value], _SCRATCH.value,
                        _PAPER_INTERVAL.value if _PAPER.value else None,
                        _JSON.value, _TIME_RANK.value, _UNDO.value)
    print(comparison_table(result))
    print(comparison_markdown(result))
    if _PNG.value:
        plot(result, _PNG.value)
        print(f"plot: {_PNG.value}")


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(main)
