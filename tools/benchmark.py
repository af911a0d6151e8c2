r"""PruneTrain vs dense, side by side in one process.

The default: the FLOPs-budget mode over seeds. For every seed it trains the
CIFAR recipe dense (`--noprunetrain`) and with `Reconfigure(flops_target=t)`
for every `t` in `--targets`, same data, seed, epochs and schedule, and
reports per target the mean ± std over seeds of the final inference-FLOPs
ratio, the training-FLOPs ratio, the training wall-time ratio (each run
against the same seed's dense run), the top-1 difference in points and the
share of training time spent in reconfigurations and re-traces. Figures
are written to `--json` after every run, so a long sweep keeps what it
measured. Ratios are the headline; absolute times are context only (a noisy
2-core machine).

    python tools/benchmark.py --json=bench.json               # MNIST-5k, ResNet-20, 3 seeds
    python tools/benchmark.py --targets=0.5 --seeds=0         # one pair
    python tools/benchmark.py --targets= --noproximal --noscales --strength=-1 \
        --interval=2                                          # one pair, the paper's mode

With `--targets=` (empty) it runs one dense/PruneTrain pair with the recipe
flags as given and adds the group-lasso step overhead (the initial model's
median train-step time with its GroupLasso regularizers vs without, same
widths, alternating rounds). Every recipe flag (`recipes/common.py`) is
accepted; `--prunetrain` and `--seed` are set by the tool. See
BENCHMARKS.md for the latest figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "recipes"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import common  # noqa: E402  (recipes/common.py)
import tf_prunetrain  # noqa: E402

# The default workload (BENCHMARKS.md): ResNet-20 on MNIST-5k, 20 epochs,
# the proximal lasso on kernels and BatchNorm scales at λ = 0.02 until the
# FLOPs target is met, widths multiples of 8 (faster on this CPU than
# arbitrary counts at the same FLOPs: BENCHMARKS.md). The paper's settings (λ calibrated from a 0.2 penalty
# ratio, lasso on throughout, every 2 epochs): --targets= --noproximal
# --noscales --strength=-1 --interval=2.
DEFAULTS = common.Config(model="resnet20", epochs=20, batch_size=128,
                         lr_decay_epochs=(10, 15), proximal=True, scales=True,
                         strength=0.02, round_to=8, verbose=0)
_JSON = flags.DEFINE_string("json", None, "Also write the figures here "
                            "(after every run).")
_TARGETS = flags.DEFINE_list("targets", ["0.25", "0.5", "0.75"],
                             "flops_target values to sweep; empty: one "
                             "dense/PruneTrain pair with the flags as given.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the sweep.")
_TARGET_EPOCHS = flags.DEFINE_list(
    "target_epochs", [], "Sweep these --target_epoch values too (each with "
    "every target); empty: --target_epoch as given.")
_ROUNDS = flags.DEFINE_integer("overhead_rounds", 8, "Alternating rounds of "
                               "the group-lasso overhead measurement.")
_STEPS = flags.DEFINE_integer("overhead_steps", 5, "Timed steps per round.")


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


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in (
        "accuracy", "params", "initial_params", "inference_flops",
        "initial_inference_flops", "train_flops_spent", "train_flops_dense",
        "gradient_bytes", "initial_gradient_bytes", "memory_traffic_bytes",
        "initial_memory_traffic_bytes", "reconfiguration_seconds",
        "retrace_seconds", "train_seconds", "seconds")}


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


def _ratios(dense: dict[str, Any], pruned: dict[str, Any]) -> dict[str, float]:
    """One PruneTrain run against the same seed's dense run."""
    return {
        "final_flops": pruned["inference_flops"] / dense["inference_flops"],
        "train_flops": pruned["train_flops_spent"] / dense["train_flops_spent"],
        "wall_time": pruned["train_seconds"] / dense["train_seconds"],
        "top1_points": 100 * (pruned["accuracy"] - dense["accuracy"]),
        "reconfiguration_share": (pruned["reconfiguration_seconds"]
                                  + pruned["retrace_seconds"])
        / pruned["train_seconds"],
    }


