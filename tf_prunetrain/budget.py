"""Plans to a FLOPs goal: which channel sets to cut to reach it.

`plan_to_flops` turns a `ChannelGraph` and a FLOPs goal into a pruning
`Plan` (see `planning`). A `Ranking` says which channels go: `ThinWidths`
(the default: the widths of a uniformly thinner network, the importance
choosing which channels of each layer) or `NormPerFlop` (0.2's: dead sets
first, then the least importance per FLOP; it measured worse, BENCHMARKS.md);
`RANKINGS` has both by name.
A ranking gets the graph, the goal, the `importance.Scores` and the
`planning.Constraints`, which do all the rounding. The schedules say how
much to cut by when.

FLOPs of a hypothetical cut are estimated from the handler table's counts
of the current model: a layer's forward FLOPs are split over its weights in
proportion to their sizes, and a weight's share falls with the fraction of
each of its channel axes that is kept (convolutions and Dense are bilinear
in their input and output channels). That is exact for the kernels and off
by the bias share for the bias adds (a fraction of a percent on
convolutions); the exact count of the cut model comes from `training_cost`.
"""

from __future__ import annotations

import math

import numpy as np

from tf_prunetrain import coupling
from tf_prunetrain import importance as importance_lib
from tf_prunetrain import planning

class _Counts:
    """Kept-channel counts of a plan in progress, with the FLOPs estimate
    and the channel-count floors they imply (see the module docstring)."""

    def __init__(self, graph: coupling.ChannelGraph, keep: np.ndarray,
                 min_channels: int):
        self.keep = keep
        # Terms: one per (layer call, weight): its FLOPs share and its
        # channel axes as root arrays.
        self.flops: list[float] = []
        self.axes: list[list[np.ndarray]] = []
        for record in graph.records:
            layer = record.view.operation
            if record.handler is None:
                continue
            forward = record.handler.flops(
                layer, [tuple(t.shape) for t in record.view.inputs],
                [tuple(t.shape) for t in record.view.outputs]).forward
            if not forward:
                continue
            weights = list(getattr(layer, "weights", []))
            total = sum(int(np.prod(w.shape)) for w in weights)
            if not total:
                continue
            bound = graph.bindings_of(layer)
            for w in weights:
                share = forward * int(np.prod(w.shape)) / total
                self.flops.append(share)
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

    def _term(self, t: int, counts: list[int]) -> float:
        value = self.flops[t]
        for c, roots in zip(counts, self.axes[t]):
            value *= c / len(roots)
        return value

    def total(self) -> float:
        """Estimated FLOPs of the kept channels."""
        return sum(self._term(t, c) for t, c in enumerate(self.counts))

    def marginal(self, root: int) -> float:
        """Estimated FLOPs that removing `root` saves."""
        saved = 0.0
        by_term: dict[int, list[int]] = {}
        for t, a, m in self.in_terms.get(root, []):
            by_term.setdefault(t, list(self.counts[t]))[a] -= m
        for t, counts in by_term.items():
            saved += self._term(t, self.counts[t]) - self._term(t, counts)
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


