"""`Timeline`: which architecture a run trained, for how many steps, with
the group lasso on or off: what `tools/benchmark.py` replays to price a
run's training time on a quiet clock (`tools/replay.py`).

An architecture is named by `architecture_key`: a short hash of every
layer's class and weight shapes, so the same widths give the same key in
any run, whatever the seed, the layer names' provenance or the regularizers
attached (a dense run and PruneTrain's initial model share one key; the
lasso is recorded beside it). Its model JSON (`model.to_json()`) is kept
once per key, so that the replay can build it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import keras
import tensorflow as tf

from tf_prunetrain.experimental import distillation
from tf_prunetrain.regularizers import lasso_variables


class GraphCount(logging.Filter):
    """Counts the graphs TensorFlow builds while open (`graphs`): every
    `tf.function` trace, nested ones included, by TensorFlow's own log
    record for each ("Creating new FuncGraph", verbose level 1), which it
    keeps from the log's handlers as they would have.

    >>> f = tf.function(lambda x: x + 1)
    >>> with GraphCount() as count:
    ...     _ = f(tf.constant(1)), f(tf.constant(2)), f(tf.constant([1.0]))
    >>> count.graphs
    2
    """

    MESSAGE = "Creating new FuncGraph"

    def __init__(self) -> None:
        super().__init__()
        self.graphs = 0
        self._level: int | None = None  # the log's level before

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.MESSAGE):
            self.graphs += 1
        return record.levelno >= (self._level or 0)

    def open(self) -> "GraphCount":
        logger = tf.get_logger()
        self._level = logger.getEffectiveLevel()
        logger.addFilter(self)
        logger.setLevel(1)
        return self

    def close(self) -> None:
        logger = tf.get_logger()
        logger.removeFilter(self)
        logger.setLevel(self._level)

    def __enter__(self) -> "GraphCount":
        return self.open()

    def __exit__(self, *error: Any) -> None:
        self.close()


def _frozen(layers: list) -> bool:
    """Whether any of `layers`, or of the models among them, is frozen."""
    return any(not layer.trainable or (isinstance(layer, keras.Model)
                                       and _frozen(layer.layers))
               for layer in layers)


def architecture_key(model: keras.Model) -> str:
    """12 hex digits naming `model`'s layer classes and weight shapes (the
    GroupLasso strength variables left out) and, when a layer is frozen,
    the shapes of the weights that train (a frozen step is cheaper).

    >>> import keras
    >>> def net(width):
    ...     x = keras.Input((4,))
    ...     return keras.Model(x, keras.layers.Dense(width)(x))
    >>> architecture_key(net(3)) == architecture_key(net(3))
    True
    >>> architecture_key(net(3)) == architecture_key(net(2))
    False
    """
    structure: list = [(type(layer).__name__,
                        [list(w.shape) for w in layer.weights
                         if not w.path.endswith("group_lasso_strength")])
                       for layer in model.layers]
    # Frozen layers train faster (no weight gradients): what trains joins
    # the name when something is frozen (other models keep their keys).
    if _frozen(model.layers):
        structure.append(("trainable", [list(w.shape) for w in
                                        model.trainable_weights]))
    text = json.dumps(structure, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def lasso_kind(model: keras.Model) -> str:
    """How `model`'s group lasso runs, as what a replay must rebuild:
    "proximal" or "loss" (a step after the update, or a loss term),
    "+scales" when BatchNorm scales carry one too; "" without a lasso.

    >>> import keras, tf_prunetrain
    >>> x = keras.Input((4,))
    >>> model = keras.Model(x, keras.layers.Dense(2)(
    ...     keras.layers.Dense(8)(x)))
    >>> lasso_kind(model), lasso_kind(tf_prunetrain.add_group_lasso(
    ...     model, strength=1e-4, proximal=True))
    ('', 'proximal')
    """
    pairs = lasso_variables(model)
    kinds = sorted({"proximal" if reg.proximal else "loss"
                    for _, reg in pairs})
    if any(v.path.endswith("gamma") for v, _ in pairs):
        kinds.append("scales")
    return "+".join(kinds)


class Timeline(keras.callbacks.Callback):
    """Records `segments`: `{"architecture": key, "lasso": kind, "steps":
    n}` in training order, one per stretch of steps with the same
    architecture and lasso (and `"fade": True` on the steps a gentle cut's
    fade runs after: the epoch before that cut; `"teacher": key` on the
    steps an `experimental.Distill` teacher of that architecture taught),
    and `architectures`: `{key: model JSON}` (teachers' included). Each segment also counts the graphs TensorFlow
    built (`GraphCount`) from the end of the step before it to the end of
    its last step, as `"graphs"`: a cut's re-trace and a fade's own graph
    land in the segment after them.

    The lasso is on while any trainable variable carries a `GroupLasso`
    (its penalty or proximal step costs time, whatever its strength); its
    kind is `lasso_kind`'s, "" when off.
    Checked at the first step after each event that can change them:
    the start of a `fit` and of every epoch, and `Reconfigure`'s cuts
    (`on_reconfigure`), "fade" and "lasso_off" (`tf_prunetrain.keras_callbacks` lists the
    events; list the `Timeline` after `Reconfigure`). Its steps are counted per
    `on_train_batch_end` (`steps_per_execution=1`).

    Example:
    >>> import keras, numpy as np
    >>> x = keras.Input((4,))
    >>> model = keras.Model(x, keras.layers.Dense(2)(x))
    >>> model.compile("sgd", "mse")
    >>> timeline = Timeline()
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4,
    ...               epochs=2, verbose=0, callbacks=[timeline])
    >>> [(s["lasso"], s["steps"]) for s in timeline.segments]
    [('', 4)]
    """

    def __init__(self) -> None:
        super().__init__()
        self.segments: list[dict[str, Any]] = []
        self.architectures: dict[str, str] = {}
        # An event since the last check. Checked at the next step, not at
        # once: a cut after a fit's last step starts no empty segment.
        self._changed = False
        self._fading = False  # a fade runs until the next cut
        self._count = GraphCount()
        self._counted = 0  # graphs counted at the last step's end

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._changed = True
        self._counted = self._count.open().graphs

    def on_train_end(self, logs: dict | None = None) -> None:
        self._count.close()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """A teacher may start or stop (`Distill`): checked at the next
        step."""
        self._changed = True

    def on_reconfigure(self, reconfiguration: Any, plan: Any) -> None:
        """A cut changed the architecture (and ended a fade): checked at
        the next step."""
        self._changed, self._fading = True, False

    def on_prunetrain_event(self, event: str, fields: dict[str, Any]
                            ) -> None:
        """A fade began ("fade") or the lasso switched off ("lasso_off"):
        checked at the next step."""
        if event in ("fade", "lasso_off"):
            self._changed = True
        if event == "fade":
            self._fading = True

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        if not self._changed:
            return
        self._changed = False
        key = self._known(self.model)
        teacher = distillation.teacher_of(self.model)
        segment = {"architecture": key, "lasso": lasso_kind(self.model),
                   **({"fade": True} if self._fading else {}),
                   **({"teacher": self._known(teacher)} if teacher else {}),
                   "steps": 0, "graphs": 0}
        last = self.segments[-1] if self.segments else None
        if last is None or {**last, "steps": 0, "graphs": 0} != segment:
            self.segments.append(segment)

    def _known(self, model: keras.Model) -> str:
        """`model`'s architecture key, its JSON kept."""
        key = architecture_key(model)
        if key not in self.architectures:
            self.architectures[key] = model.to_json()
        return key

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        segment = self.segments[-1]
        segment["steps"] += 1
        segment["graphs"] += self._count.graphs - self._counted
        self._counted = self._count.graphs
