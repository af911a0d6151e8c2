"""`RunLog`: the training cost a run spends, as epoch logs, TensorBoard
summaries and a JSON-lines run log (what `tools/report.py` draws)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import cost as cost_lib

LOG_FILE = "prunetrain.jsonl"
SUMMARY_DIR = "prunetrain"


class RunLog(keras.callbacks.Callback):
    """Accounts the training cost of a run and logs it every epoch.

    Every training step adds the current model's training FLOPs to
    `train_flops_spent` and the initial model's to `train_flops_dense` (what
    the unpruned model would have spent on the same steps). At each epoch end
    the logs get `prunetrain_params`, `prunetrain_flops` (inference FLOPs per
    example), `prunetrain_train_flops` (per step), `prunetrain_train_flops_saved`
    (percent of the dense training FLOPs saved so far),
    `prunetrain_gradient_bytes` (all-reduced per step) and
    `prunetrain_memory_traffic_bytes` (bandwidth-bound layers, per step), so `History`,
    `CSVLogger` and Keras' `TensorBoard` see them (list `RunLog` before them).

    With `log_dir`, it also writes TensorBoard scalars (the same figures plus
    `channels/<layer>` for every convolution/Dense layer) under
    `<log_dir>/prunetrain` — give it the `log_dir` of your `TensorBoard`
    callback and both show side by side — and a run log `<log_dir>/prunetrain.jsonl`
    (one JSON record at the start, per epoch, and per reconfiguration;
    started afresh by a new `RunLog`). `Reconfigure` is a `RunLog`; use
    `RunLog` alone for a dense baseline.

    Args:
      log_dir: directory for the summaries and the run log, or None.
      batch_size: examples per step, for the absolute per-step figures. None
        counts one example per step: savings are the same, absolute FLOPs are
        per example. May be changed between `fit` calls (dynamic batch).

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> x = keras.Input((8, 8, 1))
    >>> y = keras.layers.Dense(2)(keras.layers.Flatten()(
    ...     keras.layers.Conv2D(4, 3)(x)))
    >>> model = keras.Model(x, y)
    >>> model.compile("sgd", "mse")
    >>> log = tf_prunetrain.RunLog(batch_size=4)
    >>> h = model.fit(np.ones((8, 8, 8, 1)), np.ones((8, 2)), batch_size=4,
    ...               epochs=1, verbose=0, callbacks=[log])
    >>> h.history["prunetrain_train_flops"][0] == log.cost.train_flops
    True
    >>> log.train_flops_spent == 2 * log.cost.train_flops  # two steps
    True
    """

    def __init__(self, log_dir: str | None = None,
                 batch_size: int | None = None):
        super().__init__()
        if batch_size is not None and (isinstance(batch_size, bool) or not
                                       isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"{type(self).__name__}: batch_size must be an "
                             f"integer >= 1 or None, got {batch_size!r}.")
        self.log_dir, self.batch_size = log_dir, batch_size
        self.initial_cost: cost_lib.TrainingCost | None = None
        self.cost: cost_lib.TrainingCost | None = None
        self.train_flops_spent = 0
        self.train_flops_dense = 0
        self.steps = 0
        self.seconds = 0.0  # training wall time over all fits
        self._started = False
        self._restored = False
        self._fit_start = 0.0
        self._writer: Any = None

    # -- accounting ------------------------------------------------------------
    @property
    def train_flops_saved(self) -> float:
        """Fraction of the dense model's training FLOPs saved so far."""
        if not self.train_flops_dense:
            return 0.0
        return 1.0 - self.train_flops_spent / self.train_flops_dense

    def _measure(self) -> cost_lib.TrainingCost | None:
        try:
            return cost_lib.training_cost(self.model, self.batch_size or 1)
        except ValueError as e:  # dynamic input sizes
            warnings.warn(f"{type(self).__name__}: no cost accounting for "
                          f"model '{self.model.name}': {e}", stacklevel=2)
            return None

    def refresh(self) -> None:
        """Re-measures the model (call after changing its architecture)."""
        self.cost = self._measure()

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on accounting (JSON-ready): the
        initial model's cost and the totals so far. See `restore`."""
        initial = self.initial_cost
        return {"initial_cost": None if initial is None else
                dataclasses.asdict(initial),
                "train_flops_spent": self.train_flops_spent,
                "train_flops_dense": self.train_flops_dense,
                "steps": self.steps, "seconds": self.seconds}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues the run that `state()` described (before `fit`): the
        totals go on and the run log is appended to, not started afresh."""
        initial = state.get("initial_cost")
        if initial is not None:
            initial = cost_lib.TrainingCost(**{
                **initial, "layers": tuple(cost_lib.LayerCost(**row)
                                           for row in initial["layers"])})
        self.initial_cost = initial
        self.train_flops_spent = int(state["train_flops_spent"])
        self.train_flops_dense = int(state["train_flops_dense"])
        self.steps, self.seconds = int(state["steps"]), float(state["seconds"])
        self._restored = True

    def summary(self) -> str:
        """Per-layer table of the model now: channels initial → now, params,
        share of the training FLOPs, and totals vs the initial model."""
        if self.cost is None:
            return "no cost accounting (model not trained yet or dynamic sizes)"
        return self.cost.summary(self.initial_cost)

    # -- Keras hooks -------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.refresh()
        self._fit_start = time.perf_counter()
        if self._started:
            return
        self._started = True
        if not self._restored:
            self.initial_cost = self.cost
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            if not self._restored:
                open(os.path.join(self.log_dir, LOG_FILE), "w").close()
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, SUMMARY_DIR))
        self.record("resume" if self._restored else "start",
                    model=self.model.name, batch_size=self.batch_size)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        if self.cost is not None and self.initial_cost is not None:
            # The dense model on this step's batch (which may have grown since
            # the start: see `dynamic_batch`).
            self.train_flops_spent += self.cost.train_flops
            self.train_flops_dense += (self.initial_cost.train_flops
                                       // self.initial_cost.batch_size
                                       * self.cost.batch_size)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scalars = self.scalars(logs or {})
        if logs is not None:
            logs.update({f"prunetrain_{k}": v for k, v in scalars.items()})
        self.record("epoch", epoch=epoch + 1, steps=self.steps,
                    seconds=self.seconds + time.perf_counter() - self._fit_start,
                    logs={k: float(np.asarray(v)) for k, v in (logs or {}).items()
                          if np.size(v) == 1},
                    train_flops_spent=self.train_flops_spent,
                    train_flops_dense=self.train_flops_dense)
        if self._writer is not None:
            channels = self.cost.channels() if self.cost else {}
            with self._writer.as_default(step=epoch):
                for name, value in scalars.items():
                    tf.summary.scalar(name, value)
                for path, n in channels.items():
                    tf.summary.scalar(f"channels/{path}", n)
            self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.seconds += time.perf_counter() - self._fit_start
        if self._writer is not None:
            self._writer.flush()

    # -- output ------------------------------------------------------------------
    def scalars(self, logs: dict) -> dict[str, float]:
        """The per-epoch figures (logged with a `prunetrain_` prefix), given
        the epoch's Keras logs."""
        out: dict[str, float] = {"params": self.model.count_params()}
        if self.cost is not None:
            out.update(flops=self.cost.inference_flops,
                       train_flops=self.cost.train_flops,
                       train_flops_saved=100.0 * self.train_flops_saved,
                       gradient_bytes=self.cost.gradient_bytes,
                       memory_traffic_bytes=self.cost.memory_traffic_bytes)
        return out

    def record(self, event: str, **fields: Any) -> None:
        """Appends one JSON record (with the current cost and channels) to
        the run log, if there is one."""
        if not self.log_dir:
            return
        line = {"event": event, **fields}
        if self.cost is not None:
            line.update(cost=self.cost.totals(), channels=self.cost.channels())
        with open(os.path.join(self.log_dir, LOG_FILE), "a",
                  encoding="utf-8") as f:
            f.write(json.dumps(line, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars and arrays."""
    return np.asarray(value).tolist()
