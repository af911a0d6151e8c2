"""FLOPs budgets: how much to cut by when, and which channel sets to cut.

`FlopsSchedule` is the budget over epochs: the model's inference FLOPs as a
fraction of the initial model's, falling from 1 to the target along a cubic
curve (most of the cut early, as TFMOT's `PolynomialDecay` does for
sparsity) and reached at `target_epoch`. `plan_to_flops` turns a
`ChannelGraph` and a FLOPs goal into a pruning `Plan` (see `planning`): dead
channel sets go first, then the live ones with the least weight norm per
FLOP they cost — or per second, given a `latency.Roofline`
(`measure_roofline`; `Reconfigure(rank="time")`) — until the goal is met.
`Reconfigure(flops_target=...)` drives both.

FLOPs of a hypothetical cut are estimated from the handler table's counts
of the current model: a layer's forward FLOPs are split over its weights in
proportion to their sizes, and a weight's share falls with the fraction of
each of its channel axes that is kept (convolutions and Dense are bilinear
in their input and output channels). That is exact for the kernels and off
by the bias share for the bias adds (a fraction of a percent on
convolutions); the exact count of the cut model comes from `training_cost`.
Seconds (`estimate_seconds`) follow the same shares: a layer's training
FLOPs (3 × forward) at its measured marginal rate, plus, for every
bandwidth-bound layer call (BatchNorm, activation, merge), its memory
traffic as `cost` counts it, over its output channels.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from tf_prunetrain import cost as cost_lib
from tf_prunetrain import coupling
from tf_prunetrain import latency
from tf_prunetrain import planning

# The schedule's exponent: the remaining cut shrinks as (1 - progress)**3.
POWER = 3


@dataclasses.dataclass(frozen=True)
class FlopsSchedule:
    """Inference FLOPs allowed after each epoch, as a fraction of the start.

    Example:
    >>> from tf_prunetrain.budget import FlopsSchedule
    >>> s = FlopsSchedule(target=0.5, target_epoch=4)
    >>> [round(s.goal(e), 3) for e in range(6)]
    [1.0, 0.711, 0.562, 0.508, 0.5, 0.5]
    """

    target: float
    target_epoch: int

    def goal(self, epochs_done: int) -> float:
        progress = min(max(epochs_done / self.target_epoch, 0.0), 1.0)
        return self.target + (1.0 - self.target) * (1.0 - progress) ** POWER


class _Counts:
    """Kept-channel counts of a plan in progress, with the FLOPs estimate
    and the channel-count floors they imply (see the module docstring)."""

    def __init__(self, graph: coupling.ChannelGraph, keep: np.ndarray,
                 min_channels: int, roofline: latency.Roofline | None = None):
        self.keep = keep
        # Terms: one per (layer call, weight) and, with a roofline, one per
        # bandwidth-bound layer call; the FLOPs share, the seconds share
        # (training FLOPs ≈ 3 × forward, traffic as `cost` counts it) and
        # the channel axes as root arrays.
        self.flops: list[float] = []
        self.seconds: list[float] = []
        self.axes: list[list[np.ndarray]] = []
        for record in graph.records:
            layer = record.view.operation
            if record.handler is None:
                continue
            forward = record.handler.flops(
                layer, [tuple(t.shape) for t in record.view.inputs],
                [tuple(t.shape) for t in record.view.outputs]).forward
            if not forward:
                if roofline is not None:
                    self._traffic_term(graph, record, roofline)
                continue
            weights = list(getattr(layer, "weights", []))
            total = sum(int(np.prod(w.shape)) for w in weights)
            if not total:
                continue
            bound = graph.bindings_of(layer)
            for w in weights:
                share = forward * int(np.prod(w.shape)) / total
                self.flops.append(share)
                self.seconds.append(0.0 if roofline is None else
                                    roofline.seconds(3 * share, 0.0,
                                                     record.view.path))
                self.axes.append([graph.roots(b.ids) for b in bound
                                  if b.weight == w.name])
        # Floors: every output channel set keeps `min_channels` (or all).
        sets: dict[bytes, np.ndarray] = {}
        for record in graph.records:
            if record.handler is not None and record.outs \
                    and record.outs[0] is not None:
                roots = graph.roots(record.outs[0])
                sets.setdefault(roots.tobytes(), roots)
        self.sets = list(sets.values())
        self.floors = [min(min_channels, len(s)) for s in self.sets]
        # Where each root occurs: (term, axis, multiplicity), (set, mult.).
        self.in_terms: dict[int, list[tuple[int, int, int]]] = {}
        for t, axes in enumerate(self.axes):
            for a, roots in enumerate(axes):
                for root, m in zip(*np.unique(roots, return_counts=True)):
                    self.in_terms.setdefault(int(root), []).append(
                        (t, a, int(m)))
        self.in_sets: dict[int, list[tuple[int, int]]] = {}
        for s, roots in enumerate(self.sets):
            for root, m in zip(*np.unique(roots, return_counts=True)):
                self.in_sets.setdefault(int(root), []).append((s, int(m)))
        self.counts = [[int(np.count_nonzero(keep[r])) for r in axes]
                       for axes in self.axes]
        self.set_counts = [int(np.count_nonzero(keep[s])) for s in self.sets]

    def _traffic_term(self, graph: coupling.ChannelGraph,
                      record: coupling.Record,
                      roofline: latency.Roofline) -> None:
        """A bandwidth-bound layer call's seconds, over its output channels
        (none for views, or outputs whose channels are not followed)."""
        if record.handler.view or not record.outs or record.outs[0] is None:
            return
        out = record.view.outputs[0]
        shape = tuple(out.shape)[1:]
        if None in shape:
            return
        traffic = cost_lib.ACCESSES_PER_ACTIVATION * int(np.prod(shape)) \
            * np.dtype(keras.backend.standardize_dtype(out.dtype)).itemsize
        self.flops.append(0.0)
        self.seconds.append(roofline.seconds(0.0, traffic))
        self.axes.append([graph.roots(record.outs[0])])

    def _term(self, t: int, counts: list[int], values: list[float]) -> float:
        value = values[t]
        for c, roots in zip(counts, self.axes[t]):
            value *= c / len(roots)
        return value

    def total(self, values: list[float] | None = None) -> float:
        """Estimated FLOPs (or `self.seconds`) of the kept channels."""
        values = self.flops if values is None else values
        return sum(self._term(t, c, values)
                   for t, c in enumerate(self.counts))

    def marginal(self, root: int, values: list[float] | None = None) -> float:
        """Estimated FLOPs (or `self.seconds`) that removing `root` saves."""
        values = self.flops if values is None else values
        saved = 0.0
        by_term: dict[int, list[int]] = {}
        for t, a, m in self.in_terms.get(root, []):
            by_term.setdefault(t, list(self.counts[t]))[a] -= m
        for t, counts in by_term.items():
            saved += self._term(t, self.counts[t], values) \
                - self._term(t, counts, values)
        return saved

    def removable(self, root: int) -> bool:
        return all(self.set_counts[s] - m >= self.floors[s]
                   for s, m in self.in_sets.get(root, []))

    def remove(self, root: int) -> None:
        self.keep[root] = False
        for t, a, m in self.in_terms.get(root, []):
            self.counts[t][a] -= m
        for s, m in self.in_sets.get(root, []):
            self.set_counts[s] -= m


def estimate_flops(graph: coupling.ChannelGraph, keep: np.ndarray) -> float:
    """Estimated forward FLOPs per example of the model `keep` leaves
    (a bool per root id of `graph`; see the module docstring)."""
    return _Counts(graph, np.asarray(keep, bool).copy(), 1).total()


def measure_roofline(graph: coupling.ChannelGraph, dtype: str | None = None,
                     batch_size: int = 32) -> latency.Roofline:
    """This device's `latency.roofline`, with a measured FLOP rate for every
    FLOP-computing layer call in `graph`, by path (`latency.TimedLayer`:
    copies alike in config and input shape are timed once per process).

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain import budget
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="c")(x)
    >>> graph = tf_prunetrain.channel_groups(keras.Model(x, y))
    >>> r = budget.measure_roofline(graph)
    >>> all_kept = np.ones(len(graph.root), bool)
    >>> budget.estimate_seconds(graph, all_kept, r) > 0  # per example
    True
    """
    layers = []
    for record in graph.records:
        if record.handler is None or not record.view.inputs:
            continue
        layer = record.view.operation
        shapes = [tuple(t.shape) for t in record.view.inputs]
        flops = record.handler.flops(
            layer, shapes, [tuple(t.shape) for t in record.view.outputs])
        if flops.forward:
            layers.append(latency.TimedLayer(record.view.path, layer,
                                             shapes[0], sum(flops),
                                             record.handler.count_key))
    return latency.roofline(dtype, layers, batch_size)


def estimate_seconds(graph: coupling.ChannelGraph, keep: np.ndarray,
                     roofline: latency.Roofline) -> float:
    """Estimated training-step seconds per example of the model `keep`
    leaves, under `roofline`: its convolutions' and Dense layers' training
    FLOPs plus its bandwidth-bound layers' memory traffic. Fixed costs
    (per-op overhead, layers the library cannot follow) are not in it, so
    use differences, not ratios: `Reconfigure` predicts a cut's step time
    as the measured one minus the batch × the estimated seconds it saves."""
    counts = _Counts(graph, np.asarray(keep, bool).copy(), 1, roofline)
    return counts.total(counts.seconds)


def plan_to_flops(graph: coupling.ChannelGraph, goal: float,
                  floor: float = 0.0, threshold: float = 1e-4,
                  round_to: int = 1, min_channels: int = 1,
                  remove_blocks: bool = True,
                  roofline: latency.Roofline | None = None) -> planning.Plan:
    """A plan whose model has at most `goal` forward FLOPs per example.

    Channel sets are removed in order: dead ones (every coupled kernel slice
    `max|w| < threshold`) first, then live ones by the sum of their slices'
    L2 norms per FLOP they cost — or, with a `roofline`, per training-step
    second they cost (`estimate_seconds`: their training FLOPs plus the
    memory traffic of the BatchNorms, activations and merges they pass
    through) — re-ranked as the cut proceeds (the cost of a channel falls
    as its neighbours go). It stops as soon as the goal is
    met, so it undershoots by less than one channel set's FLOPs; then more
    dead sets go while the FLOPs stay at or above `floor`. No output keeps
    fewer than `min_channels` channels; convolution/Dense outputs keep
    multiples of `round_to` (the strongest extra channels): the aim is
    then lowered until the rounded plan meets the goal, and channels are
    given back in steps of `round_to` while it still does. Frozen channels stay. When
    the goal is below what the model can reach, the plan is the smallest
    model it can reach. With `remove_blocks`, a residual branch cut off by
    dead channels (every path into it crosses a tensor whose channels are
    all dead) is removed whole, its constant output folded into an offset
    (`planning.remove_dead_branches`).

    Example:
    >>> import keras, tf_prunetrain
    >>> from tf_prunetrain import budget
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="c2")(h)
    >>> model = keras.Model(x, y)
    >>> graph = tf_prunetrain.channel_groups(model)
    >>> start = tf_prunetrain.forward_flops(model)
    >>> plan = budget.plan_to_flops(graph, 0.5 * start)
    >>> plan.changes()  # 9 of c1's 16 (c2's outputs are the model's: frozen)
    [('c1', 16, 7)]
    """
    max_abs, score = graph.group_strength()
    if not np.all(np.isfinite(score)):
        planning.raise_non_finite(graph)
    dead = max_abs < threshold
    plan = _plan(graph, goal, floor, round_to, min_channels, dead, score,
                 max_abs, roofline)
    if remove_blocks:  # cut off by dead channels: constant, whatever is cut
        alive = ~dead
        alive[coupling.FROZEN] = True
        planning.remove_dead_branches(plan, alive)
    return plan


def _plan(graph: coupling.ChannelGraph, goal: float, floor: float,
          round_to: int, min_channels: int, dead: np.ndarray,
          score: np.ndarray, max_abs: np.ndarray,
          roofline: latency.Roofline | None) -> planning.Plan:
    candidates = np.flatnonzero(np.isfinite(max_abs))
    candidates = candidates[candidates != coupling.FROZEN]
    aim = goal
    for _ in range(16):  # lower the aim until the rounded plan meets the goal
        keep = np.ones(len(graph.root), bool)
        counts = _Counts(graph, keep, min_channels, roofline)
        _cut(counts, candidates, dead, score, aim, floor, roofline is not None)
        plan = planning.Plan(graph, keep, set(), {})
        planning.restore_minimum(plan, score, round_to, min_channels)
        if round_to == 1 or aim <= 0:
            return plan
        if estimate_flops(graph, plan.keep) <= goal:
            return _fill(plan, score, goal, round_to, min_channels)
        aim -= estimate_flops(graph, plan.keep) - goal
    return plan


def _fill(plan: planning.Plan, score: np.ndarray, goal: float, round_to: int,
          min_channels: int) -> planning.Plan:
    """Rounding moves in steps of `round_to` channels, so a rounded plan can
    fall well below the goal: give channels back, `round_to` of one output
    at a time (its strongest removed ones), taking each time the step that
    comes closest to the goal without passing it."""
    graph = plan.graph
    outputs = {}
    for r in graph.records:
        if r.handler is not None and r.handler.count_key is not None \
                and r.outs and r.outs[0] is not None:
            roots = graph.roots(r.outs[0])
            outputs.setdefault(roots.tobytes(), roots)
    flops = estimate_flops(graph, plan.keep)
    while True:
        best = None
        for roots in outputs.values():
            removed = np.unique(roots[~plan.keep[roots]])
            if not removed.size:
                continue
            back = removed[np.argsort(-score[removed], kind="stable")]
            trial = planning.Plan(graph, plan.keep.copy(), set(), {})
            trial.keep[back[:round_to]] = True
            planning.restore_minimum(trial, score, round_to, min_channels)
            trial_flops = estimate_flops(graph, trial.keep)
            if flops < trial_flops <= goal and (
                    best is None or trial_flops > best[1]):
                best = (trial, trial_flops)
        if best is None:
            return plan
        plan, flops = best


def _cut(counts: _Counts, candidates: np.ndarray, dead: np.ndarray,
         score: np.ndarray, goal: float, floor: float, by_time: bool) -> None:
    total = counts.total()
    while total > goal:
        left = [int(r) for r in candidates if counts.keep[r]
                and counts.removable(int(r))]
        if not left:
            return
        costs = {r: counts.marginal(r, counts.seconds if by_time else None)
                 for r in left}
        order = sorted(left, key=lambda r: (
            not dead[r], score[r] / costs[r] if costs[r] > 0 else math.inf))
        gap, removed = total - goal, 0.0
        for root in order:
            if total <= goal or removed >= gap / 2:
                break  # re-rank: costs changed
            if not counts.removable(root):
                continue
            saved = counts.marginal(root)
            counts.remove(root)
            total -= saved
            removed += saved
        if removed == 0:
            return
    for root in candidates:  # dead sets left over, down to the floor
        root = int(root)
        if dead[root] and counts.keep[root] and counts.removable(root):
            saved = counts.marginal(root)
            if total - saved >= floor:
                counts.remove(root)
                total -= saved


def reachable_flops(graph: coupling.ChannelGraph, min_channels: int = 1,
                    round_to: int = 1) -> float:
    """Estimated forward FLOPs of the smallest model pruning can reach
    (frozen channels and layers the library cannot follow stay)."""
    plan = plan_to_flops(graph, 0.0, min_channels=min_channels,
                         round_to=round_to)
    return estimate_flops(graph, plan.keep)

