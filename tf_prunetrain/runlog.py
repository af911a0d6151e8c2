"""`RunLog`: the training cost a run spends, as epoch logs, TensorBoard
summaries and a JSON-lines run log (what `tools/report.py` draws)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import _checks
from tf_prunetrain import cost as cost_lib

LOG_FILE = "prunetrain.jsonl"
SUMMARY_DIR = "prunetrain"
# Timed steps after a reconfiguration that give its `step_seconds_after`.
AFTER_STEPS = 5


@dataclasses.dataclass
class CutTiming:
    """What a `RunLog` measured of one reconfiguration that changed the
    model (None: not timed)."""

    epoch: int  # the cut's: 1-based epoch after which it ran
    # Median train-step seconds of the model before it, and of the new
    # model's first `AFTER_STEPS` timed steps (or its epoch's, if fewer).
    step_seconds_before: float | None
    step_seconds_after: float | None = None
    # The first step's extra seconds after it (re-tracing the train
    # function for the new shapes).
    retrace_seconds: float | None = None


class RunLog(keras.callbacks.Callback):
    """Accounts the training cost of a run and logs it every epoch.

    Every training step adds the current model's training FLOPs to
    `train_flops_spent` and the initial model's to `train_flops_dense` (what
    the unpruned model would have spent on the same steps). At each epoch end
    the logs get `prunetrain_params`, `prunetrain_flops` (inference FLOPs per
    example), `prunetrain_train_flops` (per step), `prunetrain_train_flops_saved`
    (percent of the dense training FLOPs saved so far),
    `prunetrain_gradient_bytes` (all-reduced per step),
    `prunetrain_memory_traffic_bytes` (bandwidth-bound layers, per step),
    `prunetrain_step_seconds` (median train-step time of the latest model
    that trained) and `prunetrain_step_time_saved` (percent of the training
    time saved so far; both NaN until a step is timed), so `History`,
    `CSVLogger` and `TensorBoard` see them (list it before those, after
    `Reconfigure`).

    Step times are `clock()` seconds from `on_train_batch_begin` to
    `on_train_batch_end` (data loading included). The first step after each
    (re)trace of the train function — the first of every `fit`, the first
    after a reconfiguration — is not timed: it measures tracing, which
    `CutTiming.retrace_seconds` reports.

    With `Reconfigure` in the same `fit` (listed before it), it listens to
    its events (`tf_prunetrain.keras_callbacks` lists them): each cut
    (`on_reconfigure`) is logged and timed — the median step time before
    it, after it (its first 5 timed steps, or the epoch's if fewer) and the
    re-trace's extra seconds, one `CutTiming` per cut in `cut_timings`,
    which `get_state()` carries — and every other event (`on_prunetrain_event`:
    calibration, end of pruning, ...) goes to the run log.

    With `log_dir`, it also writes TensorBoard scalars under
    `<log_dir>/prunetrain`, every epoch: the figures above (without the
    prefix, and those others put under `prunetrain_`: λ, the penalty),
    `channels/<layer>` for every convolution/Dense layer, the epoch's other
    logs under their own names (Keras' `loss`, metrics and `val_` ones) and
    the optimizer's `learning_rate`. It is the run's one TensorBoard
    writer: Keras' `TensorBoard` callback is not needed for scalars (give
    it another `log_dir` for histograms, graphs or profiles). And a run
    log `<log_dir>/prunetrain.jsonl` (one JSON record at the start, per
    epoch and per event; started afresh by a new `RunLog`). Alone, it logs
    a dense baseline.

    Args:
      log_dir: directory for the summaries and the run log, or None.
      batch_size: examples per step, for the absolute per-step figures. None
        counts one example per step: savings are the same, absolute FLOPs are
        per example. May be changed between `fit` calls (dynamic batch).
      clock: returns seconds; what step times are read from (tests pass a
        fake one).

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
                 batch_size: int | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.clock = clock
        _checks.positive_int(batch_size, "batch_size", type(self).__name__,
                             optional=True)
        self.log_dir, self.batch_size = log_dir, batch_size
        self.initial_cost: cost_lib.TrainingCost | None = None
        self.cost: cost_lib.TrainingCost | None = None
        self.train_flops_spent = 0
        self.train_flops_dense = 0
        self.steps = 0
        self.seconds = 0.0  # training wall time over all fits
        # Timed steps, one phase per architecture and batch size: "key"
        # (the step's training FLOPs), "batch_size", "steps" (all of them),
        # "times" (this process's timed ones) and, restored, "median".
        self.times = StepTimes()
        # One per reconfiguration that changed the model, in order.
        self.cut_timings: list[CutTiming] = []
        self.last_step_seconds: float | None = None
        self._step_start = 0.0
        self._started = False
        self._restored = False
        self._fit_start = 0.0
        self._files = _Files(log_dir) if log_dir else None

    # -- accounting ------------------------------------------------------------
    @property
    def train_flops_saved(self) -> float:
        """Fraction of the dense model's training FLOPs saved so far."""
        if not self.train_flops_dense:
            return 0.0
        return 1.0 - self.train_flops_spent / self.train_flops_dense

    @property
    def step_seconds(self) -> float | None:
        """Median train-step seconds of the latest model that has trained
        (just after a reconfiguration: the one before it; None before any
        step is timed)."""
        return self.times.latest

    @property
    def initial_step_seconds(self) -> float | None:
        """Median train-step seconds of the initial model."""
        return self.times.initial

    @property
    def step_time_saved(self) -> float | None:
        """Fraction of the training time saved so far (`StepTimes.saved`)."""
        return self.times.saved

    def untimed_steps(self, count: int = 1) -> None:
        """Do not time the next `count` steps (the step is re-traced)."""
        self.times.untimed = max(self.times.untimed, count)

    def _phase(self) -> None:
        key = None if self.cost is None else int(self.cost.train_flops)
        self.times.phase(key, self.batch_size or 1)

    def _measure(self) -> cost_lib.TrainingCost | None:
        try:
            return cost_lib.training_cost(self.model, self.batch_size or 1)
        except ValueError as e:  # dynamic input sizes
            warnings.warn(f"{type(self).__name__}: no cost accounting for "
                          f"model '{self.model.name}': {e}", stacklevel=2)
            return None

    def refresh(self) -> None:
        """Re-measures the model (call after changing its architecture):
        its cost, and a new step-time phase whose first step is not timed."""
        self.cost = self._measure()
        self._phase()
        self.untimed_steps()

    def get_state(self) -> dict[str, Any]:
        """What a resumed run needs to go on accounting (JSON-ready): the
        initial model's cost, the totals so far and `cut_timings`. See
        `set_state`."""
        initial = self.initial_cost
        return {"initial_cost": None if initial is None else
                dataclasses.asdict(initial),
                "train_flops_spent": self.train_flops_spent,
                "train_flops_dense": self.train_flops_dense,
                "steps": self.steps, "seconds": self.seconds,
                "step_phases": self.times.get_state(),
                "cut_timings": [dataclasses.asdict(t)
                                for t in self.cut_timings]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues the run that `get_state()` described (before `fit`): the
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
        self.times.set_state(state.get("step_phases", []))
        # A cut whose steps after it were not timed yet stays untimed: the
        # resumed fit's first step traces afresh.
        self.cut_timings = [CutTiming(**t)
                            for t in state.get("cut_timings", [])]
        self._restored = True

    def summary(self) -> str:
        """Per-layer table of the model now: channels initial → now, params,
        share of the training FLOPs, and totals vs the initial model."""
        if self.cost is None:
            return "no cost accounting (model not trained yet or dynamic sizes)"
        return self.cost.summary(self.initial_cost) + self._step_line()

    def _step_line(self) -> str:
        initial, now = self.initial_step_seconds, self.step_seconds
        if initial is None or now is None:
            return ""
        saved = self.step_time_saved
        return (f"\ntrain step (measured median, re-traces excluded): "
                f"initial {1e3 * initial:.1f} ms, now {1e3 * now:.1f} ms "
                f"({now / initial:.2f}x); training time saved so far "
                f"{100.0 * saved:.1f}%")

    # -- Keras hooks -------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.refresh()
        self._fit_start = self.clock()
        if self._started:
            return
        self._started = True
        if not self._restored:
            self.initial_cost = self.cost
        if self._files is not None:
            self._files.open(fresh=not self._restored)
        self.record("resume" if self._restored else "start",
                    model=self.model.name, batch_size=self.batch_size)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._step_start = self.clock()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.last_step_seconds = self.clock() - self._step_start
        if not self.times.phases:  # hooks called without on_train_begin
            self._phase()
        self.times.add(self.last_step_seconds)
        self.steps += 1
        self._time_reconfiguration(AFTER_STEPS)
        if self.cost is not None and self.initial_cost is not None:
            # The dense model on this step's batch (which may have grown since
            # the start: see `dynamic_batch`).
            self.train_flops_spent += self.cost.train_flops
            self.train_flops_dense += (self.initial_cost.train_flops
                                       // self.initial_cost.batch_size
                                       * self.cost.batch_size)

    def on_reconfigure(self, reconfiguration: Any, plan: Any) -> None:
        """After `Reconfigure` changed the model: re-measures it, logs the
        reconfiguration and times the steps after it (`cut_timings`)."""
        self._time_reconfiguration(1)  # a cut before AFTER_STEPS were timed
        timing = CutTiming(reconfiguration.epoch, self.step_seconds)
        self.cut_timings.append(timing)
        self.refresh()
        self.times.watch(timing)
        self.record("reconfiguration", **dataclasses.asdict(reconfiguration))

    def on_prunetrain_event(self, event: str, fields: dict[str, Any]) -> None:
        """Another of `Reconfigure`'s events: written to the run log (after
        "lasso_off" the train function is re-traced: not timed)."""
        if event == "lasso_off":
            self.untimed_steps()
        self.record(event, **fields)

    def _time_reconfiguration(self, enough: int) -> None:
        done = self.times.timed(enough)
        if done is not None:
            self.record("step_time", epoch=done.epoch,
                        before=done.step_seconds_before,
                        after=done.step_seconds_after,
                        retrace=done.retrace_seconds)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._time_reconfiguration(1)  # an epoch shorter than AFTER_STEPS
        scalars = self.scalars(logs or {})
        if logs is not None:
            # What others logged under prunetrain_ (λ, from Reconfigure).
            scalars.update({k[len("prunetrain_"):]: v for k, v in logs.items()
                            if k.startswith("prunetrain_")
                            and k[len("prunetrain_"):] not in scalars})
            logs.update({f"prunetrain_{k}": v for k, v in scalars.items()})
        self.record("epoch", epoch=epoch + 1, steps=self.steps,
                    seconds=self.seconds + self.clock() - self._fit_start,
                    logs={k: float(np.asarray(v)) for k, v in (logs or {}).items()
                          if np.size(v) == 1},
                    train_flops_spent=self.train_flops_spent,
                    train_flops_dense=self.train_flops_dense)
        if self._files is not None:
            self._files.summaries(epoch, {
                **_summaries(self.model, scalars, logs or {}),
                **{f"channels/{path}": n for path, n in
                   (self.cost.channels() if self.cost else {}).items()}})

    def on_train_end(self, logs: dict | None = None) -> None:
        self.seconds += self.clock() - self._fit_start

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
        # Always both (NaN until timed): CSVLogger fixes its columns at the
        # first epoch.
        step, saved = self.step_seconds, self.step_time_saved
        out["step_seconds"] = np.nan if step is None else step
        out["step_time_saved"] = np.nan if saved is None else 100.0 * saved
        return out

    def record(self, event: str, **fields: Any) -> None:
        """Appends one JSON record (with the current cost and channels) to
        the run log, if there is one."""
        if self._files is None:
            return
        line = {"event": event, **fields}
        if self.cost is not None:
            line.update(cost=self.cost.totals(), channels=self.cost.channels())
        self._files.record(line)


def _summaries(model: keras.Model, scalars: dict[str, float], logs: dict
               ) -> dict[str, Any]:
    """An epoch's TensorBoard scalars: `scalars`, then the logs not under
    `prunetrain_` (loss, metrics, `val_` ones) and the optimizer's learning
    rate, each unless a name is taken."""
    out: dict[str, Any] = dict(scalars)
    for name, value in logs.items():
        if not name.startswith("prunetrain_") and np.size(value) == 1:
            out.setdefault(name, value)
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer) and \
            "learning_rate" not in out:
        out["learning_rate"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate))
    return out


