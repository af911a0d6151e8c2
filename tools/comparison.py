"""PruneTrain against what a user would do instead: the methods, the
workloads and the sweep of `tools.benchmark` (its command line).

On one workload, for every seed, the same data, epochs and schedule:

* `dense`: the full network, no group lasso;
* `thin`: uniformly thinner dense networks, for every width multiplier
  (the simplest alternative: a smaller model trained from scratch);
* `prunetrain`: `Reconfigure(FlopsBudget(t))` for every target t, the
  library's default cut (thin widths, gentle) with the workload's lasso;
* `scratch`: each PruneTrain run's final architecture trained dense from
  fresh weights (is pruning while training worth it?);
* `prunetrain_<lever>` and `scratch_<lever>`: another cut (`LEVERS`;
  `prunetrain_norm_per_flop` is 0.2's cut);
* `paper`: the paper's setting (λ calibrated from a 0.2 penalty ratio, the
  lasso as a loss term on kernels, a reconfiguration every few epochs,
  arbitrary widths).

Every run records its architecture timeline and one-off seconds; the
sweep's file is its state (`tools.sweep.Sweep`, `tools.results`), and the
runs are priced by replays (`tools.retime`). `compare` is the pair mode:
one dense/PruneTrain pair and the group-lasso step overhead.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable, Sequence

import tf_prunetrain
from recipes import common
from tf_prunetrain import latency
from tools import oneoffs
from tools import replay
from tools import results as results_lib
from tools import retime
from tools import runs
from tools import summary
from tools import sweep

# PruneTrain's tuned settings in both workloads: the proximal lasso on
# kernels and BatchNorm scales at λ = 0.02 until the FLOPs target is met,
# widths in multiples of 8 (the recipes' and the library's --round_to).
# The cut is the recipes' default, the library's (`FlopsBudget`: thin
# widths, gentle): the method `prunetrain`; `LEVERS` are the other cuts.
_TUNED = dict(model="resnet20", batch_size=128, proximal=True, scales=True,
              strength=0.02, validate=False, verbose=0)
# ResNet-20, not -32: on 2 cores a sweep must fit in a few sittings, and
# ResNet-20's thin 0.25 already trails dense by several points on
# Fashion-MNIST, so width matters at this size.
WORKLOADS = {
    "fashion_mnist": common.Config(data="fashion_mnist", train_size=10_000,
                                   epochs=8, lr_decay_epochs=(4, 6),
                                   **_TUNED),
    "mnist5k": common.Config(data="mnist5k", epochs=20,
                             lr_decay_epochs=(10, 15), **_TUNED),
    # Issue 31's second workload, a network nobody here wrote
    # (keras.applications; --width_multiplier is its alpha). Dense, seed 0:
    # at learning rate 0.1 its training accuracy swung between 0.46 and
    # 0.75 over 8 epochs (test 0.758); at 0.02 it reached 0.88 (test
    # 0.827). 0.2's cut (`prunetrain_norm_per_flop`) collapsed at λ 0.1
    # (0.246-0.388 top-1, seed 0). λ chosen on seed 0 at target 0.25
    # (top-1 with the default cut): 0 → 0.834, 0.005 → 0.835, 0.02 →
    # 0.800, 0.1 → 0.485 (BENCHMARKS.md, "Issue 31, second workload").
    "fashion_mnist_mobilenetv2": common.Config(
        data="fashion_mnist", train_size=10_000, image_size=32, epochs=8,
        lr_decay_epochs=(4, 6), learning_rate=0.02,
        **{**_TUNED, "model": "mobilenetv2", "strength": 0.005}),
    # Issue 38's third workload: VGG-11 (BatchNorm, 64 -> 512 channels, the
    # network slimming found late layers most prunable in), Fashion-MNIST
    # resized to 32x32 (five poolings). Thin 0.5 has about 0.25 of its FLOPs.
    "fashion_mnist_vgg11": common.Config(
        data="fashion_mnist", train_size=10_000, image_size=32, epochs=8,
        lr_decay_epochs=(4, 6), **{**_TUNED, "model": "vgg11"}),
}
# Per workload: the thin widths and PruneTrain targets when --widths and
# --targets are not given. MobileNetV2's alphas 0.25/0.4/0.6 have 0.119/
# 0.261/0.495 of its FLOPs at 32x32 (a thin of about equal FLOPs per
# target).
SWEEP_DEFAULTS = {
    "fashion_mnist_mobilenetv2": {"widths": ["0.25", "0.4", "0.6", "0.75"],
                                  "targets": ["0.125", "0.25", "0.5"]},
    "fashion_mnist_vgg11": {"widths": ["0.5"], "targets": ["0.25"]}}
DEFAULTS = WORKLOADS["fashion_mnist"]
# The levers (issues 31, 41): recipe flags a `prunetrain_<lever>` method
# sets over the workload's (its `scratch_<lever>` control trains that
# run's final architecture). Each sets its whole cut: "gentle" in a name
# says what it cuts fades to zero over the epoch before; otherwise the cut
# is abrupt.
LEVERS: dict[str, dict[str, Any]] = {
    # 0.2's cut: what the comparisons before issue 41 ran as `prunetrain`.
    "norm_per_flop": {"ranking": "norm_per_flop", "gentle": False},
    "thin_widths": {"ranking": "thin_widths", "gentle": False},
    # The default cut without the group lasso: with thin widths, the norms
    # only choose which channels fade; is the penalty worth its shrinkage?
    "thin_gentle_no_lasso": {"ranking": "thin_widths", "gentle": True,
                             "strength": 0.0},
    # When to cut, from the data: one cut when the mask settles.
    "eb_gentle": {"ranking": "thin_widths", "gentle": True,
                  "early_bird": True},
    # The same with the learning rate lifted after the cut.
    "eb_gentle_rewarm": {"ranking": "thin_widths", "gentle": True,
                         "early_bird": True, "rewarm_epochs": 1.0},
    # Issue 38, each with one cut (after epoch 2, faded over it: a teacher
    # or a search needs a trained model, and the default's first cut fades
    # from the fresh one): its control (`one_cut`), widths scored by
    # measured loss with the thin ones among them (`searched`; its scratch:
    # the architecture goal), the model before the cut teaching across it
    # (`distill`: the path goal), both.
    "one_cut": {"ranking": "thin_widths", "gentle": True, "interval": 2},
    "searched": {"ranking": "searched", "gentle": True, "interval": 2},
    "distill": {"ranking": "thin_widths", "gentle": True, "interval": 2,
                "distill_epochs": 2},
    "searched_distill": {"ranking": "searched", "gentle": True,
                         "interval": 2, "distill_epochs": 2}}
# Recipe flags that do not change what a run computes.
_NEUTRAL = ("seed", "verbose", "log_dir", "export_dir")

Setting = tuple[str, "float | None"]


def paper_setting(config: common.Config, interval: int) -> common.Config:
    """The paper's PruneTrain on `config`'s workload: λ from a 0.2 penalty
    ratio, the lasso as a loss term on kernels only, dead channels removed
    every `interval` epochs, arbitrary widths."""
    return dataclasses.replace(config, prunetrain=True, flops_target=None,
                               target_epoch=None, proximal=False,
                               scales=False, strength=None, penalty_ratio=0.2,
                               round_to=1, interval=interval)


def settings(widths: Sequence[float], targets: Sequence[float],
             scratch: bool = True, paper: bool = False,
             levers: Sequence[str] = ()) -> list[Setting]:
    """The (method, setting) pairs of a comparison, in report order; each
    lever adds `prunetrain_<lever>` (and `scratch_<lever>`) per target.

    >>> settings([0.5], [0.25], paper=True)
    [('dense', None), ('thin', 0.5), ('prunetrain', 0.25), ('scratch', 0.25), ('paper', None)]
    >>> settings([], [0.5], levers=["norm_per_flop"])[1:]
    [('prunetrain', 0.5), ('scratch', 0.5), ('prunetrain_norm_per_flop', 0.5), ('scratch_norm_per_flop', 0.5)]
    """
    out: list[Setting] = [("dense", None)]
    out += [("thin", w) for w in widths]
    for target in targets:
        for suffix in ["", *(f"_{lever}" for lever in levers)]:
            out += [(f"prunetrain{suffix}", target)] \
                + [(f"scratch{suffix}", target)] * scratch
    return out + [("paper", None)] * paper


def setting_config(base: common.Config, method: str, value: float | None,
                   paper_interval: int) -> common.Config:
    """The recipe config of one method and setting on the workload `base`.

    >>> base = dataclasses.replace(DEFAULTS, data="synthetic")
    >>> pruned = setting_config(base, "prunetrain_norm_per_flop", 0.5, 2)
    >>> pruned.prunetrain, pruned.flops_target, pruned.ranking, pruned.gentle
    (True, 0.5, 'norm_per_flop', False)
    >>> thin = setting_config(base, "thin", 0.5, 2)
    >>> thin.prunetrain, thin.width_multiplier
    (False, 0.5)
    """
    # A --target_epoch given on the command line is PruneTrain's.
    dense = dataclasses.replace(base, prunetrain=False, target_epoch=None)
    if method == "dense":
        return dense
    if method == "thin":
        return dataclasses.replace(dense, width_multiplier=base.width_multiplier
                                   * value)
    if method.startswith("prunetrain"):
        lever = LEVERS[method[len("prunetrain_"):]] if "_" in method else {}
        return dataclasses.replace(base, prunetrain=True, flops_target=value,
                                   **lever)
    if method.startswith("scratch"):
        return dataclasses.replace(dense, width_multiplier=1.0)
    return paper_setting(base, paper_interval)


def run_record(config: common.Config, method: str, value: float | None,
               paper_interval: int, architecture: str | None
               ) -> dict[str, Any]:
    """One run of a comparison (`runs.train`; `architecture`: the JSON a
    scratch run trains)."""
    return {"seed": config.seed, "method": method, "setting": value,
            **runs.train(setting_config(config, method, value,
                                        paper_interval), architecture)}


def read_results(path: str) -> dict[str, Any]:
    """A comparison's results file, with today's method names
    (`results.upgrade_names`); refused without architecture timelines."""
    return _readable(results_lib.read(path), path)


def _readable(result: dict[str, Any], path: str) -> dict[str, Any]:
    if "architectures" not in result:
        raise ValueError(f"{path} holds no architecture timelines (it was "
                         "written before sweeps could be replayed or "
                         "resumed): give another file.")
    result = results_lib.upgrade_names(result)
    _mark_fades(result)
    return result


def _mark_fades(result: dict[str, Any]) -> None:
    """Marks the fades of gentle runs written before timelines marked
    them (issue 40): the epoch before each cut (`oneoffs.mark_fades`).
    Levers no longer in `LEVERS` (issue 31's uniform rankings) did not
    fade."""
    config = retime.config_of(result)
    for run in result["runs"]:
        lever = run["method"].partition("_")[2]
        if "timeline" not in run or any(
                "fade" in s for s in run["timeline"]) or (
                run["method"].startswith("prunetrain_")
                and lever not in LEVERS):
            continue
        setting = setting_config(config, run["method"], run["setting"],
                                 result.get("paper_interval") or 1)
        if setting.gentle and setting.flops_target is not None:
            oneoffs.mark_fades(run, sum(s["steps"] for s in run["timeline"])
                               // config.epochs)


def load_state(path: str | None, config: common.Config, paper_interval: int,
               run_threads: int) -> dict[str, Any]:
    """The sweep so far: `path`'s results when it exists (`read_results`;
    refused when its recipe flags, `--paper_interval` or `--run_threads`
    differ), else an empty one."""
    state = {"names": results_lib.NAMES,
             "config": results_lib.config_dict(config),
             "paper_interval": paper_interval, "run_threads": run_threads,
             "seeds": [], "runs": [], "architectures": {},
             "sweep_seconds": 0.0}
    # A flag added since the file was written ran at its default there.
    defaults = results_lib.config_dict(common.Config())

    def flags(result: dict[str, Any]) -> dict[str, Any]:
        there = result.get("config", {})
        return {**{name: there.get(name, defaults[name])
                   for name in state["config"] if name not in _NEUTRAL},
                "paper_interval": result.get("paper_interval"),
                "run_threads": result.get("run_threads")}

    return results_lib.resume(path, state, flags, _readable)


def refresh(result: dict[str, Any]) -> None:
    """Recomputes the results' derived figures: ratios, summary (with the
    spread of single replays), goals."""
    summary.annotate(result)
    result["summary"] = summary.summarize(result)
    spread = summary.replay_spread(result) if result.get("replay") else {}
    for row in result["summary"]:
        if row["label"] in spread:
            row["replayed_spread"] = spread[row["label"]]
    result["goals"] = summary.goals(result["summary"],
                                    summary.time_key(result))


def _order(plan: Sequence[Setting]) -> Callable[[dict[str, Any]], tuple]:
    """Runs by seed, then in the plan's order (others after, by name)."""
    def key(run: dict[str, Any]) -> tuple:
        setting = (run["method"], run["setting"])
        return (run["seed"], plan.index(setting) if setting in plan
                else len(plan), run["method"], run["setting"] or 0.0)
    return key


