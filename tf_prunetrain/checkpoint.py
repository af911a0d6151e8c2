"""`Checkpoint`: crash-safe checkpoints of a run whose model changes shape.

Keras' `BackupAndRestore` restores weights into the model object `fit` was
given, which cannot work once reconfigurations have changed its shapes. A
`Checkpoint` saves, at every epoch end (after `Reconfigure`), into
`<directory>/ckpt-<epoch>/`: the whole model as a `.keras` file
(architecture, weights, BatchNorm statistics, optimizer state and step
count, λ in its regularizers, calibrated or not), the state of its random
layers' generators (Dropout's, ...: `.keras` files leave it out), the state
of its `trackers` (`Reconfigure`: the schedule's state and the
reconfigurations; `RunLog`: the cost totals) and the epoch. Each
checkpoint is written into a `.tmp` directory and renamed into place, and
its manifest carries the SHA-256 of the model file: a checkpoint cut short
by a crash is never seen, a corrupt one is skipped with a warning.
`restore()` returns the latest good model and the epoch to pass as
`initial_epoch`.

What a resume then guarantees (README, "Survive crashes"): fed by
`data.stream` (each epoch's order fixed by its number), a run killed at
any moment and resumed ends bit for bit where the uninterrupted run would
have on CPU with `tf.config.experimental.enable_op_determinism()`; the
epoch in progress at the kill is trained again from its start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from typing import Any, Sequence

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import _keras

MODEL_FILE, MANIFEST_FILE, PREFIX = "model.keras", "manifest.json", "ckpt-"


class Mismatch(ValueError):
    """A checkpoint of another run (other trackers, or a tracker refusing
    its state): raised by `Checkpoint.restore`, not skipped as damage."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore_seeds(model: keras.Model, seeds: list[list[int]] | None
                   ) -> None:
    """Puts the random layers' generator states back (None: a checkpoint
    written before they were saved)."""
    if seeds is None:
        return
    states = _keras.seed_states(model)
    if len(states) != len(seeds):
        raise ValueError(f"it saved {len(seeds)} random-layer states, the "
                         f"model file has {len(states)}")
    for state, value in zip(states, seeds):
        state.assign(np.asarray(value, dtype=state.dtype))