class _Files:
    """A `RunLog`'s output in its `log_dir`: the run log (one JSON record
    per line) and the one TensorBoard writer."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer: Any = None

    def open(self, fresh: bool) -> None:
        """Makes the folder and the writer; `fresh`: a new run log."""
        os.makedirs(self.log_dir, exist_ok=True)
        if fresh:
            open(os.path.join(self.log_dir, LOG_FILE), "w").close()
        self._writer = tf.summary.create_file_writer(
            os.path.join(self.log_dir, SUMMARY_DIR))

    def record(self, line: dict[str, Any]) -> None:
        with open(os.path.join(self.log_dir, LOG_FILE), "a",
                  encoding="utf-8") as f:
            f.write(json.dumps(line, default=_plain) + "\n")

    def summaries(self, step: int, values: dict[str, Any]) -> None:
        """Writes every scalar of `values` at `step`, and flushes."""
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self._writer.flush()


class StepTimes:
    """Train-step times in phases, one per architecture and batch size:
    "key" (the step's training FLOPs), "batch_size", "steps" (all of them),
    "times" (this process's timed ones) and, restored, "median"."""

    def __init__(self) -> None:
        self.phases: list[dict[str, Any]] = []
        self.untimed = 0  # steps left not to time (re-traces)
        # The `CutTiming` being filled in, and the seconds of the steps
        # after its cut (for the re-trace).
        self.pending: CutTiming | None = None
        self._after: list[float] = []

    def phase(self, key: int | None, batch_size: int) -> None:
        """Starts a new phase when the architecture or batch size changed."""
        last = self.phases[-1] if self.phases else None
        if last is None or (last["key"], last["batch_size"]) != (
                key, batch_size):
            self.phases.append({"key": key, "batch_size": batch_size,
                                "steps": 0, "times": []})

    def add(self, seconds: float) -> None:
        """One step of the current phase, timed unless `untimed`."""
        phase = self.phases[-1]
        phase["steps"] += 1
        if self.untimed:
            self.untimed -= 1
        else:
            phase["times"].append(seconds)
        if self.pending is not None and len(self._after) < 2:
            self._after.append(seconds)
            if len(self._after) == 2:  # the re-trace's extra seconds
                self.pending.retrace_seconds = max(
                    0.0, self._after[0] - self._after[1])

    def watch(self, timing: CutTiming) -> None:
        """Times the steps after `timing`'s cut (see `timed`)."""
        self.pending, self._after = timing, []

    def timed(self, enough: int) -> CutTiming | None:
        """The pending `CutTiming`, its `step_seconds_after` filled in,
        once `enough` steps of the new model are timed (else None)."""
        done = self.pending
        if done is None or not self.phases or \
                len(self.phases[-1]["times"]) < enough:
            return None
        done.step_seconds_after = self.latest
        self.pending, self._after = None, []
        return done

    @property
    def latest(self) -> float | None:
        timed = [m for m in map(_median, self.phases) if m is not None]
        return timed[-1] if timed else None

    @property
    def initial(self) -> float | None:
        return _median(self.phases[0]) if self.phases else None

    @property
    def saved(self) -> float | None:
        """Fraction of the training time saved so far, from measured step
        times: every step priced at its model's median seconds per example,
        against the initial model's (re-traces excluded: see
        `CutTiming.retrace_seconds`). None until both are timed."""
        if self.initial is None:
            return None
        per_example = self.initial / self.phases[0]["batch_size"]
        spent = dense = 0.0
        for phase in self.phases:
            median = _median(phase)
            if median is not None:
                spent += phase["steps"] * median
                dense += phase["steps"] * phase["batch_size"] * per_example
        return 1.0 - spent / dense

    def get_state(self) -> list[dict[str, Any]]:
        return [{"key": p["key"], "batch_size": p["batch_size"],
                 "steps": p["steps"], "median": _median(p)}
                for p in self.phases]

    def set_state(self, state: list[dict[str, Any]]) -> None:
        self.phases = [{**p, "times": []} for p in state]


def _median(phase: dict[str, Any]) -> float | None:
    """A phase's median step seconds: of the steps timed in this process,
    else the restored one."""
    if phase["times"]:
        return float(np.median(phase["times"]))
    return phase.get("median")


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars and arrays."""
    return np.asarray(value).tolist()