def sweep(config: common.Config, targets: list[float], seeds: list[int],
          json_path: str | None = None,
          target_epochs: list[int | None] = (None,)) -> dict[str, Any]:
    """Dense and `flops_target=t` for every t (and every target epoch in
    `target_epochs`; None: `config.target_epoch`), for every seed; the runs
    and, per setting, mean and std over seeds of `_ratios`. Written to
    `json_path` (if given) after every run."""
    settings = [(t, e) for e in target_epochs for t in targets]
    result: dict[str, Any] = {"config": dataclasses.asdict(config),
                              "targets": targets, "seeds": seeds, "runs": []}
    for seed in seeds:
        base = dataclasses.replace(config, seed=seed)
        dense = _figures(common.run(dataclasses.replace(base,
                                                        prunetrain=False)))
        result["runs"].append({"seed": seed, "target": None, **dense})
        _write(result, json_path)
        for target, epoch in settings:
            epoch = epoch or config.target_epoch
            pruned = _figures(common.run(dataclasses.replace(
                base, prunetrain=True, flops_target=target,
                target_epoch=epoch)))
            label = target if len(target_epochs) == 1 else f"{target}@{epoch}"
            result["runs"].append({"seed": seed, "target": label, **pruned,
                                   "target_epoch": common.target_epoch(
                                       dataclasses.replace(
                                           config, flops_target=target,
                                           target_epoch=epoch)),
                                   "ratios": _ratios(dense, pruned)})
            result["summary"] = _summary(result["runs"], [
                t if len(target_epochs) == 1 else f"{t}@{e or config.target_epoch}"
                for t, e in settings])
            _write(result, json_path)
            print(f"seed {seed}, target {label}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in result["runs"][-1]["ratios"].items()),
                flush=True)
    return result


def _summary(runs: list[dict[str, Any]], targets: list[Any]
             ) -> dict[str, dict[str, Any]]:
    summary = {}
    for target in targets:
        rows = [r["ratios"] for r in runs if r["target"] == target]
        if not rows:
            continue
        dense = [r["accuracy"] for r in runs if r["target"] is None]
        mine = [r["accuracy"] for r in runs if r["target"] == target]
        summary[str(target)] = {
            "seeds": len(rows),
            **{key: {"mean": float(np.mean([r[key] for r in rows])),
                     "std": float(np.std([r[key] for r in rows], ddof=1))
                     if len(rows) > 1 else 0.0}
               for key in rows[0]},
            "top1": {"mean": float(np.mean(mine)),
                     "std": float(np.std(mine, ddof=1)) if len(mine) > 1
                     else 0.0},
            "dense_top1": {"mean": float(np.mean(dense)),
                           "std": float(np.std(dense, ddof=1))
                           if len(dense) > 1 else 0.0},
        }
    return summary


def sweep_table(result: dict[str, Any]) -> str:
    """Mean ± std over seeds, one row per target."""
    header = ("flops_target", "seeds", "final FLOPs", "training FLOPs",
              "wall time", "top-1 (dense)", "top-1 delta", "reconf. share")
    rows = []
    for target, s in result.get("summary", {}).items():
        def cell(key: str, scale: float = 1.0, digits: int = 3) -> str:
            return (f"{scale * s[key]['mean']:.{digits}f} ± "
                    f"{scale * s[key]['std']:.{digits}f}")
        rows.append((target, str(s["seeds"]), cell("final_flops") + "x",
                     cell("train_flops") + "x", cell("wall_time") + "x",
                     f"{cell('top1', digits=4)} ({cell('dense_top1', digits=4)})",
                     cell("top1_points", digits=2) + " pt",
                     cell("reconfiguration_share", 100, 2) + "%"))
    widths = [max(len(row[i]) for row in [header, *rows])
              for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                     for row in [header, *rows])


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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = common.config_from_flags()
    targets = [float(t) for t in _TARGETS.value]
    if targets:
        epochs = [int(e) for e in _TARGET_EPOCHS.value] or [None]
        result = sweep(config, targets, [int(s) for s in _SEEDS.value],
                       _JSON.value, epochs)
        print(sweep_table(result))
        return
    result = compare(config, _ROUNDS.value, _STEPS.value)
    print(table(result))
    _write(result, _JSON.value)


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(main)
