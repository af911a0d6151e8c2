r"""Prune what is already trained (issue 37): PruneTrain while fine-tuning a
trained model, against what a user would do instead, on a replayed clock.

Two regimes (`--regime`), each starting from a **source model** trained
once by the recipe and cached in `--sources` (trained here on first use,
one worker, `--run_threads` threads; its time is reported apart, as
sunk — a downloaded checkpoint's):

* `compress`: the source is the dense network trained on the workload
  (Fashion-MNIST 10k, 8 epochs, the issue-31 workload); it is then trained
  N more passes over the same 10,000 examples (`--grid`, N = 1, 2, 4, 8),
  each pass four epochs of a quarter pass (`--steps_per_epoch`), so that
  even N = 1 cuts inside its pass. Learning rate 0.01, × 0.1 after half
  and three quarters.
* `transfer`: the source is trained on Fashion-MNIST classes 5–9 (all
  30,000 images, 8 epochs); the target is classes 0–4 with `--grid`
  training images (100, 500, 2,000: picked by the seed) and all 5,000
  test images. The Keras guide's two phases: a new head trained 4 epochs with
  the backbone frozen, then 16 epochs of fine-tuning (learning rate 0.01,
  × 0.1 after epochs 8 and 12), which is what PruneTrain cuts.

Methods, per seed and grid value (`--targets` t for the pruned ones):

* `dense`: the source fine-tuned, unpruned (what is served without
  pruning);
* `prunetrain t`: `Reconfigure(FlopsBudget(t))` during that fine-tune (the
  library's default cut: thin widths, faded over the epoch before each
  cut; proximal group lasso on kernels and BatchNorm scales, λ 0.02);
* `prune_first t`: the source cut to t at once (the same widths, the same
  weight-norm ranking, abrupt) and then fine-tuned alike (the TFMOT /
  Torch-Pruning pipeline);
* `thin t`: the network of PruneTrain's final widths trained from
  scratch on the target data, for E epochs (`THIN_EPOCHS`): at equal
  epochs, and on a curve that gives its accuracy at PruneTrain's replayed
  time (interpolated per seed);
* `thin_source t` (transfer): the same thin network first trained on the
  source (cached; its extra source training is reported apart), then
  fine-tuned like `dense` (targets of at most `THIN_SOURCE_MAX` images);
* with `--frozen_batchnorm` (transfer): `dense_frozen_bn` and
  `prunetrain_frozen_bn t`, the same with every BatchNorm layer frozen in
  the fine-tune (the Keras guide's choice for small data).

Every run records its timeline, and the replay (`tools/replay.py`, via
`tools/benchmark.py`) prices each architecture's train step, frozen
phases included (a frozen backbone's step is its own replay item). The
report gives per setting mean top-1, replayed time as a ratio to the
source's training, and paired 95 % intervals over seeds
(`tools/verdicts.py`) against `dense`, `prune_first` and `thin` at equal
epochs and at equal time, and which settings are on the replayed Pareto
front of top-1 vs time. The `--json` file is the sweep's state: a rerun goes on from it.

    python tools/pretrained.py --regime=transfer --json=tools/results/transfer_resnet20.json --jobs=2
    python tools/pretrained.py --regime=compress --grid=1,2 --seeds=0 --json=/tmp/c.json  # quick
    python tools/pretrained.py --regime=compress --replay=c.json --json=c.json          # re-time
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "recipes"))

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import benchmark  # noqa: E402  (tools/benchmark.py: its sweep flags too)
import common  # noqa: E402  (recipes/common.py)
import replay as replay_lib  # noqa: E402  (tools/replay.py)
import summary  # noqa: E402  (tools/summary.py)
import sweep  # noqa: E402  (tools/sweep.py)
import verdicts  # noqa: E402  (tools/verdicts.py)

_REGIME = flags.DEFINE_enum("regime", "compress", ["compress", "transfer"],
                            "Which regime (module docstring).")
_NETWORK = flags.DEFINE_enum("network", "resnet20",
                             ["resnet20", "mobilenetv2"],
                             "The network (mobilenetv2: keras.applications, "
                             "alpha 1, images resized to 32x32).")
_GRID = flags.DEFINE_list("grid", None, "compress: fine-tune passes N "
                          "(default 1,2,4,8); transfer: target training "
                          "images (default 100,500,2000).")
_FROZEN_BATCHNORM = flags.DEFINE_boolean(
    "frozen_batchnorm", False, "Also run `dense` and `prunetrain` with "
    "BatchNorm frozen in the fine-tune (--freeze_batchnorm: the Keras "
    "guide's choice for small data), as `*_frozen_bn`.")
_SOURCES = flags.DEFINE_string(
    "sources", os.path.join(os.path.expanduser("~"), ".cache",
                            "tf_prunetrain", "sources"),
    "Where source models are cached. A source is trained when the --json "
    "file holds none (the same command retrains the same weights: one "
    "thread, one seed).")

# The steps of one quarter of a pass over 10,000 examples at batch 128.
QUARTER = math.ceil(math.ceil(10_000 / 128) / 4)
GRIDS = {"compress": [1, 2, 4, 8], "transfer": [100, 500, 2000]}
# Transfer: the source task and the target task (Fashion-MNIST classes).
# The target is the hard half (T-shirt, trouser, pullover, dress, coat:
# the tops are confused with each other) and the source holds shirts,
# the nearest of them; the other way round, the target (sandal, shirt,
# sneaker, bag, ankle boot) was too easy to need a source: with 500
# images a thin network from scratch matched the dense fine-tune
# (BENCHMARKS.md, "Issue 37").
SOURCE_CLASSES, TARGET_CLASSES = "5-9", "0-4"
# `thin_source` runs on targets of at most this many images (the larger
# the target, the less a source adds; and the 2-core budget).
THIN_SOURCE_MAX = 500
# Transfer: head epochs (backbone frozen), then fine-tune epochs.
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 4, 16
# The thin network from scratch, in passes (compress: N and the full
# source budget of 8) or epochs on the target (transfer: equal epochs to
# the two phases, then twice as many).
THIN_EPOCHS = {"compress": lambda grid: sorted(set(grid) | {8}),
               "transfer": lambda grid: [20, 40]}
# The proximal lasso on kernels and BatchNorm scales (the benchmark's).
_LASSO = dict(proximal=True, scales=True)
_STRENGTH = {"resnet20": 0.02, "mobilenetv2": 0.005}


def _network(name: str) -> dict[str, Any]:
    if name == "mobilenetv2":  # BENCHMARKS.md, "Issue 31, second workload"
        return dict(model="mobilenetv2", image_size=32)
    return dict(model="resnet20")


def source_config(regime: str, network: str) -> common.Config:
    """How a source model is trained: 8 epochs at the workload's rate (a
    thin source: the same, its JSON given to `benchmark.train`)."""
    rate = 0.02 if network == "mobilenetv2" else 0.1
    data = dict(train_size=10_000, subset_seed=0) if regime == "compress" \
        else dict(classes=SOURCE_CLASSES)
    return common.Config(data="fashion_mnist", epochs=8,
                         lr_decay_epochs=(4, 6), learning_rate=rate,
                         batch_size=128, prunetrain=False, validate=False,
                         verbose=0, seed=0, **_network(network), **data)


def fine_tune(regime: str, network: str, grid: int, source: str
              ) -> common.Config:
    """The dense fine-tune of `source` for grid value `grid`."""
    if regime == "compress":  # N passes of four quarter-pass epochs
        epochs = 4 * grid
        return dataclasses.replace(
            source_config(regime, network), pretrained=source,
            epochs=epochs, steps_per_epoch=QUARTER, learning_rate=0.01,
            lr_decay_epochs=(epochs // 2, 3 * epochs // 4))
    return dataclasses.replace(
        source_config(regime, network), classes=TARGET_CLASSES,
        train_size=grid,
        subset_seed=None, batch_size=64, pretrained=source, new_head=True,
        freeze_epochs=HEAD_EPOCHS, epochs=FINE_TUNE_EPOCHS,
        learning_rate=0.01, lr_decay_epochs=(8, 12))


def from_scratch(base: common.Config, regime: str, epochs: int
                 ) -> common.Config:
    """A network trained from fresh weights on `base`'s data (its JSON
    given to `benchmark.train`) for `epochs` whole passes, at the source's
    rate and step decay."""
    return dataclasses.replace(
        base, pretrained=None, new_head=False, freeze_epochs=0,
        epochs=epochs, steps_per_epoch=None, prunetrain=False,
        learning_rate=source_config(regime, _NETWORK.value).learning_rate,
        lr_decay_epochs=(max(1, epochs // 2), max(1, 3 * epochs // 4)))


def trainable_json(text: str) -> str:
    """A model JSON with every layer trainable: a network trained from
    fresh weights trains whole, whatever the run it came from froze."""
    def thaw(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: True if k == "trainable" else thaw(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [thaw(v) for v in node]
        return node
    return json.dumps(thaw(json.loads(text)))


def source_path(key: str) -> str:
    """The cached source model of `key` ("dense", or "thin t")."""
    name = f"{_REGIME.value}_{_NETWORK.value}_{key.replace(' ', '_')}"
    return os.path.join(_SOURCES.value, name, common.MODEL_FILE)


# A task: (seed, method, target, grid value, epochs); sources have seed
# None. `grid` is N (compress) or the target size (transfer); thin runs
# on compress's fixed 10,000 examples have grid None.
Task = tuple


def plan(regime: str, grid: Sequence[int], targets: Sequence[float],
         seeds: Sequence[int], frozen_batchnorm: bool = False
         ) -> list[Task]:
    """Every task of the sweep, sources first, then seed by seed
    (`frozen_batchnorm`: also `dense_frozen_bn` and `prunetrain_frozen_bn`).

    >>> plan("compress", [1], [0.5], [0])[:3]
    [(None, 'source', None, None, None), (0, 'dense', None, 1, None), (0, 'prunetrain', 0.5, 1, None)]
    """
    tasks: list[Task] = [(None, "source", None, None, None)]
    if regime == "transfer" and min(grid) <= THIN_SOURCE_MAX:
        tasks += [(None, "source", t, None, None) for t in targets]
    thin = THIN_EPOCHS[regime](grid)
    for seed in seeds:
        for g in grid:
            tasks.append((seed, "dense", None, g, None))
            if frozen_batchnorm:
                tasks.append((seed, "dense_frozen_bn", None, g, None))
            for t in targets:
                tasks += [(seed, "prunetrain", t, g, None),
                          (seed, "prune_first", t, g, None)]
                if frozen_batchnorm:
                    tasks.append((seed, "prunetrain_frozen_bn", t, g, None))
                if regime == "transfer" and g <= THIN_SOURCE_MAX:
                    tasks.append((seed, "thin_source", t, g, None))
                if regime == "transfer":
                    tasks += [(seed, "thin", t, g, e) for e in thin]
        if regime == "compress":
            tasks += [(seed, "thin", t, None, e) for t in targets
                      for e in thin]
    return tasks


def label(task: Task) -> str:
    """'prunetrain 0.25 N=2'-like name of a task's setting."""
    _, method, target, grid, epochs = task
    name = method + (f" {target:g}" if target is not None else "")
    if grid is not None:
        name += f" {'N' if _REGIME.value == 'compress' else 'n'}={grid}"
    return name + (f" E={epochs}" if epochs is not None else "")


