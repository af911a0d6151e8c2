"""The pruning decision: which channel groups and residual branches go.

`plan_pruning` turns a `ChannelGraph` and the current weights into a `Plan`:
which channel groups are kept and which residual branches are removed. A
`Plan` is data; two engines apply it (with the slicing in `slicing`):
`surgery` rebuilds a smaller copy of the model (`surgery.rebuild`,
`prune_channels`), and `inplace` shrinks the live model during `fit`
(`reconfigure_in_place`). `budget.plan_to_flops` makes plans to a FLOPs
goal.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import coupling
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers
from tf_prunetrain import importance as importance_lib

# A removed branch's output is folded into an offset unless it is this small.
_ZERO_OFFSET = 1e-7


@dataclasses.dataclass
class MergeEdit:
    """A residual merge that loses branches: kept input positions, and the
    constant the removed branches added (None when it is zero)."""

    kept: list[int]
    offset: np.ndarray | None


@dataclasses.dataclass
class Plan:
    """Which channels and branches a pruning keeps (see `plan_pruning`)."""

    graph: coupling.ChannelGraph
    keep: np.ndarray  # bool per root id
    removed: set[int]  # id() of removed nodes
    merges: dict[int, MergeEdit]

    @classmethod
    def keep_all(cls, graph: coupling.ChannelGraph) -> "Plan":
        """A plan that removes nothing (rebuilds the model as it is)."""
        return cls(graph, np.ones(len(graph.root), bool), set(), {})

    def mask(self, ids: handlers.Ids) -> handlers.Mask:
        return None if ids is None else self.keep[self.graph.roots(ids)]

    def changes(self) -> list[tuple[str, int, int]]:
        """(layer path, channels before, channels after) for every layer
        output whose channel count changes, and removed layers (after 0)."""
        rows = []
        for r in self.graph.records:
            if id(r.view.node) in self.removed:
                rows.append((r.view.path, _count(r.outs), 0))
            elif r.handler is not None and r.outs and r.outs[0] is not None:
                after = int(np.count_nonzero(self.mask(r.outs[0])))
                if after != len(r.outs[0]):
                    rows.append((r.view.path, len(r.outs[0]), after))
        return rows


@dataclasses.dataclass(frozen=True)
class Constraints:
    """The width rules every plan obeys, applied in one place.

    Convolution/Dense outputs keep a multiple of `round_to` channels (or all
    of them), every output at least `min_channels` (or all). `floor`: a
    FLOPs-budget cut removes no extra dead channels below this many forward
    FLOPs per example (0: no floor). A group whose judged slices are all
    below `threshold` in absolute value is dead.

    Example:
    >>> from tf_prunetrain.planning import Constraints
    >>> c = Constraints(round_to=8)
    >>> c.width(0.3 * 64, 64), c.width(1.0, 64), c.width(70.0, 64)
    (16, 8, 64)
    """

    round_to: int = 1
    min_channels: int = 1
    floor: float = 0.0
    threshold: float = 1e-4

    def __post_init__(self) -> None:
        _checks.positive_int(self.round_to, "round_to", "Constraints")
        _checks.positive_int(self.min_channels, "min_channels", "Constraints")
        _checks.non_negative(self.threshold, "threshold", "Constraints")

    def width(self, wanted: float, available: int) -> int:
        """The allowed width nearest `wanted` channels of an output that has
        `available`: the nearest multiple of `round_to`, at least
        `round_to` and `min_channels`, at most `available`."""
        width = self.round_to * math.floor(wanted / self.round_to + 0.5)
        return min(available, max(width, self.round_to, self.min_channels))

    def breaks(self, start: int) -> list[float]:
        """The multipliers m in (0, 1) where `width(m * start, ...)`
        changes: where m·start crosses a half-multiple of `round_to`.

        >>> Constraints(round_to=8).breaks(32)
        [0.125, 0.375, 0.625, 0.875]
        """
        return [(j + 0.5) * self.round_to / start
                for j in range(start // self.round_to + 1)
                if (j + 0.5) * self.round_to < start]

    def enforce(self, plan: "Plan", scores: importance_lib.Scores) -> None:
        """Keeps channels back (the highest `scores` first) until every
        output of `plan` obeys the rules; a plan that does changes not."""
        roots = plan.graph.roots
        sets = [
            (roots(r.outs[0]), r.handler.count_key is not None)
            for r in plan.graph.records
            if id(r.view.node) not in plan.removed and r.handler is not None
            and r.outs and r.outs[0] is not None
        ]
        changed = True
        while changed:
            changed = False
            for ids, rounded in sets:
                kept = int(np.count_nonzero(plan.keep[ids]))
                target = max(kept, min(self.min_channels, len(ids)))
                if rounded:
                    target = min(math.ceil(target / self.round_to)
                                 * self.round_to, len(ids))
                candidates = np.unique(ids[~plan.keep[ids]])
                for root in candidates[np.argsort(-scores.score[candidates],
                                                  kind="stable")]:
                    if kept >= target:
                        break
                    plan.keep[root] = True
                    kept += int(np.count_nonzero(ids == root))
                    changed = True

    def hold(self, plan: "Plan", model: Any, schedule: Any) -> None:
        """Holds `schedule`'s `plan` for `model` to the rules (keeping back
        the channels its importance ranks highest), warning when that
        changes it; refuses a plan made for another model."""
        if plan.graph.model is not model:
            raise ValueError(
                f"Reconfigure: {schedule!r} planned a cut of model "
                f"'{plan.graph.model.name}', not of the model being trained "
                f"('{model.name}'): plan with context.graph.")
        before = plan.keep.copy()
        self.enforce(plan, schedule.importance(plan.graph))
        if not np.array_equal(before, plan.keep):
            warnings.warn(
                f"Reconfigure: {type(schedule).__name__}'s plan broke "
                f"round_to={self.round_to} or min_channels="
                f"{self.min_channels}; the strongest removed channels were "
                "kept back to meet them.", stacklevel=4)


def _count(outs: list) -> int:
    return len(outs[0]) if outs and outs[0] is not None else 0


def plan_pruning(
    graph: coupling.ChannelGraph,
    threshold: float = 1e-4,
    keep: Mapping[str, Any] | None = None,
    round_to: int = 1,
    min_channels: int = 1,
    remove_blocks: bool = True,
    importance: importance_lib.Importance | None = None,
) -> Plan:
    """Decides which channel groups and residual branches to remove.

    A group is removed when every kernel slice in it has `max|w| < threshold`
    (or when `keep` says so). A residual branch whose internal tensors lose
    every channel is removed whole; its constant output, if not zero, is folded
    into a `Rescaling` offset so the function is unchanged. Any other tensor
    keeps at least `min_channels` channels, and convolution/Dense outputs keep
    a multiple of `round_to` (the extra channels `importance` ranks highest
    stay; default `importance.GroupNorm()`). With `remove_blocks=False` dead
    branches are kept at `min_channels` instead.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(6, 3, name="c1")(x)
    >>> m = keras.Model(x, keras.layers.Conv2D(2, 3, name="c2")(h))
    >>> tf_prunetrain.coupling.zero_channels(m, {"c1": [0, 1, 2]})
    3
    >>> plan = tf_prunetrain.planning.plan_pruning(tf_prunetrain.channel_groups(m),
    ...                                   round_to=4)
    >>> plan.changes()  # 3 live channels, rounded up to a multiple of 4
    [('c1', 6, 4)]
    """
    constraints = Constraints(round_to, min_channels, threshold=threshold)
    scores = (importance or importance_lib.GroupNorm())(graph)
    scores.check_finite(graph)
    alive = ~scores.dead(constraints.threshold)
    if keep is not None:
        _apply_explicit(graph, keep, alive)
    alive[0] = True  # frozen channels
    plan = Plan(graph, alive, set(), {})
    if remove_blocks:
        remove_dead_branches(plan)
    constraints.enforce(plan, scores)
    return plan


def removed_norm(plan: Plan) -> float | None:
    """How live the channels `plan` removes are: each one's group norm
    (`importance.GroupNorm`) over the mean of those its layer
    keeps, averaged. 0 when it removes only zeros, about 1 when they are as
    strong as the rest (None when it removes none)."""
    scores = importance_lib.GroupNorm()(plan.graph)
    score, judged = scores.score, np.isfinite(scores.max_abs)
    judged[coupling.FROZEN] = False
    ratios: dict[int, float] = {}
    for ids in plan.graph.layer_outputs().values():
        roots = np.unique(plan.graph.roots(ids))
        roots = roots[judged[roots]]
        kept = score[roots[plan.keep[roots]]]
        if not kept.size or kept.mean() <= 0:
            continue
        for root in roots[~plan.keep[roots]].tolist():
            ratios.setdefault(root, float(score[root] / kept.mean()))
    return float(np.mean(list(ratios.values()))) if ratios else None


def _apply_explicit(graph: coupling.ChannelGraph, keep: Mapping[str, Any],
                    alive: np.ndarray) -> None:
    outputs = graph.layer_outputs()
    decided: dict[int, tuple[bool, str]] = {}
    for path, mask in keep.items():
        if path not in outputs:
            raise ValueError(
                f"keep: no layer '{path}' with a channel output; known layers: "
                f"{', '.join(sorted(outputs))}.")
        ids, mask = outputs[path], np.asarray(mask, dtype=bool)
        if mask.shape != ids.shape:
            raise ValueError(f"keep['{path}'] has shape {mask.shape}; the "
                             f"layer has {len(ids)} output channels.")
        for i, (root, k) in enumerate(zip(graph.roots(ids).tolist(),
                                          mask.tolist())):
            if root == 0 and not k:
                raise ValueError(
                    f"keep['{path}'][{i}] is False, but that channel is frozen "
                    "(it reaches a model input/output or a layer whose channels "
                    "cannot be removed).")
            if root in decided and decided[root][0] != k:
                raise ValueError(
                    f"keep['{path}'][{i}] contradicts keep['{decided[root][1]}'] "
                    "for the same coupled channel.")
            decided[root] = (k, path)
    for root, (k, _) in decided.items():
        alive[root] = k


def remove_dead_branches(plan: Plan, alive: np.ndarray | None = None) -> None:
    """Removes from `plan` every residual branch that `alive` (a bool per
    root id; default `plan.keep`) cuts off from the model's inputs and whose
    output is a constant (folded into the merge's offset). The channels
    only the removed branches used leave `plan.keep`."""
    alive = plan.keep if alive is None else alive
    _remove_dead_branches(plan, alive)
    roots = plan.graph.roots
    used: dict[bool, set[int]] = {True: set(), False: set()}
    for r in plan.graph.records:
        ids = [i for i in (*r.ins, *r.outs) if i is not None]
        used[id(r.view.node) in plan.removed].update(
            int(root) for i in ids for root in roots(i))
    gone = sorted(used[True] - used[False] - {coupling.FROZEN})
    plan.keep[gone] = False


def _remove_dead_branches(plan: Plan, alive: np.ndarray) -> None:
    by_node = {id(r.view.node): r for r in plan.graph.records}
    for r in plan.graph.records:
        if r.handler is None or not r.handler.branch_merge:
            continue
        branches = _branches(r.view)
        kept = list(range(len(branches)))
        offset = 0.0
        for pos, branch in enumerate(branches):
            if len(kept) == 1 or not _cut_off(alive, plan.graph, by_node,
                                              branch, r.view.inputs[pos]):
                continue
            constant = _constant_output(r.view.owner, r.view.inputs[pos])
            if constant is None:
                continue
            kept.remove(pos)
            offset = offset + constant
            plan.removed |= branch
        if len(kept) < len(branches):
            offset = np.asarray(offset)
            plan.merges[id(r.view.node)] = MergeEdit(
                kept, offset if np.max(np.abs(offset)) > _ZERO_OFFSET else None)


def _cut_off(alive: np.ndarray, graph: coupling.ChannelGraph, by_node: dict,
             branch: set[int], tensor: Any) -> bool:
    """True when `tensor` (a branch output) cannot depend on the model's
    inputs: every path into the branch crosses a tensor inside it whose
    channels are all removed (dead channels carry constants)."""
    memo: dict[int, bool] = {}

    def depends(t: Any) -> bool:
        if id(t) not in memo:
            node = graph_lib.producer(t)
            if id(node) not in branch:
                memo[id(t)] = True
            else:
                index = next(i for i, o in enumerate(node.outputs) if o is t)
                ids = by_node[id(node)].outs[index]
                memo[id(t)] = (ids is None
                               or bool(np.any(alive[graph.roots(ids)]))) \
                    and any(depends(u) for u in node.input_tensors)
        return memo[id(t)]

    return bool(branch) and not depends(tensor)


def _branches(view: graph_lib.NodeView) -> list[set[int]]:
    """For each input of a merge node: the nodes that feed only that input
    (its residual branch), or an empty set when that input has no branch of
    its own that could be removed cleanly (single entry, single exit)."""
    owner = view.owner
    consumers: dict[int, list[Any]] = {}
    for v in graph_lib.nodes(owner):
        for t in v.inputs:
            consumers.setdefault(id(t), []).append(v.node)
    outputs = {id(t) for t in owner.outputs}

    def ancestors(tensor: Any) -> set[int]:
        seen, stack, found = set(), [tensor], {}
        while stack:
            node = graph_lib.producer(stack.pop())
            if id(node) in seen or node.is_input:
                continue
            seen.add(id(node))
            found[id(node)] = node
            stack.extend(node.input_tensors)
        return found

    anc = [ancestors(t) for t in view.inputs]
    result = []
    for i, mine in enumerate(anc):
        others = set().union(*(set(a) for j, a in enumerate(anc) if j != i))
        branch = {n: node for n, node in mine.items() if n not in others}
        clean = all(
            id(t) not in outputs and all(
                id(c) in branch or c is view.node
                for c in consumers.get(id(t), []))
            for node in branch.values() for t in node.outputs)
        result.append(set(branch) if clean else set())
    return result


def _constant_output(owner: Any, tensor: Any) -> np.ndarray | None:
    """The per-channel value of an input-independent `tensor`, or None when
    it varies over positions or with the input size (then the branch stays).
    Dynamic input dimensions are probed at two sizes."""
    probe = keras.Model(owner.inputs, tensor)
    dynamic = any(None in t.shape[1:] for t in owner.inputs)
    values = [
        np.asarray(probe.predict(
            [np.zeros([1] + [d or size for d in t.shape[1:]], t.dtype)
             for t in owner.inputs], verbose=0)).reshape(-1, tensor.shape[-1])
        for size in ((24, 40) if dynamic else (0,))
    ]
    flat = np.concatenate(values)
    if np.max(np.ptp(flat, axis=0)) > 1e-6 * (1.0 + np.max(np.abs(flat))):
        return None
    return flat.mean(axis=0)