def _finals(result: dict[str, Any]) -> dict[tuple, str]:
    """(seed, lever suffix, target): the final model JSON of that PruneTrain
    run, which its scratch control trains."""
    return {(r["seed"], r["method"][len("prunetrain"):], r["setting"]):
            r["final_model"] for r in result["runs"]
            if r["method"].startswith("prunetrain")}


def comparison(config: common.Config, widths: Sequence[float],
               targets: Sequence[float], seeds: Sequence[int],
               scratch: bool = True, paper_interval: int | None = None,
               json_path: str | None = None, jobs: int = 1,
               run_threads: int = 1,
               replays: int = 3, replay_rounds: int = 5,
               replay_steps: int = 6, replay_warmup: int = 2,
               levers: Sequence[str] = ()) -> dict[str, Any]:
    """Every method of the module docstring for every seed (`paper_interval`
    None: no paper run), `jobs` runs at a time in worker processes of
    `run_threads` TensorFlow threads (`tools.sweep`), resumed from
    `json_path` and written there after every run; then `replays` replays,
    each in a fresh process (`replay_rounds` 0: none), the summary, the
    paired verdicts and the goals."""
    result = load_state(json_path, config, paper_interval or 0, run_threads)
    plan = settings(widths, targets, scratch, paper_interval is not None,
                    levers)
    result["seeds"] = sorted(set(result["seeds"]) | set(seeds))
    state = sweep.Sweep(result, json_path, _order(plan), refresh)
    tasks = state.to_go(
        [(seed, *s) for seed in seeds for s in plan],
        {(r["seed"], r["method"], r["setting"]) for r in result["runs"]},
        jobs)
    finals = _finals(result)

    def prepare(task: tuple) -> tuple | None:
        seed, method, value = task
        architecture = None
        if method.startswith("scratch"):
            architecture = finals.get((seed, method[len("scratch"):], value))
            if architecture is None:
                return None  # its PruneTrain run is not done yet
        return (dataclasses.replace(config, seed=seed), method, value,
                paper_interval or 0, architecture)

    def done(task: tuple, record: dict[str, Any]) -> None:
        record["final_architecture"] = record["timeline"][-1]["architecture"]
        if record["method"].startswith("prunetrain"):
            # Its own JSON (its seed's initializers) for its scratch run;
            # the shared table keeps one JSON per architecture, for replays.
            record["final_model"] = sweep.final_model(
                record, record["architectures"])
            finals[(record["seed"], record["method"][len("prunetrain"):],
                    record["setting"])] = record["final_model"]
        state.add(record)
        print(f"seed {record['seed']}, "
              f"{summary.label(record['method'], record['setting'])}: top-1 "
              f"{record['accuracy']:.4f}, wall {record['train_seconds']:.0f}"
              f" s, steps " + "+".join(str(s["steps"])
                                       for s in record["timeline"]),
              flush=True)

    sweep.run_tasks(tasks, prepare, run_record, done, jobs, run_threads)
    if replay_rounds > 0 and result["runs"] and "replay" not in result:
        retime.replay_many(result, replays, replay_rounds, replay_steps,
                           replay_warmup, replay_agreement)
    state.save()
    return result


