"""Re-warm: the learning rate raised again after a cut, then let fall.

A cut changes the function the optimizer was descending; the literature
says a large learning rate is what recovers from it (learning-rate
rewinding, Renda et al., ICLR 2020; Le & Hua, ICLR 2021). `Rewarm` is a
Keras callback for the same `fit` as `Reconfigure`: after every cut
(`on_reconfigure`) the rate in use is lifted to `peak` and falls back to
what the rest of the run sets along half a cosine over `epochs` epochs:

    rate(s) = base(s) + max(peak − base(s), 0) · ½·(1 + cos(π·s/length))

`s` counting the steps since the cut and `base` the rate without the
re-warm. It composes with whatever sets `base`:

* a float learning rate that callbacks set (`LearningRateScheduler`,
  `ReduceLROnPlateau`, the recipes' step schedule): the boost is put in
  before each step and taken out after it, so between steps, where
  those callbacks run, the optimizer holds their rate: they read it and
  set it as if there were no re-warm;
* a `keras.optimizers.schedules.LearningRateSchedule`: it is wrapped for
  the `fit` (`Rewarmed`) and given back at its end; a model saved during
  the `fit` saves the schedule it wraps (loading it needs
  this module imported, e.g. `tf_prunetrain.experimental.Rewarm`).

Experimental (off unless added): BENCHMARKS.md, "Issue 31, cut time and
re-warm", has its figures.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tf_prunetrain import _checks
from tf_prunetrain import _keras

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable("tf_prunetrain")
class Rewarmed(LearningRateSchedule):
    """`schedule` plus the re-warm's lift: `base + max(peak − base, 0)·w`,
    `peak` and `w` variables `Rewarm` sets (w = 0: the schedule as it is).

    Saved as the schedule it wraps (its config is the wrapped one's, and
    `from_config` gives the wrapped schedule back).
    """

    def __init__(self, schedule: LearningRateSchedule) -> None:
        self.schedule = schedule
        self.peak = keras.Variable(0.0, trainable=False, name="rewarm_peak")
        self.weight = keras.Variable(0.0, trainable=False,
                                     name="rewarm_weight")

    def __call__(self, step: Any) -> Any:
        base = keras.ops.convert_to_tensor(self.schedule(step), "float32")
        lift = keras.ops.maximum(keras.ops.cast(self.peak, base.dtype) - base,
                                 0.0)
        return base + lift * keras.ops.cast(self.weight, base.dtype)

    def get_config(self) -> dict[str, Any]:
        return keras.optimizers.schedules.serialize(self.schedule)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearningRateSchedule:
        return keras.optimizers.schedules.deserialize(config)


class Rewarm(keras.callbacks.Callback):
    """After each cut of a `Reconfigure` in the same `fit`, lifts the
    learning rate to `peak` and lets it fall back over `epochs` epochs.

    Args:
      epochs: how long the lift lasts, in epochs of this `fit` (> 0; `fit`
        must know its steps per epoch).
      peak: the rate right after a cut; None (the default): the highest
        rate the run has used at the start of an epoch so far (for a
        decaying schedule, its initial rate: a rewind to it).

    A lift that a `fit` call's end interrupts goes on in the next one; a
    `Checkpoint` with this callback among its `trackers` carries it and
    the highest rate (`get_state`/`set_state`). With `steps_per_execution` k the
    rate changes once per k steps. Listed before a callback that reads the
    rate after a step (a batch-level `ModelCheckpoint`), that one sees the
    lifted rate; between steps the optimizer holds the others' rate.

    Example (a cut after epoch 1 of 3, of 4 steps each; the rate is 0.01
    after it, lifted back to 0.1 for one epoch):
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.models import resnet_cifar
    >>> from tf_prunetrain.experimental import Rewarm
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    >>> model.compile(keras.optimizers.SGD(0.1), keras.losses.
    ...               SparseCategoricalCrossentropy(from_logits=True))
    >>> step = keras.callbacks.LearningRateScheduler(
    ...     lambda epoch: 0.1 if epoch == 0 else 0.01)
    >>> rewarm = Rewarm(epochs=1)
    >>> cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(
    ...     0.5, target_epoch=1, gentle=False), round_to=1, verbose=0)
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> _ = model.fit(x, y, batch_size=8, epochs=3, verbose=0,
    ...               callbacks=[cut, step, rewarm])
    >>> [round(r, 4) for r in rewarm.rates]  # epoch 2's 4 steps
    [0.1, 0.0868, 0.055, 0.0232]
    """

    def __init__(self, epochs: float = 1.0, peak: float | None = None
                 ) -> None:
        super().__init__()
        _checks.non_negative(epochs, "epochs", "Rewarm")
        if epochs == 0 or math.isinf(epochs):
            raise ValueError(f"Rewarm: epochs must be > 0 and finite, got "
                             f"{epochs!r}.")
        if peak is not None:
            _checks.non_negative(peak, "peak", "Rewarm")
            if math.isinf(peak):
                raise ValueError("Rewarm: peak must be finite (or None: the "
                                 "highest rate so far).")
        self.epochs, self.peak = float(epochs), peak
        # The rate of every step a lift touched, in order (one per batch
        # callback: with steps_per_execution k, one per k steps).
        self.rates: list[float] = []
        # The run's state (`get_state()`: checkpoints carry it): the highest
        # rate at an epoch's start so far, and the lift in progress
        # (peak, length in steps, steps done).
        self._highest = 0.0
        self._lift: list | None = None
        self._begin = 0  # the first step of the batch callback in progress
        self._base: float | None = None  # float rates: the rate to give back
        self._wrapped: Rewarmed | None = None

    # -- the learning rate ------------------------------------------------
    @property
    def _optimizer(self) -> Any:
        """The optimizer that holds the rate (the inner one of a
        LossScaleOptimizer)."""
        optimizer = self.model.optimizer
        return getattr(optimizer, "inner_optimizer", optimizer)

    def _rate(self) -> float:
        rate = self._optimizer.learning_rate  # a variable or a tensor
        return float(rate.numpy())

    def _give_back(self) -> None:
        """The rate as the rest of the run set it: the base between steps,
        the schedule unwrapped (also after a fit an error ended)."""
        if self._base is not None:
            self._optimizer.learning_rate = self._base
            self._base = None
        rate = _keras.learning_rate(self._optimizer)
        if isinstance(rate, Rewarmed):
            self._optimizer.learning_rate = rate.schedule
            self.model.make_train_function(force=True)
        self._wrapped = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._give_back()
        if not (self.params or {}).get("steps"):
            raise ValueError(
                "Rewarm: the re-warm lasts epochs, so it needs the number of "
                "steps per epoch: pass steps_per_epoch to fit, or a dataset "
                "of known size.")
        rate = _keras.learning_rate(self._optimizer)
        if isinstance(rate, LearningRateSchedule):
            with self.model.distribute_strategy.scope():
                self._wrapped = Rewarmed(rate)
            self._optimizer.learning_rate = self._wrapped
            self.model.make_train_function(force=True)
            if self._lift is not None:  # a lift that goes on from a fit
                self._wrapped.peak.assign(self._lift[0])
        elif not isinstance(rate, keras.Variable):
            raise ValueError(
                "Rewarm: the optimizer's learning_rate is a plain callable "
                f"({rate!r:.60}); give it a float or a keras.optimizers."
                "schedules.LearningRateSchedule.")

    def on_train_end(self, logs: dict | None = None) -> None:
        self._give_back()

    def on_reconfigure(self, reconfiguration: Any, plan: Any) -> None:
        """After a cut: the lift starts at the next step."""
        peak = self.peak if self.peak is not None else max(self._highest,
                                                           self._rate())
        self._lift = [peak, max(1, round(self.epochs * self.params["steps"])),
                      0]
        if self._wrapped is not None:
            self._wrapped.peak.assign(peak)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        self._begin = batch
        if batch == 0:
            self._highest = max(self._highest, self._rate())
        if self._lift is None:
            return
        peak, length, done = self._lift
        weight = 0.5 * (1.0 + math.cos(math.pi * done / length))
        if self._wrapped is not None:
            self._wrapped.weight.assign(weight)
        else:
            self._base = self._rate()
            self._optimizer.learning_rate = \
                self._base + max(peak - self._base, 0.0) * weight
        self.rates.append(self._rate())

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        if self._lift is None:
            return
        if self._base is not None:  # between steps: the others' rate
            self._optimizer.learning_rate = self._base
            self._base = None
        self._lift[2] += batch - self._begin + 1  # steps of this callback
        if self._lift[2] >= self._lift[1]:
            self._lift = None
            if self._wrapped is not None:
                self._wrapped.weight.assign(0.0)

    # -- checkpoints -------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """What a resumed run needs (JSON-ready; `Checkpoint` trackers)."""
        return {"highest": self._highest, "lift": self._lift}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues the run `get_state()` described (before `fit`)."""
        self._highest = float(state.get("highest", 0.0))
        self._lift = state.get("lift")