def _key(record: dict[str, Any]) -> Task:
    return (record["seed"], record["method"], record["target"],
            record["grid"], record["epochs"])


def sweep_runs(result: dict[str, Any], tasks: Sequence[Task], jobs: int,
               threads: int, path: str | None) -> None:
    """Runs the tasks `result` lacks, `jobs` at a time, writing `path`
    after each (sources first: the rest start from them)."""
    regime, network = _REGIME.value, _NETWORK.value
    held = {_key(r) for r in result["runs"]} | {
        (None, "source", None if key == "dense" else float(key.split()[1]),
         None, None) for key in result["sources"]
        if os.path.exists(source_path(key))}
    todo = [t for t in tasks if t not in held]
    if todo:
        print(f"{len(todo)} runs to go ({len(held)} held), {jobs} at a time",
              flush=True)
    # PruneTrain's final models by (seed, target, grid): a thin run trains
    # its own seed's and grid's (compress: the first grid value's), a thin
    # source the first seed's at the first grid value.
    finals: dict[tuple, str] = {
        (r["seed"], r["target"], r["grid"]): r["final_model"]
        for r in result["runs"] if r["method"] == "prunetrain"}
    first_seed = min(t[0] for t in tasks if t[0] is not None)
    first_grid = min(t[3] for t in tasks if t[3] is not None)
    start, spent = time.perf_counter(), result["sweep_seconds"]

    def prepare(task: Task) -> tuple | None:
        seed, method, target, grid, epochs = task
        if method == "source":
            if target is None:
                config = source_config(regime, network)
                return dataclasses.replace(config, log_dir=os.path.dirname(
                    source_path("dense"))), None
            widths = finals.get((first_seed, target, first_grid))
            if widths is None:
                return None  # a PruneTrain run gives its widths
            config = source_config(regime, network)
            return dataclasses.replace(config, log_dir=os.path.dirname(
                source_path(f"thin {target:g}"))), trainable_json(widths)
        if not os.path.exists(source_path("dense")):
            return None
        if method == "thin_source":
            source = source_path(f"thin {target:g}")
            if not os.path.exists(source):
                return None
            return dataclasses.replace(
                fine_tune(regime, network, grid, source), seed=seed), None
        if method == "thin":
            architecture = finals.get((seed, target, grid or first_grid))
            if architecture is None:
                return None
            base = fine_tune(regime, network, grid or GRIDS[regime][0],
                             source_path("dense"))
            return dataclasses.replace(
                from_scratch(base, regime, epochs),
                seed=seed), trainable_json(architecture)
        config = dataclasses.replace(
            fine_tune(regime, network, grid, source_path("dense")), seed=seed)
        if method.endswith("_frozen_bn"):
            config = dataclasses.replace(config, freeze_batchnorm=True)
        if method.startswith("dense"):
            return config, None
        if method == "prune_first":  # cut at once, then no lasso
            return dataclasses.replace(config, prunetrain=True,
                                       flops_target=target,
                                       prune_first=True), None
        return dataclasses.replace(
            config, prunetrain=True, flops_target=target,
            strength=_STRENGTH[network], **_LASSO), None

    def done(task: Task, record: dict[str, Any]) -> None:
        seed, method, target, grid, epochs = task
        architectures = record.pop("architectures")
        record.update(seed=seed, method=method, target=target, grid=grid,
                      epochs=epochs)
        for key, text in architectures.items():
            result["architectures"].setdefault(key, text)
        if method == "source":  # sunk: reported apart, never replayed
            result["sources"]["dense" if target is None
                              else f"thin {target:g}"] = record
            benchmark._write(result, path)
            print(f"{label(task)}: top-1 {record['accuracy']:.4f}, wall "
                  f"{record['train_seconds']:.0f} s", flush=True)
            return
        if method == "prunetrain":
            final = architectures[record["timeline"][-1]["architecture"]]
            record["final_model"] = final
            finals[(seed, target, grid)] = final
        result["runs"].append(record)
        result["runs"].sort(key=lambda r: tasks.index(_key(r))
                            if _key(r) in tasks else len(tasks))
        result["sweep_seconds"] = spent + time.perf_counter() - start
        result.pop("replay", None), result.pop("replays", None)
        benchmark._write(result, path)
        print(f"{label(task)} seed {seed}: top-1 {record['accuracy']:.4f}, "
              f"wall {record['train_seconds']:.0f} s, steps "
              + "+".join(str(s["steps"]) for s in record["timeline"]),
              flush=True)

    sweep.run_tasks(todo, prepare, benchmark.train, done, jobs, threads)


