"""Replayed one-offs: what each cut costs besides its train steps, timed
in fresh processes like the steps (`tools.retime`), so that no figure of a
run depends on the load its own clock ran under.

A run's timeline (`recipes/timeline.py`) says where it cut: between two
consecutive segments whose replay items differ (`transitions`), and on
which steps a gentle cut's fade ran (`"fade": True`). For every transition
whose first item carries a group lasso (the cuts `Reconfigure` makes),
`time_cut` builds that architecture with fresh weights and runs a
two-epoch `fit` of it with a `Reconfigure` that makes the same cut after
epoch 1 (`plan_between`; faded over epoch 1 where a run faded), a
`RunLog` after it, and a stopwatch around the two callbacks:

  decide      the gentle schedule's decision as the fade's epoch begins
              (the channel graph, the plan, the fade's set-up; an abrupt
              cut decides inside `surgery`)
  fade_trace  the fade's first call over its steady one (its trace)
  fade_step   the fade's call after every fading step
  surgery     the callbacks at the cut's epoch end: the plan held to the
              rules, the in-place cut, the lasso switched off, the
              RunLog's re-measure
  retrace     the first train step after the cut over a steady one (the
              train function traced again)

`one_off_seconds` prices a run with them: over its transitions, decide +
fade_trace + surgery + retrace, plus fade_step for every step it faded.
A run with no such transition (the dense model, a thin one, --prune_first
whose cut comes before training) keeps its in-run one-off seconds.

Which channels a replayed cut keeps differs from the run's (the first
ones of every output: `plan_between`); what a step or a cut costs depends
on the widths, not on which channels they are.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable, Mapping

import keras
import numpy as np

import tf_prunetrain
from recipes import timeline as timeline_lib
from tf_prunetrain import coupling
from tf_prunetrain import latency
from tf_prunetrain import planning
from tf_prunetrain import schedules
from tools import replay as replay_lib
from tools import runs as runs_lib

FIELDS = ("decide", "fade_trace", "fade_step", "surgery", "retrace")
# A replay item's compiled model with fresh weights (`tools.retime`).
Build = Callable[[str], keras.Model]


def transition_key(before: Mapping[str, Any], after: Mapping[str, Any]
                   ) -> str:
    """The name of a cut between two timeline segments: their replay
    items.

    >>> transition_key({"architecture": "a1", "lasso": "proximal"},
    ...                {"architecture": "b2", "lasso": ""})
    'a1:proximal>b2'
    """
    return (f"{replay_lib.item_key(before['architecture'], before['lasso'])}"
            f">{replay_lib.item_key(after['architecture'], after['lasso'])}")


def _pairs(segments: list[Mapping[str, Any]]
           ) -> Iterable[tuple[Mapping[str, Any], str]]:
    """(the segment before, the transition) of every cut the replay makes:
    the items differ and the first carries a lasso."""
    for before, after in zip(segments, segments[1:]):
        key = transition_key(before, after)
        if before["lasso"] and key.partition(">")[0] != key.partition(">")[2]:
            yield before, key


def transitions(runs: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Every cut the runs' timelines show, and whether a run faded before
    it (then its replay fades too).

    >>> transitions([{"timeline": [
    ...     {"architecture": "a", "lasso": "loss", "fade": True, "steps": 4},
    ...     {"architecture": "b", "lasso": "", "steps": 4}]},
    ...     {"timeline": [{"architecture": "a", "lasso": "", "steps": 8}]}])
    {'a:loss>b': True}
    """
    found: dict[str, bool] = {}
    for run in runs:
        for before, key in _pairs(run["timeline"]):
            found[key] = found.get(key, False) or bool(before.get("fade"))
    return found


def mark_fades(run: dict[str, Any], steps_per_epoch: int) -> None:
    """Marks the fades in the timeline of a gentle run written before
    timelines did: the last `steps_per_epoch` steps before each cut.

    >>> run = {"timeline": [
    ...     {"architecture": "a", "lasso": "loss", "steps": 12},
    ...     {"architecture": "b", "lasso": "", "steps": 4}]}
    >>> mark_fades(run, 4)
    >>> [(s["steps"], s.get("fade", False)) for s in run["timeline"]]
    [(8, False), (4, True), (4, False)]
    """
    marked: list[dict[str, Any]] = []
    cuts = {id(before) for before, _ in _pairs(run["timeline"])}
    for segment in run["timeline"]:
        fade = min(steps_per_epoch, segment["steps"])
        if id(segment) in cuts and segment["steps"] > fade:
            marked.append({**segment, "steps": segment["steps"] - fade})
        marked.append({**segment, "fade": True, "steps": fade}
                      if id(segment) in cuts else segment)
    run["timeline"] = marked


