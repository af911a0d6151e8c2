"""Importance: how much each channel group matters, as an injectable object.

An `Importance` scores every group (root id) of a `coupling.ChannelGraph`
from the model's weights now. Rankings (`budget.ThinWidths`,
`budget.NormPerFlop`), `planning.plan_pruning` and the constraints'
rounding (`planning.Constraints.enforce`) keep the groups with the highest
scores; a schedule takes one as `importance=` (default `GroupNorm()`), as
Torch-Pruning's pruners take `importance=`.

Whether a group is *dead* is not a matter of importance but of its values:
`Scores.max_abs` (the largest |w| over the group's judged slices) is below
the threshold. Every `Importance` reports it beside its scores.

Write your own by subclassing `Importance` and implementing `score`:

>>> import keras, numpy as np, tf_prunetrain
>>> from tf_prunetrain import importance
>>> class Fewest(importance.Importance):
...     '''Keeps the lowest-numbered groups (a toy, for illustration).'''
...     def score(self, graph):
...         return -np.arange(len(graph.root), dtype=np.float64)
>>> x = keras.Input((8, 8, 3))
>>> h = keras.layers.Conv2D(4, 3, name="c1")(x)
>>> graph = tf_prunetrain.channel_groups(
...     keras.Model(x, keras.layers.Conv2D(2, 3, name="c2")(h)))
>>> scores = Fewest()(graph)
>>> bool(scores.score[1] > scores.score[2])
True
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_prunetrain import coupling


@dataclasses.dataclass
class Scores:
    """Per root id of a graph: `score` (higher: more important) and
    `max_abs`, the largest |w| over the group's judged weight slices
    (+inf for a group with none: it is never dead)."""

    score: np.ndarray
    max_abs: np.ndarray

    def dead(self, threshold: float) -> np.ndarray:
        """Whether each group's judged slices are all below `threshold`."""
        return self.max_abs < threshold

    def check_finite(self, graph: coupling.ChannelGraph) -> None:
        """Raises the ValueError for kernels with NaN/inf (training
        diverged): no channel can be judged then."""
        if np.all(np.isfinite(self.score)):
            return
        bad = sorted({f"{b.layer.name}/{b.weight}"
                      for b in graph.bindings.values()
                      if b.judge and not np.all(np.isfinite(
                          coupling.weight(b.layer, b.weight).numpy()))})
        raise ValueError(
            f"tf_prunetrain: NaN or infinite values in {', '.join(bad)}: "
            "training has diverged, so no channel can be judged; nothing was "
            "pruned. Lower the learning rate or λ and resume from a "
            "checkpoint.")


def _slices(graph: coupling.ChannelGraph):
    """(root ids, |w| as rows per channel) of every judged weight axis."""
    for b in graph.bindings.values():
        if not b.judge:
            continue
        w = np.abs(np.asarray(coupling.weight(b.layer, b.weight).numpy(),
                              dtype=np.float64))
        yield graph.roots(b.ids), \
            np.moveaxis(w, b.axis, 0).reshape(w.shape[b.axis], -1)


def max_abs(graph: coupling.ChannelGraph) -> np.ndarray:
    """Per root id: the largest |w| over its judged slices (+inf: none)."""
    out = np.full(len(graph.root), -np.inf)
    for roots, rows in _slices(graph):
        np.maximum.at(out, roots, rows.max(axis=1))
    out[out == -np.inf] = np.inf
    return out


class Importance:
    """Scores channel groups; subclasses implement `score(graph)`.

    Calling it gives the `Scores` (the scores and `max_abs`)."""

    def score(self, graph: coupling.ChannelGraph) -> np.ndarray:
        """One float per root id of `graph`: higher is kept first."""
        raise NotImplementedError(
            f"{type(self).__name__}.score: an Importance subclass must "
            "implement score(graph) -> one float per root id.")

    def __call__(self, graph: coupling.ChannelGraph) -> Scores:
        return Scores(np.asarray(self.score(graph), np.float64),
                      max_abs(graph))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GroupNorm(Importance):
    """The group's weight norm: the sum of the L2 norms of its judged
    kernel slices (on every coupled side), the group lasso's own measure.
    The default everywhere.

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> x = keras.Input((4,))
    >>> h = keras.layers.Dense(3, name="d1", kernel_initializer="ones")(x)
    >>> graph = tf_prunetrain.channel_groups(keras.Model(
    ...     x, keras.layers.Dense(1, kernel_initializer="ones")(h)))
    >>> scores = GroupNorm()(graph)  # per unit of d1: |4 ones| + |1 one|
    >>> scores.score[graph.roots(graph.layer_outputs()["d1"])].tolist()
    [3.0, 3.0, 3.0]
    """

    def score(self, graph: coupling.ChannelGraph) -> np.ndarray:
        out = np.zeros(len(graph.root))
        for roots, rows in _slices(graph):
            np.add.at(out, roots, np.sqrt((rows * rows).sum(axis=1)))
        return out