def plan_to_flops(graph: coupling.ChannelGraph, goal: float,
                  floor: float = 0.0, threshold: float = 1e-4,
                  round_to: int = 1, min_channels: int = 1,
                  remove_blocks: bool = True,
                  ranking: Ranking | None = None,
                  importance: importance_lib.Importance | None = None
                  ) -> planning.Plan:
    """A plan whose model has about `goal` forward FLOPs per example.

    `ranking` chooses the channels (default `ThinWidths()`: uniform widths,
    nearest the goal; `NormPerFlop()`: at or below it), scoring them with
    `importance` (default `importance.GroupNorm()`). No output keeps fewer
    than `min_channels` channels; convolution/Dense outputs keep multiples
    of `round_to` (`planning.Constraints`). Dead channel sets (every
    coupled kernel slice `max|w| < threshold`) go first; no extra dead set
    goes below `floor` FLOPs. Frozen channels stay. When the goal is below
    what the model can reach, the plan is the smallest model it can reach.
    With `remove_blocks`, a residual branch cut off by dead channels (every
    path into it crosses a tensor whose channels are all dead) is removed
    whole, its constant output folded into an offset
    (`planning.remove_dead_branches`).

    Example:
    >>> import keras, tf_prunetrain
    >>> from tf_prunetrain import budget
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="c2")(h)
    >>> model = keras.Model(x, y)
    >>> graph = tf_prunetrain.channel_groups(model)
    >>> start = tf_prunetrain.cost.forward_flops(model)
    >>> plan = budget.plan_to_flops(graph, 0.5 * start)
    >>> plan.changes()  # half of c1 (c2's outputs are the model's: frozen)
    [('c1', 16, 8)]
    """
    constraints = planning.Constraints(round_to, min_channels, floor,
                                       threshold)
    scores = (importance or importance_lib.GroupNorm())(graph)
    scores.check_finite(graph)
    plan = (ranking or ThinWidths()).plan(graph, goal, scores, constraints)
    if remove_blocks:  # cut off by dead channels: constant, whatever is cut
        alive = ~scores.dead(threshold)
        alive[coupling.FROZEN] = True
        planning.remove_dead_branches(plan, alive)
    return plan


def _plan(graph: coupling.ChannelGraph, goal: float,
          scores: importance_lib.Scores,
          constraints: planning.Constraints) -> planning.Plan:
    candidates = np.flatnonzero(np.isfinite(scores.max_abs))
    candidates = candidates[candidates != coupling.FROZEN]
    dead = scores.dead(constraints.threshold)
    aim = goal
    for _ in range(16):  # lower the aim until the rounded plan meets the goal
        keep = np.ones(len(graph.root), bool)
        counts = _Counts(graph, keep, constraints.min_channels)
        _cut(counts, candidates, dead, scores.score, aim, constraints.floor)
        plan = planning.Plan(graph, keep, set(), {})
        constraints.enforce(plan, scores)
        if constraints.round_to == 1 or aim <= 0:
            return plan
        if estimate_flops(graph, plan.keep) <= goal:
            return _fill(plan, scores, goal, constraints)
        aim -= estimate_flops(graph, plan.keep) - goal
    return plan


def _fill(plan: planning.Plan, scores: importance_lib.Scores, goal: float,
          constraints: planning.Constraints) -> planning.Plan:
    """Rounding moves in steps of `round_to` channels, so a rounded plan can
    fall well below the goal: give channels back, `round_to` of one output
    at a time (its strongest removed ones), taking each time the step that
    comes closest to the goal without passing it."""
    graph = plan.graph
    outputs = {roots.tobytes(): roots for roots in _outputs(graph).values()}
    flops = estimate_flops(graph, plan.keep)
    while True:
        best = None
        for roots in outputs.values():
            removed = np.unique(roots[~plan.keep[roots]])
            if not removed.size:
                continue
            back = removed[np.argsort(-scores.score[removed],
                                      kind="stable")]
            trial = planning.Plan(graph, plan.keep.copy(), set(), {})
            trial.keep[back[:constraints.round_to]] = True
            constraints.enforce(trial, scores)
            trial_flops = estimate_flops(graph, trial.keep)
            if flops < trial_flops <= goal and (
                    best is None or trial_flops > best[1]):
                best = (trial, trial_flops)
        if best is None:
            return plan
        plan, flops = best