def load(path: str | None) -> dict[str, Any]:
    """The sweep so far (`path`'s), refused when made for another regime
    or network."""
    state = {"regime": _REGIME.value, "network": _NETWORK.value,
             "config": benchmark._config_dict(fine_tune(
                 _REGIME.value, _NETWORK.value, GRIDS[_REGIME.value][0],
                 source_path("dense"))),
             "sources": {}, "runs": [], "architectures": {},
             "sweep_seconds": 0.0}
    if not path or not os.path.exists(path):
        return state
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    for name in ("regime", "network"):
        if old.get(name) != state[name]:
            raise app.UsageError(f"{path} holds --{name}={old.get(name)}, "
                                 f"not {state[name]}: give another --json.")
    return old


# -- the report ------------------------------------------------------------------
def priced(result: dict[str, Any]) -> None:
    """Sets every run's `seconds_replayed` from the replay and its
    `clock` ("replayed"; "wall" where the replay has no price for it).
    Transfer sources train at another batch size than the replay's, so
    they keep their wall time."""
    steps = (result.get("replay") or {}).get("step_seconds")
    sources = result["sources"].values() if result["regime"] == "compress" \
        else []
    for run in [*result["runs"], *sources]:
        try:
            run["seconds_replayed"] = replay_lib.replayed_seconds(
                run["timeline"], steps, run["one_off_seconds"])
            run["clock"] = "replayed"
        except (KeyError, TypeError):  # no replay, or not in it
            run["seconds_replayed"], run["clock"] = run["train_seconds"], \
                "wall"
    if result["regime"] != "compress":
        for run in result["sources"].values():
            run["seconds_replayed"], run["clock"] = run["train_seconds"], \
                "wall"


