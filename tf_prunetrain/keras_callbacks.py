"""Keras' own callbacks across a reconfiguration.

`Reconfigure` changes the model's shapes inside `fit`. A callback that holds
weights from before a cut, or restores them, would put another
architecture's weights back. Decided per callback (README, "Keras
callbacks"), whatever their order in the list:

* `EarlyStopping`: its best value, patience and (`restore_best_weights`)
  best weights restart at each cut: it restores the best weights *since the
  last cut*, and the cut epoch's own metric (measured on the model before
  the cut) does not count. If `fit` stops in a cut's epoch, nothing is
  restored (no epoch has run since).
* `BackupAndRestore`: refused when `fit` starts, before its first step:
  it restores weights into the model object of a new run, whose shapes are
  the initial ones. `tf_prunetrain.Checkpoint` saves and restores the
  architecture too.
* Everything else Keras ships reads logs or writes what the model is now
  (`ModelCheckpoint` whole or weights-only, `ReduceLROnPlateau`,
  `LearningRateScheduler`, `TerminateOnNaN`, `CSVLogger`, `TensorBoard`,
  `RemoteMonitor`, `History`, `ProgbarLogger`, `LambdaCallback`) and works
  across a cut unchanged.
* Your own callback that keeps weights or variable references (an average
  of the weights, SWA): give it a method `on_reconfigure(reconfiguration,
  plan)` (below); the model's variables are then the new ones.
* `RunLog` goes after `Reconfigure` in the list (it logs the epoch's cut
  and λ): `Reconfigure` refuses a `RunLog`, or any callback with an
  `on_prunetrain_event` method, listed before it, naming it.

Events. `Reconfigure` finds the other callbacks of its `fit` when Keras sets
the model on them (`Companions`; `_keras.fit_callbacks` is the one place
that reads Keras' callback list) and tells those with these methods, in
list order, what it did. They are how callbacks learn of it (`RunLog`,
`experimental.Rewarm`, the recipes' `Timeline`): none reads another callback's
attributes.

* `on_reconfigure(reconfiguration, plan)`: after every cut that changed
  the model's shapes — at the end of the 1-based epoch
  `reconfiguration.epoch` (inside `Reconfigure.on_epoch_end`), or when
  `Reconfigure.reconfigure` is called outside `fit`. `reconfiguration` is
  the `Reconfiguration` record (parameters, FLOPs and gradient bytes
  before and after, `seconds`, `changes`, `removed_norm`), `plan` the
  `planning.Plan` applied; the model's variables, optimizer state and
  train function are already the new ones.
* `on_prunetrain_event(event, fields)`, `fields` a dict:
  - "calibration" (`strength`, `penalty_ratio`, `loss`): λ was calibrated,
    at the end of the first step of a `fit` whose λ was not yet;
  - "cut" (`epoch`): a cut after the 1-based `epoch` is about to change
    the model (it is still the model before it; `on_reconfigure` follows);
  - "no_change" (`epoch`): a cut was due after `epoch` and removed nothing
    (no `on_reconfigure`);
  - "fade" (`epoch`, `steps`): a gentle schedule's cut after the 1-based
    `epoch` begins to fade its channels, over that epoch's `steps` steps
    (at its start, inside `Reconfigure.on_epoch_begin`);
  - "lasso_off" (no fields): the group lasso was switched off and the train
    function re-made — at the end of the epoch where pruning ends, and at
    the start of every later (or resumed) `fit` after it;
  - "pruning_end" (`epoch`): the schedule is done after `epoch`: no
    further cut.
  At one epoch's end they come in this order: the cut ("cut", then
  `on_reconfigure`; or "no_change"), then "lasso_off" and "pruning_end".
"""

from __future__ import annotations

from typing import Any

import keras

