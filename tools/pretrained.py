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
* with `--frozen_batchnorm` (transfer): `dense_frozen_bn`,
  `prunetrain_frozen_bn t` and `prune_first_frozen_bn t`, the same with
  every BatchNorm layer frozen in the fine-tune (the Keras guide's choice
  for small data), and the pruned two with `_recal`: the frozen layers'
  statistics re-estimated after each cut on `RECALIBRATE_STEPS` training
  batches (`--recalibrate_steps`, `experimental.RecalibrateBatchNorm`);
  a table of their paired differences follows;
* with `--levers` (issue 38), `prunetrain_<lever> t`: PruneTrain with
  one more lever (`LEVERS`: `distill`, the model before each cut teaching
  the cut one, `experimental.Distill`; `searched`, widths scored by
  measured loss, `experimental.SearchedWidths`), paired against
  PruneTrain, cut-first and dense (`LEVER_PAIRS`).

Every run records its timeline, and the replay (`tools/replay.py`, via
`tools/retime.py`) prices each architecture's train step, frozen
phases included (a frozen backbone's step is its own replay item). The
report gives per setting mean top-1, replayed time as a ratio to the
source's training, and paired 95 % intervals over seeds
(`tools/verdicts.py`) against `dense`, `prune_first` and `thin` at equal
epochs and at equal time, and which settings are on the replayed Pareto
front of top-1 vs time. The `--json` file is the sweep's state
(`tools/sweep.py`, `tools/results.py`): a rerun goes on from it. The sweep
flags (`--json`, `--seeds`, `--targets`, `--jobs`, `--run_threads`,
`--replay*`) are those of `tools.benchmark` (`tools.sweep.define_flags`).
From the repository root:

    python -m tools.pretrained --regime=transfer --json=tools/results/transfer_resnet20.json --jobs=2
    python -m tools.pretrained --regime=compress --grid=1,2 --seeds=0 --json=/tmp/c.json  # quick
    python -m tools.pretrained --regime=compress --replay=c.json --json=c.json          # re-time
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np
from absl import app
from absl import flags

from recipes import common
from tools import oneoffs
from tools import results as results_lib
from tools import retime
from tools import runs as runs_lib
from tools import summary
from tools import sweep
from tools import verdicts

SOURCES = os.path.join(os.path.expanduser("~"), ".cache", "tf_prunetrain",
                       "sources")

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
# `_recal` methods: training batches the frozen BatchNorm statistics are
# re-estimated on after a cut (EagleEye's order of magnitude).
RECALIBRATE_STEPS = 20
# BatchNorm frozen: the pairs (a − b) reported, per target.
FROZEN_PAIRS = [("prunetrain_frozen_bn_recal", "prunetrain_frozen_bn"),
                ("prune_first_frozen_bn_recal", "prune_first_frozen_bn"),
                ("prunetrain_frozen_bn_recal", "prune_first_frozen_bn_recal"),
                ("prunetrain_frozen_bn_recal", "dense_frozen_bn"),
                ("prunetrain_frozen_bn_recal", "prunetrain")]


# Issue 38's levers: the recipe flags `prunetrain_<lever>` adds to
# PruneTrain's (the teacher here is the trained model the fine-tune starts
# from); each is paired with these methods (None: the same target).
LEVERS: dict[str, dict[str, Any]] = {
    "distill": {"distill_epochs": 2},
    "searched": {"ranking": "searched"}}
LEVER_PAIRS = ("prunetrain", "prune_first", "dense")


def _network(name: str) -> dict[str, Any]:
    if name == "mobilenetv2":  # BENCHMARKS.md, "Issue 31, second workload"
        return dict(model="mobilenetv2", image_size=32)
    return dict(model="resnet20")


def source_config(regime: str, network: str) -> common.Config:
    """How a source model is trained: 8 epochs at the workload's rate (a
    thin source: the same, its JSON given to `runs.train`)."""
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


def from_scratch(base: common.Config, regime: str, network: str,
                 epochs: int) -> common.Config:
    """A network trained from fresh weights on `base`'s data (its JSON
    given to `runs.train`) for `epochs` whole passes, at the source's
    rate and step decay."""
    return dataclasses.replace(
        base, pretrained=None, new_head=False, freeze_epochs=0,
        epochs=epochs, steps_per_epoch=None, prunetrain=False,
        learning_rate=source_config(regime, network).learning_rate,
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


# A task: (seed, method, target, grid value, epochs); sources have seed
# None. `grid` is N (compress) or the target size (transfer); thin runs
# on compress's fixed 10,000 examples have grid None.
Task = tuple


def plan(regime: str, grid: Sequence[int], targets: Sequence[float],
         seeds: Sequence[int], frozen_batchnorm: bool = False,
         levers: Sequence[str] = ()) -> list[Task]:
    """Every task of the sweep, sources first, then seed by seed
    (`frozen_batchnorm`: also the `*_frozen_bn` and `*_frozen_bn_recal`
    methods; `levers`: `prunetrain_<lever>`).

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
                tasks += [(seed, f"prunetrain_{lever}", t, g, None)
                          for lever in levers]
                if frozen_batchnorm:
                    tasks += [(seed, f"{m}_frozen_bn{r}", t, g, None)
                              for m in ("prunetrain", "prune_first")
                              for r in ("", "_recal")]
                if regime == "transfer" and g <= THIN_SOURCE_MAX:
                    tasks.append((seed, "thin_source", t, g, None))
                if regime == "transfer":
                    tasks += [(seed, "thin", t, g, e) for e in thin]
        if regime == "compress":
            tasks += [(seed, "thin", t, None, e) for t in targets
                      for e in thin]
    return tasks


def label(task: Task, regime: str) -> str:
    """'prunetrain 0.25 N=2'-like name of a task's setting.

    >>> label((0, "prunetrain", 0.25, 2, None), "compress")
    'prunetrain 0.25 N=2'
    >>> label((0, "thin", 0.25, 500, 40), "transfer")
    'thin 0.25 n=500 E=40'
    """
    _, method, target, grid, epochs = task
    name = method + (f" {target:g}" if target is not None else "")
    if grid is not None:
        name += f" {'N' if regime == 'compress' else 'n'}={grid}"
    return name + (f" E={epochs}" if epochs is not None else "")


def _key(record: dict[str, Any]) -> Task:
    return (record["seed"], record["method"], record["target"],
            record["grid"], record["epochs"])


@dataclasses.dataclass(frozen=True)
class Study:
    """One sweep's regime and network, and where its source models are
    cached; what each task trains (`args`)."""

    regime: str = "compress"
    network: str = "resnet20"
    sources: str = SOURCES
    precise_bn: int = 0  # --precise_bn of every run but the sources'

    def source_path(self, key: str) -> str:
        """The cached source model of `key` ("dense", or "thin t").

        >>> Study("transfer", sources="/cache").source_path("thin 0.25")
        '/cache/transfer_resnet20_thin_0.25/model.keras'
        """
        name = f"{self.regime}_{self.network}_{key.replace(' ', '_')}"
        return os.path.join(self.sources, name, common.MODEL_FILE)

    def source_key(self, target: float | None) -> str:
        """The source of the task ("dense", or "thin t" for `target`)."""
        return "dense" if target is None else f"thin {target:g}"

    def fresh(self) -> dict[str, Any]:
        """The results of a sweep that has run nothing yet."""
        return {"regime": self.regime, "network": self.network,
                "precise_bn": self.precise_bn,
                "config": results_lib.config_dict(fine_tune(
                    self.regime, self.network, GRIDS[self.regime][0],
                    self.source_path("dense"))),
                "sources": {}, "runs": [], "architectures": {},
                "sweep_seconds": 0.0}

    def held(self, result: dict[str, Any]) -> set[Task]:
        """The tasks `result` holds: its runs, and its sources whose model
        is in the cache."""
        return {_key(r) for r in result["runs"]} | {
            (None, "source", None if key == "dense"
             else float(key.split()[1]), None, None)
            for key in result["sources"]
            if os.path.exists(self.source_path(key))}

    def source_args(self, target: float | None, widths: str | None
                    ) -> tuple | None:
        """`runs.train`'s arguments for a source (a thin one: of `widths`,
        PruneTrain's final model JSON; None while it is missing)."""
        config = dataclasses.replace(
            source_config(self.regime, self.network),
            log_dir=os.path.dirname(self.source_path(
                self.source_key(target))))
        if target is None:
            return config, None
        return None if widths is None else (config, trainable_json(widths))

    def args(self, task: Task, finals: dict[tuple, str], first: tuple
             ) -> tuple | None:
        """`runs.train`'s arguments for a task, or None while it waits for
        a source or a PruneTrain run (`finals`: their final model JSON by
        (seed, target, grid); `first`: the first seed and grid value)."""
        made = self._args(task, finals, first)
        if made is None or task[1] == "source" or not self.precise_bn:
            return made
        return dataclasses.replace(made[0], precise_bn=self.precise_bn), \
            made[1]

    def _args(self, task: Task, finals: dict[tuple, str], first: tuple
              ) -> tuple | None:
        seed, method, target, grid, epochs = task
        if method == "source":
            return self.source_args(target, finals.get((first[0], target,
                                                        first[1])))
        dense = self.source_path("dense")
        if not os.path.exists(dense):
            return None
        if method == "thin_source":
            source = self.source_path(self.source_key(target))
            return None if not os.path.exists(source) else (
                dataclasses.replace(fine_tune(self.regime, self.network,
                                              grid, source), seed=seed), None)
        if method == "thin":
            architecture = finals.get((seed, target, grid or first[1]))
            base = fine_tune(self.regime, self.network,
                             grid or GRIDS[self.regime][0], dense)
            return None if architecture is None else (dataclasses.replace(
                from_scratch(base, self.regime, self.network, epochs),
                seed=seed), trainable_json(architecture))
        config = dataclasses.replace(
            fine_tune(self.regime, self.network, grid, dense), seed=seed,
            freeze_batchnorm="_frozen_bn" in method,
            recalibrate_steps=RECALIBRATE_STEPS if method.endswith("_recal")
            else 0)
        if method.startswith("dense"):
            return config, None
        if method.startswith("prune_first"):  # cut at once, then no lasso
            return dataclasses.replace(config, prunetrain=True,
                                       flops_target=target,
                                       prune_first=True), None
        lever = LEVERS.get(method.partition("_")[2], {})
        return dataclasses.replace(
            config, prunetrain=True, flops_target=target,
            strength=_STRENGTH[self.network], **_LASSO, **lever), None


def sweep_runs(result: dict[str, Any], tasks: Sequence[Task], jobs: int,
               threads: int, path: str | None, study: Study) -> None:
    """Runs the tasks `result` lacks, `jobs` at a time, writing `path`
    after each (sources first: the rest start from them)."""
    order = {task: i for i, task in enumerate(tasks)}
    state = sweep.Sweep(result, path,
                        lambda r: order.get(_key(r), len(tasks)))
    todo = state.to_go(tasks, study.held(result), jobs)
    # PruneTrain's final models by (seed, target, grid): a thin run trains
    # its own seed's and grid's (compress: the first grid value's), a thin
    # source the first seed's at the first grid value.
    finals: dict[tuple, str] = {
        (r["seed"], r["target"], r["grid"]): r["final_model"]
        for r in result["runs"] if r["method"] == "prunetrain"}
    first = (min(t[0] for t in tasks if t[0] is not None),
             min(t[3] for t in tasks if t[3] is not None))

    def done(task: Task, record: dict[str, Any]) -> None:
        seed, method, target, grid, epochs = task
        record.update(seed=seed, method=method, target=target, grid=grid,
                      epochs=epochs)
        if method == "source":  # sunk: reported apart, never replayed
            state.merge(record)
            result["sources"][study.source_key(target)] = record
            state.save()
        else:
            if method == "prunetrain":
                record["final_model"] = finals[(seed, target, grid)] = \
                    sweep.final_model(record, record["architectures"])
            state.add(record)
        print(f"{label(task, study.regime)}"
              + (f" seed {seed}" if seed is not None else "")
              + f": top-1 {record['accuracy']:.4f}, wall "
              f"{record['train_seconds']:.0f} s, steps "
              + "+".join(str(s["steps"]) for s in record["timeline"]),
              flush=True)

    sweep.run_tasks(todo, lambda task: study.args(task, finals, first),
                    runs_lib.train, done, jobs, threads)


def load_state(path: str | None, study: Study) -> dict[str, Any]:
    """The sweep so far (`path`'s), refused (ValueError) when made for
    another regime or network."""
    return results_lib.resume(path, study.fresh(), lambda result: {
        "regime": result.get("regime"), "network": result.get("network"),
        "precise_bn": result.get("precise_bn", 0)})


# -- the report ------------------------------------------------------------------
def priced(result: dict[str, Any]) -> None:
    """Sets every run's `seconds_replayed` from the replay and its
    `clock` ("replayed"; "wall" where the replay has no price for it).
    Transfer sources train at another batch size than the replay's, so
    they keep their wall time."""
    replay = result.get("replay") or {}
    sources = result["sources"].values() if result["regime"] == "compress" \
        else []
    for run in [*result["runs"], *sources]:
        try:
            run["seconds_replayed"] = oneoffs.price(run, replay)
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
    runs = result["runs"]
    grids = sorted({r["grid"] for r in runs if r["grid"] is not None})
    targets = sorted({r["target"] for r in runs if r["target"] is not None})
    out: dict[str, Any] = {"rows": [], "pairs": [], "frozen_pairs": [],
                           "lever_pairs": []}
    for g in grids:
        dense = _by_seed(runs, method="dense", grid=g)
        if not dense:
            continue
        out["rows"] += _rows(result, g, targets, dense)
        for t in targets:
            out["pairs"] += _pairs(runs, result["regime"], g, t, dense)
            out["frozen_pairs"] += _frozen_pairs(runs, g, t)
            out["lever_pairs"] += _frozen_pairs(runs, g, t, [
                (f"prunetrain_{lever}", theirs) for lever in LEVERS
                for theirs in LEVER_PAIRS])
    return out


def _frozen_pairs(runs: list[dict[str, Any]], g: int, t: float,
                  which: Sequence[tuple[str, str]] = tuple(FROZEN_PAIRS)
                  ) -> list[dict[str, Any]]:
    """The paired differences (points) of `which` (default `FROZEN_PAIRS`)
    at grid value `g` and target `t`, where both have runs."""
    pairs = []
    for mine, theirs in which:
        row = verdicts.paired(
            _top1(runs, method=mine, target=t, grid=g),
            _top1(runs, method=theirs, grid=g,
                  target=None if theirs.startswith("dense") else t), 100)
        if row:
            row.update(grid=g, target=t, mine=mine, against=theirs)
            pairs.append(row)
    return pairs


def _rows(result: dict[str, Any], g: int, targets: list[float],
          dense: dict[int, dict]) -> list[dict[str, Any]]:
    """Grid value `g`'s settings: mean top-1 (paired against `dense`),
    time and FLOPs as ratios, and whether each is on the replayed Pareto
    front of this grid value (no other is as fast and as accurate)."""
    runs, regime = result["runs"], result["regime"]
    source = result["sources"].get("dense")
    reference = np.mean([r["seconds_replayed"] for r in dense.values()])
    flops = np.mean([r["inference_flops"] for r in dense.values()])
    settings = [("dense", None, g, None),
                ("dense_frozen_bn", None, g, None)] + [
        (m, t, g, None) for t in targets
        for m in ("prunetrain", "prunetrain_frozen_bn",
                  "prunetrain_frozen_bn_recal",
                  *(f"prunetrain_{lever}" for lever in LEVERS), "prune_first",
                  "prune_first_frozen_bn", "prune_first_frozen_bn_recal",
                  "thin_source")] + [
        ("thin", t, g if regime == "transfer" else None, e)
        for t in targets for e in sorted({
            r["epochs"] for r in runs if r["method"] == "thin"})]
    rows = []
    for method, t, grid, e in settings:
        chosen = _by_seed(runs, method=method, target=t, grid=grid, epochs=e)
        if not chosen:
            continue
        top1 = [r["accuracy"] for r in chosen.values()]
        seconds = [r["seconds_replayed"] for r in chosen.values()]
        rows.append({
            "grid": g, "method": method,
            "label": label((None, method, t, grid, e), regime),
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
            # One-offs (plan, fade, surgery, re-trace): replayed where the
            # replay has the cuts (`tools.oneoffs`), else in the run.
            "one_off_share": float(np.mean([
                oneoffs.share(r, r["seconds_replayed"])
                for r in chosen.values()]))})
    front = summary.pareto([(row["time_vs_dense"], row["top1"])
                            for row in rows])
    for i, row in enumerate(rows):
        row["front"] = i in front
    return rows


def _top1(runs: list[dict[str, Any]], **match: Any) -> dict[int, float]:
    return {s: r["accuracy"] for s, r in _by_seed(runs, **match).items()}


def _pairs(runs: list[dict[str, Any]], regime: str, g: int, t: float,
           dense: dict[int, dict]) -> list[dict[str, Any]]:
    """PruneTrain at target `t`, grid value `g`, paired with each
    alternative: at equal epochs, and at PruneTrain's replayed time on the
    curves of the thin network (and, compress, of prune_first over N)."""
    pt = _by_seed(runs, method="prunetrain", target=t, grid=g)
    if not pt:
        return []
    thin_grid = g if regime == "transfer" else None
    equal = (HEAD_EPOCHS + FINE_TUNE_EPOCHS) if regime == "transfer" else g
    others = {
        "dense": {s: r["accuracy"] for s, r in dense.items()},
        "prune_first": _top1(runs, method="prune_first", target=t, grid=g),
        "thin_source": _top1(runs, method="thin_source", target=t, grid=g),
        "prunetrain, BatchNorm frozen": _top1(
            runs, method="prunetrain_frozen_bn", target=t, grid=g),
        f"thin, equal epochs (E={equal})": _top1(
            runs, method="thin", target=t, grid=thin_grid, epochs=equal)}
    curves: dict[str, dict[int, list[dict]]] = {"thin": {}}
    if regime == "compress":  # prune_first's runs of every N
        curves["prune_first"] = {}
    for r in runs:
        if r["target"] != t or r["method"] not in curves or (
                r["method"] == "thin" and r["grid"] != thin_grid):
            continue
        curves[r["method"]].setdefault(r["seed"], []).append(r)
    seconds = {s: r["seconds_replayed"] for s, r in pt.items()}
    outside = {}
    for name, curve in curves.items():
        others[f"{name}, equal time"], outside[name] = at_time(curve,
                                                               seconds)
    mine = {s: r["accuracy"] for s, r in pt.items()}
    pairs = []
    for name, theirs in others.items():
        row = verdicts.paired(mine, theirs, 100)
        if row:
            row.update(grid=g, target=t, against=name,
                       outside=outside.get(name.split(",")[0], 0)
                       if name.endswith("equal time") else 0)
            pairs.append(row)
    return pairs


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
    for key, title in (("frozen_pairs", "BatchNorm frozen"),
                       ("lever_pairs", "levers")):
        if figures.get(key):
            lines += ["", f"| {grid} | target | {title}: a − b | points, 95 "
                      "% interval | seeds |", "|---|---|---|---|---|"]
            lines += [f"| {row['grid']} | {row['target']:g} | {row['mine']}"
                      f" − {row['against']} | {_interval(row)} | "
                      f"{row['seeds']} |" for row in figures[key]]
    return "\n".join(lines)


def define_flags() -> None:
    """The command line: the sweep's flags (`tools.sweep`) and the regime's
    (defined here, not at import: the tests import this module)."""
    sweep.define_flags(targets=["0.125", "0.25", "0.5"])
    flags.DEFINE_enum("regime", "compress", ["compress", "transfer"],
                      "Which regime (module docstring).")
    flags.DEFINE_enum("network", "resnet20", ["resnet20", "mobilenetv2"],
                      "The network (mobilenetv2: keras.applications, alpha "
                      "1, images resized to 32x32).")
    flags.DEFINE_list("grid", None, "compress: fine-tune passes N (default "
                      "1,2,4,8); transfer: target training images (default "
                      "100,500,2000).")
    flags.DEFINE_boolean(
        "frozen_batchnorm", False, "Also run `dense` and `prunetrain` with "
        "BatchNorm frozen in the fine-tune (--freeze_batchnorm: the Keras "
        "guide's choice for small data), as `*_frozen_bn`.")
    flags.DEFINE_integer(
        "precise_bn", 0, "Every run but the sources' re-estimates all its "
        "BatchNorm statistics on this many training batches after training "
        "(the recipe's --precise_bn); a results file holds one value.")
    flags.DEFINE_list(
        "levers", [], "Also run PruneTrain with each of these (LEVERS: "
        "distill, searched) as prunetrain_<lever>.")
    flags.DEFINE_string(
        "sources", SOURCES, "Where source models are cached. A source is "
        "trained when the --json file holds none (the same command retrains "
        "the same weights: one thread, one seed).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    study = Study(f.regime, f.network, f.sources, f.precise_bn)
    grid = [int(g) for g in (f.grid or GRIDS[f.regime])]
    targets = [float(t) for t in f.targets]
    if not grid or not targets or min(grid) < 1 \
            or not all(0 < t < 1 for t in targets):
        raise app.UsageError("--grid needs values >= 1 and --targets values "
                             "in (0, 1).")
    unknown = sorted(set(f.levers) - set(LEVERS))
    if unknown:
        raise app.UsageError(f"--levers: unknown {', '.join(unknown)}; known:"
                             f" {', '.join(LEVERS)}.")
    try:
        result = load_state(f.replay or f.json, study)
    except ValueError as err:  # a results file of another regime
        raise app.UsageError(str(err)) from None
    if not f.replay:
        sweep_runs(result, plan(f.regime, grid, targets,
                                [int(s) for s in f.seeds],
                                f.frozen_batchnorm, f.levers),
                   f.jobs, f.run_threads, f.json, study)
    rounds = sweep.replay_flags()
    if rounds[0] > 0 and result["runs"] and (f.replay
                                             or "replay" not in result):
        retime.replay_many(result, f.replays, *rounds)
    figures = report(result)
    result["report"] = figures
    results_lib.write(result, f.json or f.replay)
    print(markdown(result, figures))


if __name__ == "__main__":
    define_flags()
    app.run(main)