def _by_seed(runs: list[dict[str, Any]], **match: Any) -> dict[int, dict]:
    return {r["seed"]: r for r in runs
            if all(r[k] == v for k, v in match.items())}


def at_time(thin: dict[int, list[dict]], seconds: dict[int, float]
            ) -> tuple[dict[int, float], int]:
    """Per seed, the thin network's top-1 at `seconds` of replayed time,
    interpolated linearly between its runs of different lengths (held at
    the nearest end outside them); and how many seeds were outside.

    >>> runs = [{"seconds_replayed": 10, "accuracy": 0.5},
    ...         {"seconds_replayed": 20, "accuracy": 0.7}]
    >>> at_time({0: runs}, {0: 15.0}), at_time({0: runs}, {0: 30.0})
    (({0: 0.6}, 0), ({0: 0.7}, 1))
    """
    out, outside = {}, 0
    for seed, time_s in seconds.items():
        points = sorted((r["seconds_replayed"], r["accuracy"])
                        for r in thin.get(seed, []))
        if not points:
            continue
        xs, ys = zip(*points)
        outside += not xs[0] <= time_s <= xs[-1]
        out[seed] = float(np.interp(time_s, xs, ys))
    return out, outside


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Per grid value: the settings' mean top-1 and replayed time, and
    PruneTrain's paired differences (points) against the alternatives."""
    priced(result)
    runs, regime = result["runs"], result["regime"]
    source = result["sources"].get("dense")
    grids = sorted({r["grid"] for r in runs if r["grid"] is not None})
    targets = sorted({r["target"] for r in runs if r["target"] is not None})
    out: dict[str, Any] = {"rows": [], "pairs": []}
    for g in grids:
        dense = _by_seed(runs, method="dense", grid=g)
        if not dense:
            continue
        reference = np.mean([r["seconds_replayed"] for r in dense.values()])
        flops = np.mean([r["inference_flops"] for r in dense.values()])
        settings = [("dense", None, g, None),
                    ("dense_frozen_bn", None, g, None)] + [
            (m, t, g, None) for t in targets
            for m in ("prunetrain", "prunetrain_frozen_bn", "prune_first",
                      "thin_source")] + [
            ("thin", t, g if regime == "transfer" else None, e)
            for t in targets for e in sorted({
                r["epochs"] for r in runs if r["method"] == "thin"})]
        for method, t, grid, e in settings:
            chosen = _by_seed(runs, method=method, target=t, grid=grid,
                              epochs=e)
            if not chosen:
                continue
            top1 = [r["accuracy"] for r in chosen.values()]
            seconds = [r["seconds_replayed"] for r in chosen.values()]
            out["rows"].append({
                "grid": g, "method": method,
                "label": label((None, method, t, grid, e)),
                "seeds": len(chosen), "top1": float(np.mean(top1)),
                "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1
                else 0.0,
                "vs_dense": verdicts.paired(
                    {s: r["accuracy"] for s, r in chosen.items()},
                    {s: r["accuracy"] for s, r in dense.items()}, 100),
                "time_vs_dense": float(np.mean(seconds) / reference),
                "time_vs_source": float(np.mean(seconds)
                                        / source["seconds_replayed"])
                if source else None,
                "flops": float(np.mean([r["inference_flops"]
                                        for r in chosen.values()]) / flops),
                # One-offs (surgery, re-traces) are measured in the run,
                # not replayed (BENCHMARKS.md, "Issue 37").
                "one_off_share": float(np.mean([
                    r["one_off_seconds"] / r["seconds_replayed"]
                    for r in chosen.values()]))})
        # The replayed Pareto front of this grid value's settings: no other
        # is as fast and as accurate (mean time, mean top-1).
        mine = [row for row in out["rows"] if row["grid"] == g]
        front = summary.pareto([(row["time_vs_dense"], row["top1"])
                                for row in mine])
        for i, row in enumerate(mine):
            row["front"] = i in front
        for t in targets:
            pt = _by_seed(runs, method="prunetrain", target=t, grid=g)
            if not pt:
                continue
            mine = {s: r["accuracy"] for s, r in pt.items()}
            thin_grid = g if regime == "transfer" else None
            thin = {}
            for r in runs:
                if r["method"] == "thin" and r["target"] == t \
                        and r["grid"] == thin_grid:
                    thin.setdefault(r["seed"], []).append(r)
            equal = (HEAD_EPOCHS + FINE_TUNE_EPOCHS) if regime == "transfer" \
                else g
            others = {
                "dense": {s: r["accuracy"] for s, r in dense.items()},
                "prune_first": {s: r["accuracy"] for s, r in _by_seed(
                    runs, method="prune_first", target=t, grid=g).items()},
                "thin_source": {s: r["accuracy"] for s, r in _by_seed(
                    runs, method="thin_source", target=t, grid=g).items()},
                "prunetrain, BatchNorm frozen": {
                    s: r["accuracy"] for s, r in _by_seed(
                        runs, method="prunetrain_frozen_bn", target=t,
                        grid=g).items()},
                f"thin, equal epochs (E={equal})": {
                    s: r["accuracy"] for s, r in _by_seed(
                        runs, method="thin", target=t, grid=thin_grid,
                        epochs=equal).items()}}
            seconds = {s: r["seconds_replayed"] for s, r in pt.items()}
            curves = {"thin": thin}
            if regime == "compress":  # prune_first's runs of every N
                curves["prune_first"] = {}
                for r in runs:
                    if r["method"] == "prune_first" and r["target"] == t:
                        curves["prune_first"].setdefault(r["seed"],
                                                         []).append(r)
            outside = {}
            for name, curve in curves.items():
                others[f"{name}, equal time"], outside[name] = at_time(
                    curve, seconds)
            for name, theirs in others.items():
                row = verdicts.paired(mine, theirs, 100)
                if row:
                    row.update(grid=g, target=t, against=name,
                               outside=outside.get(name.split(",")[0], 0)
                               if name.endswith("equal time") else 0)
                    out["pairs"].append(row)
    return out