def replay_file(path: str, out: str | None, replays: int, rounds: int,
                steps: int, warmup: int) -> dict[str, Any]:
    """Replays the runs of the results file `path` (no training) `replays`
    more times and writes the result to `out` (default: `path`): the new
    replays join the file's earlier ones, and the runs are priced on all of
    them combined."""
    result = read_results(path)
    retime.replay_many(result, replays, rounds, steps, warmup,
                       replay_agreement)
    refresh(result)
    results_lib.write(result, out or path)
    return result


def replay_agreement(result: dict[str, Any], one: dict[str, Any],
                     other: dict[str, Any]) -> dict[str, float]:
    """Per setting: the mean replayed time ratio when priced by the replay
    `one` over the same when priced by `other`, minus 1."""
    mine, theirs = summary.priced(result, one), summary.priced(result, other)
    return {name: mine[name] / theirs[name] - 1 for name in mine
            if name != "dense"}


# -- the pair mode -------------------------------------------------------------
def group_lasso_overhead(config: common.Config, rounds: int,
                         steps: int) -> dict[str, float]:
    """Median train-step seconds of the initial model with and without its
    GroupLasso regularizers (same widths, same batch), in alternating
    rounds (`latency.round_robin`); with `config.proximal` the
    regularizers' cost is their proximal step."""
    data = common.load_data(config)
    x, y = next(iter(data.train(config.batch_size, True, 0, None)[0]))
    models = {}
    for name, lasso in (("with", True), ("without", False)):
        model = common.build_model(config, data.shape, data.num_classes)
        if lasso:
            model = tf_prunetrain.add_group_lasso(
                model, strength=1e-4, proximal=config.proximal)
        replay.compile_sgd(model, 0.01)
        tf_prunetrain.regularizers.attach_proximal_step(model)
        model.train_on_batch(x, y)  # trace
        models[name] = model
    times = latency.round_robin(
        {name: (lambda m=model: replay.batch_seconds(m, x, y, steps))
         for name, model in models.items()}, rounds)
    with_, without = (statistics.median(times[k]) for k in ("with", "without"))
    return {"step_with": with_, "step_without": without,
            "ratio": with_ / without}


def compare(config: common.Config, rounds: int, steps: int) -> dict[str, Any]:
    """Runs dense and PruneTrain with `config`; returns both and the ratios."""
    dense = common.run(dataclasses.replace(config, prunetrain=False))
    pruned = common.run(dataclasses.replace(config, prunetrain=True))
    overhead = group_lasso_overhead(config, rounds, steps)
    d, p = runs.figures(dense), runs.figures(pruned)
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


def table(result: dict[str, Any]) -> str:
    """The pair's figures side by side, as aligned text."""
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