# Callback types refused in the same `fit` as `Reconfigure`, and what to use.
REFUSED: dict[type, str] = {
    keras.callbacks.BackupAndRestore: (
        "it restores the weights it backed up into the model object of a new "
        "run, which has the initial shapes: after a reconfiguration they no "
        "longer fit (Keras fails in the resumed fit). Use "
        "tf_prunetrain.Checkpoint(directory, trackers=[<the Reconfigure "
        "callback>, <its RunLog>]) instead: it saves the architecture with the weights, and "
        "its restore() returns the model and the epoch to resume from"),
}


def check(callbacks: list[Any], owner: str = "Reconfigure") -> None:
    """Raises ValueError naming the first refused callback of `callbacks`.

    >>> import keras
    >>> check([keras.callbacks.CSVLogger("log.csv")])
    >>> check([keras.callbacks.BackupAndRestore("backup")])
    Traceback (most recent call last):
    ...
    ValueError: Reconfigure cannot share fit with keras.callbacks.BackupAndRestore: it restores ...
    """
    for callback in callbacks:
        for kind, why in REFUSED.items():
            if isinstance(callback, kind):
                raise ValueError(f"{owner} cannot share fit with keras."
                                 f"callbacks.{kind.__name__}: {why}.")


class Companions:
    """The other callbacks of the `fit` that `owner` (a `Reconfigure`) runs
    in, told of every reconfiguration.

    Example:
    >>> import keras
    >>> stop = keras.callbacks.EarlyStopping(restore_best_weights=True)
    >>> stop.best, stop.best_weights, stop.wait = 0.5, ["weights"], 2
    >>> owner = keras.callbacks.Callback()
    >>> companions = Companions([owner, stop], owner)
    >>> companions.after_change(epoch=3, reconfiguration=None, plan=None)
    >>> stop.best, stop.best_weights, stop.wait, stop.start_from_epoch
    (None, None, 0, 4)
    >>> companions.release()  # the next epoch: as configured again
    >>> stop.start_from_epoch
    0
    """

    def __init__(self, callbacks: list[Any], owner: Any) -> None:
        check(callbacks, type(owner).__name__)
        self.callbacks = [c for c in callbacks if c is not owner]
        position = next((i for i, c in enumerate(callbacks) if c is owner),
                        len(callbacks))
        for callback in callbacks[:position]:
            if callable(getattr(callback, "on_prunetrain_event", None)):
                raise ValueError(
                    f"{type(owner).__name__} must come before "
                    f"{type(callback).__name__} in fit's callbacks: it logs "
                    "the epoch's cut and λ, which happen in "
                    f"{type(owner).__name__}'s on_epoch_end. Put "
                    f"{type(owner).__name__} first.")
        self._after = {id(c) for c in callbacks[position + 1:]}
        # EarlyStopping callbacks whose start_from_epoch skips a cut's epoch.
        self._skipping: list[tuple[keras.callbacks.EarlyStopping, int]] = []

    def after_change(self, epoch: int | None, reconfiguration: Any,
                     plan: Any) -> None:
        """After the model's shapes changed: at the end of the 0-based
        `epoch` (None: outside an epoch)."""
        for callback in self.callbacks:
            if isinstance(callback, keras.callbacks.EarlyStopping):
                callback.best, callback.best_weights = None, None
                callback.wait = 0
                if epoch is not None and id(callback) in self._after:
                    # Its on_epoch_end runs after this one: the epoch's
                    # metric is the model's before the cut.
                    self._skipping.append((callback,
                                           callback.start_from_epoch))
                    callback.start_from_epoch = max(
                        callback.start_from_epoch, epoch + 1)
            hook = getattr(callback, "on_reconfigure", None)
            if callable(hook):
                hook(reconfiguration, plan)

    def event(self, event: str, fields: dict[str, Any]) -> None:
        """Passes one of the owner's events on (`on_prunetrain_event`)."""
        for callback in self.callbacks:
            hook = getattr(callback, "on_prunetrain_event", None)
            if callable(hook):
                hook(event, fields)

    def release(self) -> None:
        """Puts back what `after_change` set for one epoch only (call it at
        the next epoch's start and at the end of `fit`)."""
        for callback, start in self._skipping:
            callback.start_from_epoch = start
        self._skipping = []