def _interval(row: dict[str, Any] | None) -> str:
    if not row:
        return ""
    short = {"better": "better", "worse": "worse",
             "not established": "n.e."}[row["verdict"]]
    return f"{row['mean']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] " \
           f"{short}"


def markdown(result: dict[str, Any], figures: dict[str, Any]) -> str:
    """The report's two tables, in Markdown."""
    grid = "N" if result["regime"] == "compress" else "n"
    lines = [f"Source {name}: top-1 {run['accuracy']:.4f}, "
             f"{run['seconds_replayed']:.0f} s ({run['clock']}; sunk, not in "
             "the times below)." for name, run in result["sources"].items()]
    walls = sum(run["clock"] == "wall" for run in result["runs"])
    if walls:
        lines.append(f"{walls} runs priced by wall time (not replayed).")
    lines += ["", f"| {grid} | setting | seeds | top-1 | vs dense (points) "
              "| time vs dense | time vs source | final FLOPs | one-off share "
              "| front |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        versus = row["time_vs_source"]
        lines.append(
            f"| {row['grid']} | {row['label']} | {row['seeds']} | "
            f"{row['top1']:.4f} ± {row['top1_std']:.4f} | "
            f"{_interval(row['vs_dense']) if row['method'] != 'dense' else ''}"
            f" | {row['time_vs_dense']:.3f}× | "
            f"{'' if versus is None else f'{versus:.3f}×'} | "
            f"{row['flops']:.3f} | {100 * row['one_off_share']:.0f} % | "
            f"{'yes' if row['front'] else ''} |")
    lines += ["", f"| {grid} | target | PruneTrain − ... | points, 95 % "
              "interval | seeds |", "|---|---|---|---|---|"]
    for row in figures["pairs"]:
        note = f" ({row['outside']} outside the curve)" if row["outside"] \
            else ""
        lines.append(f"| {row['grid']} | {row['target']:g} | "
                     f"{row['against']} | {_interval(row)}{note} | "
                     f"{row['seeds']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unused = [name for name in ("mode", "workload", "widths", "levers",
                                "scratch", "paper", "paper_interval",
                                "overhead_rounds", "overhead_steps", "png")
              if flags.FLAGS[name].present]
    if unused:
        raise app.UsageError(f"--{unused[0]} is tools/benchmark.py's; "
                             "tools/pretrained.py does not use it.")
    grid = [int(g) for g in (_GRID.value or GRIDS[_REGIME.value])]
    targets = [float(t) for t in benchmark._TARGETS.value]
    if not flags.FLAGS["targets"].present:
        targets = [0.125, 0.25, 0.5]
    if not grid or not targets or min(grid) < 1 \
            or not all(0 < t < 1 for t in targets):
        raise app.UsageError("--grid needs values >= 1 and --targets values "
                             "in (0, 1).")
    path = benchmark._JSON.value
    result = load(benchmark._REPLAY.value or path)
    if not benchmark._REPLAY.value:
        sweep_runs(result, plan(_REGIME.value, grid, targets,
                                [int(s) for s in benchmark._SEEDS.value],
                                _FROZEN_BATCHNORM.value),
                   benchmark._JOBS.value, benchmark._RUN_THREADS.value, path)
    rounds = (benchmark._REPLAY_ROUNDS.value, benchmark._REPLAY_STEPS.value,
              benchmark._REPLAY_WARMUP.value)
    if rounds[0] > 0 and result["runs"] and (
            benchmark._REPLAY.value or "replay" not in result):
        benchmark.replay_many(result, benchmark._REPLAYS.value, *rounds)
    figures = report(result)
    result["report"] = figures
    benchmark._write(result, path)
    print(markdown(result, figures))


if __name__ == "__main__":
    app.run(main)