def one_off_seconds(run: Mapping[str, Any],
                    cuts: Mapping[str, Mapping[str, float]] | None
                    ) -> float | None:
    """The run's replayed one-off seconds (see the module doc), or None
    when `cuts` (a replay's) prices none of its transitions.

    >>> cut = {"decide": 0.1, "fade_trace": 0.2, "fade_step": 0.01,
    ...        "surgery": 0.5, "retrace": 1.0}
    >>> run = {"timeline": [
    ...     {"architecture": "a", "lasso": "loss", "fade": True, "steps": 10},
    ...     {"architecture": "b", "lasso": "", "steps": 5}]}
    >>> round(one_off_seconds(run, {"a:loss>b": cut}), 3)
    1.9
    >>> one_off_seconds(run, {}) is None
    True
    """
    total, priced = 0.0, False
    for before, key in _pairs(run["timeline"]):
        if key not in (cuts or {}):
            continue
        cut, priced = cuts[key], True
        total += cut["decide"] + cut["surgery"] + cut["retrace"]
        if before.get("fade"):
            total += cut["fade_trace"] + before["steps"] * cut["fade_step"]
    return total if priced else None


def price(run: dict[str, Any], replay: Mapping[str, Any]) -> float:
    """Sets `run["one_off_replayed"]` (`one_off_seconds` on the replay's
    cuts, plus the run's in-run `recalibration_seconds` and
    `search_seconds`; None when it
    prices none) and returns the run's replayed seconds: its steps on the
    replay's step seconds, plus its one-offs, replayed where they were,
    else the run's in-run `one_off_seconds`."""
    one_off = one_off_seconds(run, replay.get("cuts"))
    if one_off is not None:
        one_off += run.get("recalibration_seconds", 0.0) \
            + run.get("search_seconds", 0.0)
    run["one_off_replayed"] = one_off
    return replay_lib.replayed_seconds(
        run["timeline"], replay["step_seconds"],
        run["one_off_seconds"] if one_off is None else one_off)


def share(run: Mapping[str, Any], seconds: float) -> float:
    """The run's one-off seconds (replayed where they were) over
    `seconds`."""
    one_off = run.get("one_off_replayed")
    return (run["one_off_seconds"] if one_off is None else one_off) / seconds


def plan_between(model: keras.Model, target: keras.Model) -> planning.Plan:
    """A plan that cuts `model` to `target`'s widths (a model the same
    layers, by path, make narrower or leave out): the first channels of
    every output are kept, and residual branches `target` lacks are
    removed. Check the result's architecture: a coupling that does not
    keep channel positions (a concatenation) can leave an output wider.

    >>> x = keras.Input((8, 8, 3))
    >>> def net(width):
    ...     h = keras.layers.Conv2D(width, 3, name="c1")(x)
    ...     return keras.Model(x, keras.layers.Conv2D(2, 3, name="c2")(h))
    >>> plan_between(net(8), net(3)).changes()
    [('c1', 8, 3)]
    """
    graph = tf_prunetrain.channel_groups(model)
    widths = {path: len(ids) for path, ids in
              tf_prunetrain.channel_groups(target).layer_outputs().items()}
    kept: set[int] = set()
    dropped: set[int] = set()
    for path, ids in graph.layer_outputs().items():
        roots = graph.roots(ids).tolist()
        width = widths.get(path, 0)
        if width > len(roots):
            raise ValueError(f"plan_between: '{path}' has {len(roots)} "
                             f"channels, the target {width}.")
        kept.update(roots[:width])
        dropped.update(roots[width:])
    keep = np.ones(len(graph.root), bool)
    keep[sorted(dropped - kept)] = False
    keep[coupling.FROZEN] = True
    plan = planning.Plan(graph, keep, set(), {})
    planning.remove_dead_branches(plan)
    return plan


class _Replayed(schedules.Schedule):
    """After epoch 1: the cut to `target` (None: no cut), ending pruning
    when `last` (the lasso goes off)."""

    def __init__(self, target: keras.Model | None, last: bool,
                 gentle: bool) -> None:
        super().__init__(gentle=gentle)
        self.target, self.last = target, last

    def decide(self, epoch: int, context: schedules.Context
               ) -> schedules.Decision | None:
        if epoch != 1:
            return None
        plan = None if self.target is None else plan_between(context.model,
                                                             self.target)
        return schedules.Decision(plan, last=self.last)


class _Stopwatch:
    """The seconds the callbacks between its two marks spend in each hook
    (`hooks[(hook, epoch)]`, one per call), and each train step's seconds
    without them (`steps[epoch]`)."""

    def __init__(self) -> None:
        self.hooks: dict[tuple[str, int], list[float]] = {}
        self.steps: dict[int, list[float]] = {}
        self.epoch, self._start, self._step = 0, 0.0, 0.0

    def around(self, callbacks: list[Any]) -> list[Any]:
        return [_Mark(self, True), *callbacks, _Mark(self, False)]

    def mark(self, opening: bool, hook: str) -> None:
        now = time.perf_counter()
        if opening:
            self._start = now
            if hook == "batch_end":
                self.steps.setdefault(self.epoch, []).append(now - self._step)
        else:
            self.hooks.setdefault((hook, self.epoch), []).append(
                now - self._start)
            if hook == "batch_begin":
                self._step = time.perf_counter()