class Ranking:
    """Which channels a cut to a FLOPs goal removes (`ranking=` of a
    schedule or of `plan_to_flops`).

    A ranking turns a goal into a `planning.Plan` (`plan`). `start` is
    called with the model when `fit` starts (not on resume);
    `get_state`/`set_state` carry what it remembers through checkpoints."""

    def start(self, graph: coupling.ChannelGraph) -> None:
        """Called by the schedule with the model at the start of `fit`."""

    def plan(self, graph: coupling.ChannelGraph, goal: float,
             scores: importance_lib.Scores,
             constraints: planning.Constraints) -> planning.Plan:
        """The plan to about `goal` forward FLOPs per example of `graph`'s
        model, by `scores`, obeying `constraints` (`constraints.enforce`
        rounds a plan)."""
        raise NotImplementedError(
            f"{type(self).__name__}.plan: a Ranking subclass must implement "
            "plan(graph, goal, scores, constraints).")

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        """Restores what `get_state` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NormPerFlop(Ranking):
    """Cuts where a channel is weak for its price (0.2's cut; it measured
    worse than `ThinWidths`, BENCHMARKS.md "Issue 31").

    Dead channel sets go first, wherever they are, and more of them after
    the goal, down to the floor; then live ones with the least weight norm
    per FLOP they cost. Costs change as neighbours go, so it re-ranks after
    every half of the remaining gap. With `round_to`, the aim is lowered
    until the rounded plan meets the goal, and channels are given back in
    steps of `round_to` while it still does."""

    def plan(self, graph: coupling.ChannelGraph, goal: float,
             scores: importance_lib.Scores,
             constraints: planning.Constraints) -> planning.Plan:
        return _plan(graph, goal, scores, constraints)


class ThinWidths(Ranking):
    """Cuts to the widths of a uniformly thinner network; the norms only
    choose *which* channels of a layer go (the weakest: dead ones first).

    Every convolution/Dense output keeps `m` times its width at the start
    of `fit` (`start`), rounded to the nearest multiple of `round_to` (at
    least `round_to` or `min_channels`, at most its width now), with one
    multiplier `m` for the whole model: the one whose estimated FLOPs come
    nearest the goal. So the model may end up to one rounding step above
    the goal (ResNet-20 at 0.25 with `round_to=8`: widths 8/16/32, 0.251
    of its FLOPs) — unlike `NormPerFlop`, which stays at or below it.
    FLOPs do not enter the rank, so early, high-resolution layers are not
    cut harder for costing more. Used without `start`, the widths of the
    first model it plans for are the start widths.

    Example:
    >>> import keras, tf_prunetrain
    >>> from tf_prunetrain import budget
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    >>> h = keras.layers.Conv2D(32, 3, padding="same", name="c2")(h)
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="c3")(h)
    >>> model = keras.Model(x, y)
    >>> graph = tf_prunetrain.channel_groups(model)
    >>> start = tf_prunetrain.cost.forward_flops(model)
    >>> plan = budget.plan_to_flops(graph, 0.25 * start, round_to=8,
    ...                             ranking=budget.ThinWidths())
    >>> plan.changes()  # half of every width
    [('c1', 16, 8), ('c2', 32, 16)]
    """

    def __init__(self) -> None:
        self.widths: dict[str, int] | None = None

    def start(self, graph: coupling.ChannelGraph) -> None:
        self.widths = {path: len(roots)
                       for path, roots in _outputs(graph).items()}

    def plan(self, graph: coupling.ChannelGraph, goal: float,
             scores: importance_lib.Scores,
             constraints: planning.Constraints) -> planning.Plan:
        if self.widths is None:
            self.start(graph)
        outputs = prunable_outputs(graph, scores)
        # One candidate multiplier between each pair of points where a
        # width changes.
        starts = {self.widths.get(path, len(r)) for path, r in outputs.items()}
        points = sorted({0.0, 1.0} | {m for w0 in starts
                                      for m in constraints.breaks(w0)})
        candidates = [(a + b) / 2 for a, b in zip(points, points[1:])] + [1.0]

        def thin(i: int) -> tuple[planning.Plan, float]:
            plan = self.thinned(graph, outputs, candidates[i], scores,
                                constraints)
            return plan, estimate_flops(graph, plan.keep)

        # FLOPs grow with m: bisect for the first candidate at or above the
        # goal, then take it or the one below, whichever is nearer.
        low, high = 0, len(candidates) - 1
        top = thin(high)
        if top[1] <= goal:
            return top[0]
        while high - low > 1:
            mid = (low + high) // 2
            if thin(mid)[1] >= goal:
                high = mid
            else:
                low = mid
        return nearer(thin(low), thin(high), goal)

    def thinned(self, graph: coupling.ChannelGraph,
                outputs: dict[str, np.ndarray], m: float,
                scores: importance_lib.Scores,
                constraints: planning.Constraints,
                factors: dict[str, float] | None = None) -> planning.Plan:
        """The plan keeping `m` times each of `outputs`' start widths (times
        its `factors` entry, if any; rounded by `constraints`), the
        highest-scored channels of each."""
        keep = np.ones(len(graph.root), bool)
        chosen = np.zeros(len(graph.root), bool)
        for path, roots in outputs.items():
            roots = np.unique(roots)
            scale = m * (factors or {}).get(path, 1.0)
            width = constraints.width(
                scale * self.widths.get(path, len(roots)), len(roots))
            order = roots[np.argsort(-scores.score[roots], kind="stable")]
            keep[roots] = False
            chosen[order[:width]] = True
        keep |= chosen  # a root two outputs share stays if either keeps it
        plan = planning.Plan(graph, keep, set(), {})
        constraints.enforce(plan, scores)
        return plan

    def get_state(self) -> dict:
        return {"widths": self.widths}

    def set_state(self, state: dict) -> None:
        self.widths = state.get("widths", self.widths)


def nearer(below: tuple[planning.Plan, float],
           above: tuple[planning.Plan, float], goal: float) -> planning.Plan:
    """Of two `(plan, estimated FLOPs)` around `goal`, the plan nearer it
    (the lower one on a tie)."""
    return below[0] if abs(below[1] - goal) <= abs(above[1] - goal) \
        else above[0]


# The built-in rankings by name (the recipes' --ranking values).
RANKINGS: dict[str, type[Ranking]] = {"thin_widths": ThinWidths,
                                      "norm_per_flop": NormPerFlop}


def _outputs(graph: coupling.ChannelGraph) -> dict[str, np.ndarray]:
    """Path -> root ids of every convolution/Dense output."""
    outputs: dict[str, np.ndarray] = {}
    for r in graph.records:
        if r.handler is not None and r.handler.count_key is not None \
                and r.outs and r.outs[0] is not None:
            outputs.setdefault(r.view.path, graph.roots(r.outs[0]))
    return outputs


def prunable_outputs(graph: coupling.ChannelGraph,
                      scores: importance_lib.Scores) -> dict[str, np.ndarray]:
    """`_outputs` without those holding frozen or unjudged channels."""
    return {path: roots for path, roots in _outputs(graph).items()
            if np.all(np.isfinite(scores.max_abs[roots]))
            and not np.any(roots == coupling.FROZEN)}


def _cut(counts: _Counts, candidates: np.ndarray, dead: np.ndarray,
         score: np.ndarray, goal: float, floor: float) -> None:
    total = counts.total()
    while total > goal:
        left = [int(r) for r in candidates if counts.keep[r]
                and counts.removable(int(r))]
        if not left:
            return
        costs = {r: counts.marginal(r) for r in left}
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
    """Estimated forward FLOPs of the smallest model pruning can reach:
    every prunable convolution/Dense output at the fewest channels the
    constraints allow, and the residual branches dead channels cut off
    removed (frozen channels and layers the library cannot follow stay)."""
    constraints = planning.Constraints(round_to, min_channels)
    scores = importance_lib.GroupNorm()(graph)
    thin = ThinWidths()
    thin.start(graph)
    plan = thin.thinned(graph, prunable_outputs(graph, scores), 0.0, scores,
                        constraints)
    alive = ~scores.dead(constraints.threshold)
    alive[coupling.FROZEN] = True
    planning.remove_dead_branches(plan, alive)
    return estimate_flops(graph, plan.keep)