class Checkpoint(keras.callbacks.Callback):
    """Saves a restorable checkpoint every `every` epochs; keeps `keep`.

    Put it after `Reconfigure` (and any `RunLog`) in the callback list, and
    give it those callbacks as `trackers` so their state comes back too
    (anything with `get_state()` and `set_state(state)` methods: one
    protocol for everything a checkpoint carries, as schedules and rankings
    have; a tracker with files of its own also has `save_assets(folder)`,
    called with the checkpoint's folder as it is written, and
    `load_assets(folder)`, called after its `set_state` on restore:
    `experimental.Distill`'s teacher). `Reconfigure` refuses to resume with a schedule of another config.

    Example:
    >>> import keras, numpy as np, tempfile, tf_prunetrain
    >>> def build():
    ...     x = keras.Input((4,))
    ...     model = keras.Model(x, keras.layers.Dense(2)(x))
    ...     model.compile("sgd", "mse")
    ...     return model
    >>> backup = tf_prunetrain.Checkpoint(tempfile.mkdtemp())
    >>> restored = backup.restore()  # None: nothing saved yet
    >>> model, initial_epoch = restored or (build(), 0)
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, verbose=0,
    ...               initial_epoch=initial_epoch, callbacks=[backup])
    >>> backup.restore()[1]  # a rerun would go on after epoch 2
    2
    """

    def __init__(self, directory: str, trackers: Sequence[Any] = (), *,
                 every: int = 1, keep: int = 2):
        super().__init__()
        trackers = tuple(trackers)
        for tracker in trackers:
            if not (callable(getattr(tracker, "get_state", None))
                    and callable(getattr(tracker, "set_state", None))):
                raise TypeError(
                    f"Checkpoint: trackers must have get_state() and "
                    f"set_state(state) (Reconfigure, RunLog); got "
                    f"{type(tracker).__name__}.")
        _checks.positive_int(every, "every", "Checkpoint")
        _checks.positive_int(keep, "keep", "Checkpoint")
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"Checkpoint: directory must be a path, got "
                            f"{type(directory).__name__}.")
        directory = os.fspath(directory)
        self._check_directory(directory)
        self.directory, self.trackers = directory, trackers
        self.every, self.keep = every, keep

    @staticmethod
    def _check_directory(directory: str) -> None:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(
                f"Checkpoint: directory '{directory}' is a file, not a "
                "folder of checkpoints; pass a folder (it is created).")

    # -- saving ---------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            self.save(epoch + 1)

    def save(self, epoch: int) -> str:
        """Writes `ckpt-<epoch>` atomically; returns its path.

        Raises:
          OSError: the checkpoint could not be written (no space left, a
            read-only folder, ...): the message names the folder. Training
            stops rather than run on without crash safety; the checkpoints
            already written stay intact and restorable, and the partial one
            is removed (it would never be restored: only renamed, complete
            checkpoints are).
        """
        final = os.path.join(self.directory, f"{PREFIX}{epoch}")
        temporary = final + ".tmp"
        try:
            self._check_directory(self.directory)
            shutil.rmtree(temporary, ignore_errors=True)
            os.makedirs(temporary)
            model_path = os.path.join(temporary, MODEL_FILE)
            self.model.save(model_path)
            for tracker in self.trackers:  # files of their own
                if callable(getattr(tracker, "save_assets", None)):
                    tracker.save_assets(temporary)
            manifest = {"epoch": epoch, "sha256": _sha256(model_path),
                        "seeds": [np.asarray(state.numpy()).tolist()
                                  for state in
                                  _keras.seed_states(self.model)],
                        "trackers": [{"type": type(t).__name__,
                                      "state": t.get_state()}
                                     for t in self.trackers]}
            with open(os.path.join(temporary, MANIFEST_FILE), "w",
                      encoding="utf-8") as f:
                json.dump(manifest, f)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        except OSError as err:
            shutil.rmtree(temporary, ignore_errors=True)
            previous = self._epochs()
            raise OSError(
                err.errno, f"Checkpoint: could not write the epoch-{epoch} "
                f"checkpoint in '{self.directory}' ({err.strerror or err}); "
                + (f"ckpt-{previous[-1]} is intact and restore() returns it"
                   if previous else "no earlier checkpoint exists")
                + ". Free space or pass a writable folder, then resume."
            ) from err
        for old in self._epochs()[:-self.keep]:
            shutil.rmtree(os.path.join(self.directory, f"{PREFIX}{old}"),
                          ignore_errors=True)
        return final

    def _epochs(self) -> list[int]:
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            suffix = name[len(PREFIX):]
            if name.startswith(PREFIX) and suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    # -- restoring --------------------------------------------------------------
    def restore(self) -> tuple[keras.Model, int] | None:
        """The latest intact checkpoint as `(model, epoch)`, or None.

        The model is loaded (compiled, with its optimizer state) inside the
        current `tf.distribute` scope; the trackers get their saved state. A
        checkpoint whose model file does not match its manifest, or that
        does not load, is skipped with a warning.

        Raises:
          NotADirectoryError: the checkpoint directory is a file.
          ValueError: the checkpoint was saved with other trackers.
        """
        self._check_directory(self.directory)
        for epoch in reversed(self._epochs()):
            folder = os.path.join(self.directory, f"{PREFIX}{epoch}")
            try:
                return self._load(folder)
            except Mismatch:
                raise
            except Exception as e:  # noqa: BLE001 - any damage means skip
                warnings.warn(f"Checkpoint: skipping damaged checkpoint "
                              f"'{folder}': {type(e).__name__}: {e}",
                              stacklevel=2)
        return None

    def _load(self, folder: str) -> tuple[keras.Model, int]:
        with open(os.path.join(folder, MANIFEST_FILE), encoding="utf-8") as f:
            manifest = json.load(f)
        model_path = os.path.join(folder, MODEL_FILE)
        if _sha256(model_path) != manifest["sha256"]:
            raise ValueError("the model file does not match its checksum")
        saved = manifest["trackers"]
        kinds = [type(t).__name__ for t in self.trackers]
        if [t["type"] for t in saved] != kinds:
            raise Mismatch(
                f"Checkpoint: '{folder}' was saved with trackers "
                f"{[t['type'] for t in saved]}, this Checkpoint has {kinds}; "
                "pass the same callbacks in the same order.")
        model = keras.models.load_model(model_path)
        _restore_seeds(model, manifest.get("seeds"))
        for tracker, state in zip(self.trackers, saved):
            tracker.set_state(state["state"])  # Mismatch: raised
            if callable(getattr(tracker, "load_assets", None)):
                tracker.load_assets(folder)
        return model, int(manifest["epoch"])