class _Mark(keras.callbacks.Callback):
    """One of a `_Stopwatch`'s marks: the first callback of the `fit`
    (`opening`) or the last."""

    def __init__(self, watch: _Stopwatch, opening: bool) -> None:
        super().__init__()
        self.watch, self.opening = watch, opening

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.opening:
            self.watch.epoch = epoch
        self.watch.mark(self.opening, "epoch_begin")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.watch.mark(self.opening, "epoch_end")

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        self.watch.mark(self.opening, "batch_begin")

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        self.watch.mark(self.opening, "batch_end")


def _extra(first: float, steady: list[float]) -> float:
    """How much longer `first` took than the median of `steady`, >= 0."""
    return max(0.0, first - statistics.median(steady))


def time_cut(build: Build, key: str, architectures: Mapping[str, str],
             gentle: bool, dataset: Callable[[], Any], steps: int
             ) -> list[float]:
    """One replay of the cut `key` (`transition_key`): `FIELDS`' seconds,
    in order, from a two-epoch `fit` of `steps` steps per epoch (at least
    3) on `dataset()`, the model `build(item)` fresh."""
    steps = max(steps, 3)  # a first step, and two to take a median of
    before, _, after = key.partition(">")
    (start, lasso, _), (end, lasso_after, _) = map(replay_lib.split_item,
                                                   (before, after))
    model = build(before)
    target = None if start == end else keras.models.model_from_json(
        architectures[end])
    cut = tf_prunetrain.Reconfigure(
        _Replayed(target, last=bool(lasso) and not lasso_after,
                  gentle=gentle),
        penalty_ratio=None, round_to=1, verbose=0)
    watch = _Stopwatch()
    model.fit(dataset(), epochs=2, steps_per_epoch=steps, verbose=0,
              shuffle=False,
              callbacks=watch.around([cut, tf_prunetrain.RunLog()]))
    reached = timeline_lib.architecture_key(model)
    runs_lib.fresh_state()
    if reached != end:
        raise ValueError(f"replaying the cut {key}: the model reached "
                         f"architecture {reached}, not {end}.")
    fading, after_cut = (watch.hooks[("batch_end", e)] for e in (0, 1))
    fade_step = statistics.median(fading[1:]) - statistics.median(
        after_cut[1:])
    return [watch.hooks[("epoch_begin", 0)][0],
            _extra(fading[0], fading[1:]) if gentle else 0.0,
            max(0.0, fade_step) if gentle else 0.0,
            watch.hooks[("epoch_end", 0)][0],
            _extra(watch.steps[1][0], watch.steps[1][2:])]


def replay_cuts(build: Build, runs: Iterable[Mapping[str, Any]],
                architectures: Mapping[str, str],
                dataset: Callable[[], Any], rounds: int, steps: int,
                progress: Callable[[str], None] | None = None
                ) -> dict[str, dict[str, float]]:
    """Every cut of `runs` replayed (`time_cut`) in `latency.round_robin`
    rounds: per transition, each of `FIELDS`' median seconds."""
    found = transitions(runs)

    def runner(key: str) -> Callable[[], list[float]]:
        return lambda: time_cut(build, key, architectures, found[key],
                                dataset, steps)

    def said(r: int, seconds: float) -> None:
        if progress:
            progress(f"one-off round {r}/{rounds}: {len(found)} cuts, "
                     f"{seconds:.1f} s")

    times = latency.round_robin({key: runner(key) for key in found}, rounds,
                                said)
    return {key: {field: statistics.median(values[i::len(FIELDS)])
                  for i, field in enumerate(FIELDS)}
            for key, values in times.items()}


def combine(replays: list[Mapping[str, Any]], reference: str, base: float
            ) -> dict[str, dict[str, float]]:
    """The cuts' seconds over several replays, as `replay.combine` does the
    steps': each one's median ratio to its replay's `reference` step
    seconds, times `base` (the reference's combined seconds). Replays
    without cuts are left out.

    >>> combine([{"step_seconds": {"d": 0.1}, "cuts": {"k": {"retrace": 2}}},
    ...          {"step_seconds": {"d": 0.2}, "cuts": {"k": {"retrace": 2}}},
    ...          {"step_seconds": {"d": 0.1}}], "d", 0.1)
    {'k': {'retrace': 1.5}}
    """
    timed = [r for r in replays if r.get("cuts")]
    keys = dict.fromkeys(k for r in timed for k in r["cuts"])
    return {key: {field: base * statistics.median(
        r["cuts"][key][field] / r["step_seconds"][reference]
        for r in timed if key in r["cuts"])
        for field in next(r["cuts"][key] for r in timed if key in r["cuts"])}
        for key in keys}
