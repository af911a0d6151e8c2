"""`Reconfigure`: PruneTrain inside `model.fit` — calibrate λ, shrink in place."""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from typing import Any, Callable

import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import _keras
from tf_prunetrain import budget
from tf_prunetrain import cost as cost_lib
from tf_prunetrain import coupling
from tf_prunetrain import distribute
from tf_prunetrain import inplace
from tf_prunetrain import keras_callbacks
from tf_prunetrain import latency
from tf_prunetrain import planning
from tf_prunetrain import regularizers
from tf_prunetrain.regularizers import GroupLasso, lasso_variables
from tf_prunetrain.runlog import RunLog


@dataclasses.dataclass
class Reconfiguration:
    """What one reconfiguration did."""

    epoch: int  # 1-based epoch after which it ran
    params_before: int
    params_after: int
    flops_before: int | None  # forward FLOPs per example (None: dynamic
    flops_after: int | None   # input sizes)
    gradient_bytes_before: int  # all-reduced per data-parallel step
    gradient_bytes_after: int
    seconds: float  # the surgery itself
    changes: list[tuple[str, int, int]]  # (layer, channels before, after)
    # Extra time of the first train step after it (re-tracing the train
    # function for the new shapes): that step's time minus the next one's.
    retrace_seconds: float = 0.0
    # Measured median train-step seconds of the model before it and after
    # it (re-traces excluded; after: over the first `AFTER_STEPS` timed
    # steps, or the epoch's if fewer). None: not timed (yet).
    step_seconds_before: float | None = None
    step_seconds_after: float | None = None
    # The step time `rank="time"` predicted for the cut model (the measured
    # time before it minus what the roofline says the cut saves; None: not
    # predicted).
    step_seconds_predicted: float | None = None
    # "cut" (channels removed), "undo" (a slower cut put back) or "redo"
    # (the cut made again: the model before it was no faster); see
    # `Reconfigure(undo_slower=True)`. An undo's or redo's epoch is the cut's.
    kind: str = "cut"
    undone: bool = False  # reversed by the undo or redo after it


# `target_epoch` by default: this fraction of `fit`'s epochs (README,
# "Choosing target_epoch").
TARGET_FRACTION = 0.25
# round_to's value that measures the channel multiple (`latency`).
AUTO = "auto"
# Models whose λ was calibrated in this process (a later fit keeps it).
_CALIBRATED: weakref.WeakSet = weakref.WeakSet()
# Before `target_epoch` a cut is made only when it removes at least this
# fraction of the initial FLOPs: a smaller one does not pay for its re-trace.
MIN_CUT = 0.05
# Timed steps after a reconfiguration that give its `step_seconds_after`.
AFTER_STEPS = 5
# A reconfiguration whose measured step is this much slower than before it
# is reported as slower (timing noise on a busy CPU is a few percent).
SLOWER = 1.03
RANKS = ("flops", "time")
# rank="time" times layer copies on batches of at most this size (a few
# seconds in all on ResNet-20 and 2 cores).
ROOFLINE_BATCH = 64


class Reconfigure(RunLog):
    """Prunes channels every `interval` epochs, in place, during `fit`.

    Two modes. With `flops_target` (the budget mode, recommended), the
    model is cut to a FLOPs budget on a schedule: after epoch `e` its
    inference FLOPs per example are at most `goal(e)` times those at the
    start of `fit`, `goal` falling from 1 to `flops_target` along a cubic
    curve (`budget.FlopsSchedule`) that reaches it at `target_epoch`. At
    every `interval`-th epoch before `target_epoch` (default: two cuts in
    all) and at `target_epoch` the channel sets are removed in order: dead
    ones first, then the live ones with the least weight norm per FLOP
    (`budget.plan_to_flops`), so the target is met whatever the group lasso
    did; with `rank="time"` "per FLOP" is "per training-step second" on
    this device's measured roofline (`latency.roofline`: the FLOPs of
    convolutions plus the memory traffic of BatchNorms, activations and
    merges), so the FLOPs cut goes where it saves time. The cut's predicted
    step time is logged beside the measured one, and a reconfiguration that
    made the step slower is reported (`slower_step` in the run log) or, with
    `undo_slower=True`, put back (`undo`; see the argument). A cut
    before `target_epoch` that would remove less than 5% of the initial
    FLOPs is skipped (it would not pay for its re-trace). Once the
    target is met — at `target_epoch`, or earlier if enough channels died —
    the group lasso is switched off and detached (no penalty, no proximal
    step: its cost is gone), there is no further reconfiguration and the
    smaller model trains to the end. The lasso before that shrinks the
    channels the cut will take, so the cut changes the function less.

    In both modes, at the first training step the GroupLasso strength λ of
    every regularized kernel is set from `penalty_ratio` r, so that the
    penalty is the fraction r of the total loss at the start:
    `λ = r·L₀ / ((1 − r)·GL(W₀))` (L₀ is the first batch's loss with λ = 0).
    With `penalty_ratio=None` the strengths the model already has are kept.
    In the paper's mode (no `flops_target`), every `interval` epochs, after
    that epoch's validation, the channels whose coupled kernel slices all
    have `max|w| < threshold` are removed from the same model object:
    layers get smaller variables, weights/BatchNorm statistics/optimizer
    state keep their surviving slices and the rest of the same `fit` runs
    the smaller model. A residual branch whose channels all die is removed
    from the same model object (the block becomes its shortcut plus the
    branch's constant output); `min_channels` holds for the other layers.
    Kernels with `GroupLasso(proximal=True)` get their proximal step
    (`attach_proximal_step`) at the start of `fit`.

    It is a `RunLog`: it accounts the training FLOPs spent against the dense
    model's and logs the cost every epoch (see `RunLog`), plus
    `prunetrain_lambda`, `prunetrain_penalty` (λ·group lasso, end of epoch)
    and `prunetrain_penalty_share` (its fraction of the epoch's loss); put
    `Reconfigure` before `CSVLogger`/`TensorBoard` in the callback list.
    `reconfigurations` lists what each reconfiguration did; `summary()`
    prints channels initial → now per layer.

    Keras' own callbacks in the same `fit` work across a reconfiguration in
    any list order (`EarlyStopping` restarts at each cut), except
    `BackupAndRestore`, refused before the first step (use `Checkpoint`);
    a callback of yours with a method `on_reconfigure(reconfiguration,
    plan)` is called after each one (`tf_prunetrain.keras_callbacks`).

    Args:
      flops_target: in (0, 1): the final model's inference FLOPs per example
        as a fraction of the model's at the start of the first `fit`; None
        (the paper's mode) removes only dead channels.
      target_epoch: the epoch (1-based) by which `flops_target` is met;
        default 25% of `fit`'s epochs (at least 1). It must not be past
        `fit`'s last epoch; leave the smaller model epochs to train after.
      interval: epochs between reconfigurations; default 10 (the paper, on
        CIFAR) or, with `flops_target`, half of `target_epoch` rounded up.
      penalty_epochs: None (the paper: the group lasso acts for the whole
        run), or the number of epochs it acts for: after that epoch the
        model is reconfigured one last time, every GroupLasso strength is set
        to 0 and the smaller model trains on without penalty (a short,
        strong pruning phase, then plain training of what is left).
      threshold: deadness threshold on absolute kernel values.
      penalty_ratio: r in (0, 1), or None to keep the model's λ.
      round_to: keep convolution/Dense widths multiples of this, or
        "auto" (the default): the multiple that runs fast on this device,
        measured at the start of `fit` (`tf_prunetrain.latency`; a few
        seconds, once per process; 1 where rounding costs time). When
        multiples that coarse cannot reach `flops_target` (narrow layers),
        "auto" takes the largest smaller multiple that can.
      min_channels: fewest channels a layer keeps.
      rank: with `flops_target`, how live channels are ranked: "flops"
        (the default: weight norm per FLOP, the same on every device) or
        "time" (weight norm per second they cost on this device's roofline,
        measured at the start of `fit` in a few seconds; BENCHMARKS.md has
        what it bought).
      undo_slower: put back a cut whose train step, measured over its first
        5 timed steps, is more than 3% slower than before it (those steps'
        updates are dropped; the weights and optimizer state are the ones
        at the cut), then time the model before it for 5 steps: if that is
        not 3% faster than the cut, the slowdown was noise and the cut is
        made again (no re-trace); if it is, the undo stands, later cuts use
        twice the channel multiple (where `flops_target` stays reachable),
        and an undone cut at `target_epoch` is made again after that epoch
        (in the paper's mode, later cuts only). No reconfiguration is made
        while such a decision waits for its 5 steps, and an undo not yet
        checked when `fit` ends is redone. Off by default: it makes the
        widths depend on timing noise.
      verbose: 0 silent, 1 one summary per reconfiguration, 2 also the
        channel count of every changed layer.
      log_dir: TensorBoard summaries and run log directory (see `RunLog`).
      batch_size: examples per step for absolute FLOPs (see `RunLog`).

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.models import resnet_cifar
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(4, 8, 8), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> cb = tf_prunetrain.Reconfigure(interval=1, verbose=0)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    >>> cb.strength > 0 and len(cb.reconfigurations) == 2
    True

    The budget mode: half the FLOPs by epoch 1 of 3, then the lasso is off.
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> cb = tf_prunetrain.Reconfigure(flops_target=0.5, verbose=0,
    ...                                round_to=1)  # exact widths
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])
    >>> cb.target_epoch, cb.target_reached, cb.strength
    (1, 1, 0.0)
    >>> round(cb.cost.inference_flops / cb.initial_cost.inference_flops, 1)
    0.5
    """

    def __init__(self, interval: int | None = None, threshold: float = 1e-4,
                 penalty_ratio: float | None = 0.2, round_to: int | str = "auto",
                 min_channels: int = 1, verbose: int = 1,
                 log_dir: str | None = None, batch_size: int | None = None,
                 penalty_epochs: int | None = None,
                 flops_target: float | None = None,
                 target_epoch: int | None = None, rank: str = "flops",
                 undo_slower: bool = False):
        super().__init__(log_dir=log_dir, batch_size=batch_size)
        if not isinstance(undo_slower, bool):
            raise ValueError("Reconfigure: undo_slower must be True or False "
                             f"(put back a cut that made the step slower), "
                             f"got {undo_slower!r}.")
        self.undo_slower = undo_slower
        # The other callbacks of the fit this one runs in (set_model).
        self._companions = keras_callbacks.Companions([], self)
        # The last cut and its undo, until it is timed.
        self._undo: tuple[Reconfiguration, inplace.Undo] | None = None
        # An undone cut, the undo's record, the redo and target_reached,
        # until the model before the cut is timed.
        self._redo: tuple[Reconfiguration, Reconfiguration, inplace.Undo,
                          int | None] | None = None
        if rank not in RANKS:
            raise ValueError(f"Reconfigure: rank must be one of {RANKS} (what "
                             "a channel's cost is measured in), got "
                             f"{rank!r}.")
        self.rank = rank
        self.roofline: latency.Roofline | None = None  # rank="time", measured
        _checks.positive_int(round_to, "round_to", "Reconfigure", also=(AUTO,))
        for name, value, optional in (
                ("interval", interval, True),
                ("min_channels", min_channels, False),
                ("penalty_epochs", penalty_epochs, True),
                ("target_epoch", target_epoch, True)):
            _checks.positive_int(value, name, "Reconfigure", optional)
        if flops_target is not None:
            if isinstance(flops_target, bool) or not isinstance(
                    flops_target, (int, float, np.floating, np.integer)) \
                    or not 0 < float(flops_target) < 1:
                raise ValueError(
                    "Reconfigure: flops_target must be a number in (0, 1) (the "
                    "final FLOPs as a fraction of the initial), got "
                    f"{flops_target!r}.")
            if penalty_epochs is not None:
                raise ValueError(
                    "Reconfigure: flops_target and penalty_epochs conflict: "
                    "with a target the group lasso stops when the target is "
                    "met (at target_epoch). Pass one of them.")
            flops_target = float(flops_target)
        elif target_epoch is not None:
            raise ValueError("Reconfigure: target_epoch needs flops_target "
                             "(the FLOPs fraction to reach by then).")
        self.penalty_epochs = penalty_epochs
        self.flops_target, self.target_epoch = flops_target, target_epoch
        self._interval = interval
        _checks.non_negative(threshold, "threshold", "Reconfigure")
        if penalty_ratio is not None and not 0 < penalty_ratio < 1:
            raise ValueError("Reconfigure: penalty_ratio must be in (0, 1) or "
                             f"None, got {penalty_ratio!r}.")
        self.threshold = threshold
        self.penalty_ratio = penalty_ratio
        # "auto" is measured at the start of the first fit (`_resolve_round`).
        self.round_to_setting = round_to
        self.round_to: int = 1 if round_to == AUTO else round_to
        self._round_resolved = round_to != AUTO
        # Measured at the start of fit, recorded once the run log is open.
        self._round_to_event: dict[str, Any] | None = None
        self._roofline_event: dict[str, Any] | None = None
        self.min_channels, self.verbose = min_channels, verbose
        self.reconfigurations: list[Reconfiguration] = []
        self._calibrating = False
        self._uncalibrated: list[tuple[GroupLasso, float]] = []
        self._restored_calibration = False
        self._retrace: list[float] | None = None  # step times after a change
        self.target_reached: int | None = None  # epoch the target was met

    @property
    def interval(self) -> int:
        """Epochs between reconfigurations (see the class docstring)."""
        if self._interval is not None:
            return self._interval
        if self.flops_target is None:
            return 10
        return max(1, math.ceil((self.target_epoch or 1) / 2))

    @property
    def schedule(self) -> budget.FlopsSchedule | None:
        """The FLOPs budget over epochs (None without `flops_target`, or
        before `fit` has fixed `target_epoch`)."""
        if self.flops_target is None or self.target_epoch is None:
            return None
        return budget.FlopsSchedule(self.flops_target, self.target_epoch)

    # -- λ -------------------------------------------------------------------
    @property
    def strength(self) -> float:
        """The GroupLasso strength λ now in use (the first regularizer's)."""
        pairs = lasso_variables(self.model)
        return pairs[0][1].strength if pairs else 0.0

    def set_model(self, model: Any) -> None:
        """Also finds the other callbacks of the `fit` (refusing those that
        cannot work across a reconfiguration, before anything runs)."""
        companions = keras_callbacks.Companions(
            _keras.fit_callbacks(self), self)
        super().set_model(model)
        self._companions = companions

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._companions.release()

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.target_reached is not None:  # a later fit, or resumed
            super().on_train_begin(logs)
            self._lasso_off()
            return
        pairs = lasso_variables(self.model)
        if not pairs:
            raise ValueError(
                f"Reconfigure: model '{self.model.name}' has no GroupLasso "
                "regularizer, so no channel would ever die. Wrap it first: "
                "model = tf_prunetrain.add_group_lasso(model).")
        self._resolve_round()
        if self.flops_target is not None:
            self._check_target()
            self._resolve_roofline()
        regularizers.attach_proximal_step(self.model)
        if self.penalty_ratio is not None and not self._calibrated():
            # Measured without the penalty; given back if calibration fails.
            self._uncalibrated = [(reg, reg.strength) for _, reg in pairs]
            for _, reg in pairs:
                reg.strength = 0.0
            self._calibrating = True
        super().on_train_begin(logs)
        for event in ("round_to", "roofline"):
            fields = getattr(self, f"_{event}_event")
            if fields is not None:
                self.record(event, **fields)
                setattr(self, f"_{event}_event", None)

    def _resolve_round(self) -> None:
        """`round_to="auto"`: the channel multiple measured on this device
        (`latency.channel_multiple`), the first replica's for all."""
        if self._round_resolved:
            return
        dtype = self.model.dtype_policy.compute_dtype
        start = time.perf_counter()
        multiple = latency.channel_multiple(dtype)
        self.round_to = int(distribute.broadcast(
            self.model.distribute_strategy, np.int64(multiple)))
        self._round_resolved = True
        self._round_to_event = {"multiple": self.round_to, "dtype": dtype,
                             "seconds": time.perf_counter() - start}
        if self.verbose:
            print(f"Reconfigure: round_to='auto' → {self.round_to} (channel "
                  f"multiple measured for {dtype} on this device in "
                  f"{self._round_to_event['seconds']:.1f} s)")

    def _resolve_roofline(self) -> None:
        """`rank="time"`: this device's roofline, measured once per process
        (each replica may measure its own: the plan is the first
        replica's)."""
        if self.rank != "time" or self.roofline is not None:
            return
        start = time.perf_counter()
        self.roofline = budget.measure_roofline(
            coupling.channel_groups(self.model),
            self.model.dtype_policy.compute_dtype,
            min(self.batch_size or ROOFLINE_BATCH, ROOFLINE_BATCH))
        seconds = time.perf_counter() - start
        self._roofline_event = {
            "seconds_per_flop": self.roofline.seconds_per_flop,
            "seconds_per_byte": self.roofline.seconds_per_byte,
            "seconds": seconds}
        if self.verbose:
            print(f"Reconfigure: rank='time': a byte of memory traffic costs "
                  f"{self.roofline.flops_per_byte:.1f} FLOPs' time on this "
                  f"device (measured in {seconds:.1f} s)")

    def _check_target(self) -> None:
        """Fixes `target_epoch` and checks that the target can be met; raises
        ValueError (before anything is changed) when it cannot."""
        epochs = int((self.params or {}).get("epochs") or 0)
        if self.target_epoch is None:
            if epochs < 2:
                raise ValueError(
                    f"Reconfigure: fit runs {epochs} epoch(s); flops_target "
                    "needs at least 2 (one to prune in, one to train the "
                    "smaller model). Train longer, or pass target_epoch and "
                    "fit past it.")
            self.target_epoch = max(1, round(TARGET_FRACTION * epochs))
        elif self.target_epoch > epochs and not self._restored:
            raise ValueError(
                f"Reconfigure: target_epoch={self.target_epoch} is past fit's "
                f"last epoch ({epochs}): the target would never be met. Pass "
                "a smaller target_epoch or more epochs.")
        if self._restored:
            return
        cost = self._measure()
        if cost is None:
            raise ValueError(
                f"Reconfigure: flops_target needs the FLOPs of model "
                f"'{self.model.name}', which has dynamic input sizes; build it "
                "with a fixed input shape, e.g. keras.Input((32, 32, 3)).")
        graph = coupling.channel_groups(self.model)

        def lowest(round_to: int) -> float:
            return budget.reachable_flops(graph, self.min_channels,
                                          round_to) / cost.inference_flops

        if self.round_to_setting == AUTO and self.round_to > 1 \
                and self.flops_target < lowest(self.round_to):
            self._fit_round_to_target(lowest)
        if self.flops_target < lowest(self.round_to):
            raise ValueError(
                f"Reconfigure: flops_target={self.flops_target:g} is below "
                f"what model '{self.model.name}' can reach ({lowest(self.round_to):.3f} of "
                "its FLOPs: frozen channels, layers the library cannot follow "
                f"and min_channels={self.min_channels} stay). Pass "
                f"flops_target >= "
                f"{math.ceil(lowest(self.round_to) * 1000) / 1000:g}.")

    def _fit_round_to_target(self, lowest: Callable[[int], float]) -> None:
        """`round_to="auto"` measured a multiple too coarse for this model to
        reach `flops_target` (narrow layers round up to whole blocks): the
        largest smaller candidate that reaches it is used instead."""
        measured = self.round_to
        fits = [m for m in latency.CANDIDATES
                if m < measured and self.flops_target >= lowest(m)]
        self.round_to = max(fits, default=1)
        if self._round_to_event is not None:
            self._round_to_event.update(multiple=self.round_to,
                                        measured=measured)
        if self.verbose:
            print(f"Reconfigure: round_to='auto' → {self.round_to} instead "
                  f"of {measured}: with multiples of {measured} model "
                  f"'{self.model.name}' cannot reach flops_target="
                  f"{self.flops_target:g}.")

    def _calibrated(self) -> bool:
        return self._restored_calibration or self.model in _CALIBRATED

    def state(self) -> dict[str, Any]:
        """`RunLog.state()` plus whether λ is calibrated and what the
        reconfigurations did."""
        return {**super().state(),
                "calibrated": bool(self.model is not None
                                   and self._calibrated()),
                "target_epoch": self.target_epoch,
                "target_reached": self.target_reached,
                "round_to": self.round_to if self._round_resolved else None,
                "roofline": None if self.roofline is None else dataclasses.
                asdict(self.roofline),
                "reconfigurations": [dataclasses.asdict(r)
                                     for r in self.reconfigurations]}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues a run (see `RunLog.restore`); a calibrated λ is kept
        (the model's regularizers carry it)."""
        super().restore(state)
        self._restored_calibration = bool(state.get("calibrated"))
        coarsened = any(r.get("kind") == "undo" and not r.get("undone")
                        for r in state.get("reconfigurations", []))
        if state.get("round_to") and (coarsened or not self._round_resolved):
            self.round_to, self._round_resolved = int(state["round_to"]), True
        if self.rank == "time" and state.get("roofline"):
            self.roofline = latency.Roofline(**state["roofline"])
        if self.flops_target is not None:
            self.target_epoch = state.get("target_epoch", self.target_epoch)
            self.target_reached = state.get("target_reached")
        self.reconfigurations = [
            Reconfiguration(**{**r, "changes": [tuple(c) for c in r["changes"]]})
            for r in state.get("reconfigurations", [])]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self._retrace is not None:
            self._time_retrace(self.last_step_seconds)
        self._time_after(AFTER_STEPS)
        if not self._calibrating:
            return
        self._calibrating = False
        loss = float((logs or {}).get("loss", np.nan))
        pairs = lasso_variables(self.model)
        penalty = float(sum(float(reg.penalty(v)) for v, reg in pairs))
        if not np.isfinite(loss) or not np.isfinite(penalty) or penalty <= 0:
            for reg, strength in self._uncalibrated:
                reg.strength = strength
        if not np.isfinite(loss):
            raise ValueError(
                f"Reconfigure: the first training step's loss is {loss}, so "
                "λ cannot be calibrated from it. A loss that is not finite at "
                "the first step almost always means NaN or infinite values "
                "in the training data or labels (check np.isfinite on them), "
                "or a learning rate so high the first update diverged. No "
                "channel was removed.")
        if not np.isfinite(penalty) or penalty <= 0:
            raise ValueError(
                f"Reconfigure: cannot calibrate λ: the group penalty of the "
                f"regularized kernels is {penalty} (NaN, infinite or zero "
                "weights). Fix the initialization, or pass penalty_ratio=None "
                "with a strength set by add_group_lasso(strength=...).")
        r = self.penalty_ratio
        # Every worker uses the first replica's λ (see `distribute`).
        strength = float(distribute.broadcast(
            self.model.distribute_strategy,
            np.float64(r * loss / ((1.0 - r) * penalty))))
        for _, reg in pairs:
            reg.strength = strength
        _CALIBRATED.add(self.model)
        self.record("calibration", strength=strength, penalty_ratio=r,
                    loss=loss, group_lasso=penalty)
        if self.verbose:
            print(f"Reconfigure: λ = {strength:.3g} (penalty ratio {r:g}: "
                  f"loss {loss:.4g}, group lasso {penalty:.4g})")

    def _time_after(self, enough: int) -> None:
        """Fills the last reconfiguration's `step_seconds_after` once
        `enough` steps of the new model are timed, and takes a pending
        `undo_slower` decision once `AFTER_STEPS` are."""
        done = self.reconfigurations[-1] if self.reconfigurations else None
        timed = len(self.step_phases[-1]["times"]) if self.step_phases else 0
        if done is not None and done.changes and \
                done.step_seconds_after is None and timed >= enough:
            self._report_after(done)
        if timed < AFTER_STEPS:
            return
        if self._undo is not None:
            (cut, undo), self._undo = self._undo, None
            cut.step_seconds_after = self.step_seconds
            if self._agreed(cut.step_seconds_after
                            > SLOWER * (cut.step_seconds_before or np.inf)):
                self._undo_cut(cut, undo)
        elif self._redo is not None:
            self._check_undo()

    def _report_after(self, done: Reconfiguration) -> None:
        done.step_seconds_after = self.step_seconds
        before, after = done.step_seconds_before, done.step_seconds_after
        self.record("step_time", epoch=done.epoch, before=before, after=after,
                    predicted=done.step_seconds_predicted)
        predicted = "" if done.step_seconds_predicted is None else (
            f", {1e3 * done.step_seconds_predicted:.1f} ms predicted")
        if self.verbose and before:
            print(f"Reconfigure (epoch {done.epoch}): train step "
                  f"{1e3 * before:.1f} ms -> {1e3 * after:.1f} ms "
                  f"({after / before:.2f}x), measured{predicted}")
        if not before or after <= SLOWER * before or done.kind == "undo" \
                or self._undo is not None:
            return  # an undo, or a cut `undo_slower` decides on
        self.record("slower_step", epoch=done.epoch, ratio=after / before)
        if self.verbose:
            hint = "" if self.undo_slower else "undo_slower=True, "
            print(f"Reconfigure (epoch {done.epoch}): WARNING: the train "
                  f"step got {after / before:.2f}x slower: this cut's "
                  "channel counts run no faster on this device (try "
                  f"{hint}rank='time', a single cut with target_epoch, or a "
                  "larger round_to; see BENCHMARKS.md)")

    @property
    def _deciding(self) -> bool:
        """An `undo_slower` decision is pending (no reconfiguration until
        it is taken)."""
        return self._undo is not None or self._redo is not None

    def _agreed(self, decision: bool) -> bool:
        """The first replica's `decision`, for every replica and worker."""
        return bool(distribute.broadcast(self.model.distribute_strategy,
                                         np.int64(decision)))

    def _switch(self, done: Reconfiguration, change: inplace.Undo,
                kind: str) -> tuple[Reconfiguration, inplace.Undo]:
        """Applies `change` (an undo or redo of the cut `done`); returns its
        record and the `Undo` that reverses it."""
        start = time.perf_counter()
        before, flops_before = self.model.count_params(), self._flops()
        bytes_before, step_before = self._gradient_bytes(), self.step_seconds
        reverse = change()
        self.refresh()
        changes = done.changes if kind == "redo" else [
            (path, new, old) for path, old, new in done.changes]
        record = Reconfiguration(
            done.epoch, before, self.model.count_params(), flops_before,
            self._flops(), bytes_before, self._gradient_bytes(),
            time.perf_counter() - start, changes,
            step_seconds_before=step_before, kind=kind)
        self.reconfigurations.append(record)
        self.record("reconfiguration", **dataclasses.asdict(record))
        self._companions.after_change(None, record, None)
        return record, reverse

    def _undo_cut(self, done: Reconfiguration, undo: inplace.Undo) -> None:
        """Puts back the cut `done`, whose step got slower; the model before
        it is then timed (`_check_undo`)."""
        reached, self.target_reached = self.target_reached, None
        back, redo = self._switch(done, undo, "undo")
        done.undone = True
        if reached is not None:  # made again later, unless redone
            self._lasso_off()  # detached from the restored variables too
        self._retrace = []
        self._redo = (done, back, redo, reached)
        ratio = done.step_seconds_after / done.step_seconds_before
        self.record("undo", epoch=done.epoch, ratio=ratio)
        if self.verbose:
            print(f"Reconfigure (epoch {done.epoch}): the cut made the train "
                  f"step {ratio:.2f}x slower: undone, parameters back to "
                  f"{back.params_after:,} ({back.seconds:.2f} s); timing the "
                  "model before it")

    def _check_undo(self) -> None:
        """The model before an undone cut is timed: unless it is faster than
        the cut's by the margin (the slowdown was noise), the cut is redone
        (no re-trace); otherwise later cuts use a coarser multiple."""
        done, back, redo, reached = self._redo
        back.step_seconds_after = self.step_seconds
        ratio = back.step_seconds_before / back.step_seconds_after
        if self._agreed(not ratio > SLOWER):
            self._redo_cut(f"the model before the cut is not faster "
                           f"({ratio:.2f}x), so the slowdown was timing noise")
            return
        self._redo = None
        coarser = self._coarser()
        self.record("undo_kept", epoch=done.epoch, ratio=ratio,
                    round_to=self.round_to)
        if self.verbose:
            then = ["the target's cut is made again after this epoch"] \
                if reached is not None else []
            then.append(f"later cuts keep multiples of {self.round_to} "
                        "channels" if coarser else "the channel multiple "
                        f"stays {self.round_to}")
            print(f"Reconfigure (epoch {done.epoch}): the model before the "
                  f"cut is {ratio:.2f}x faster: the undo stands; "
                  + "; ".join(then))

    def _redo_cut(self, why: str) -> None:
        """Makes the undone cut again (pending `_redo`), as it was at the
        undo; its traced functions are reused."""
        (done, back, redo, reached), self._redo = self._redo, None
        forward, _ = self._switch(done, redo, "redo")
        done.undone, back.undone = False, True
        self.target_reached = reached
        self.record("redo", epoch=done.epoch, reason=why)
        if self.verbose:
            print(f"Reconfigure (epoch {done.epoch}): {why}: the cut is made "
                  f"again ({forward.seconds:.2f} s, no re-trace)")

    def _coarser(self) -> bool:
        """Doubles `round_to` after an undone cut, unless `flops_target`
        could no longer be reached with it; True if it did."""
        doubled = 2 * self.round_to
        if self.flops_target is not None and self.initial_cost is not None:
            reachable = budget.reachable_flops(
                coupling.channel_groups(self.model), self.min_channels,
                doubled) / self.initial_cost.inference_flops
            if self.flops_target < reachable:
                return False
        self.round_to = doubled
        return True

    def _time_retrace(self, step_seconds: float) -> None:
        self._retrace.append(step_seconds)
        if len(self._retrace) == 2:
            first, second = self._retrace
            done = self.reconfigurations[-1]
            done.retrace_seconds = max(0.0, first - second)
            self._retrace = None
            self.record("retrace", epoch=done.epoch,
                        seconds=done.retrace_seconds)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._companions.release()
        self._undo = None  # a cut not timed enough stays
        if self._redo is not None:  # so does one undone but not checked
            self._redo_cut("fit ended before the model before the cut was "
                           "timed")
        super().on_train_end(logs)

    # -- reconfiguration ------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._time_after(1)  # an epoch shorter than AFTER_STEPS
        done = epoch + 1
        last = self.penalty_epochs
        budget_mode = self.flops_target is not None
        due = self.target_reached is None if budget_mode else (
            (last is None or done <= last)
            and (done % self.interval == 0 or done == last))
        if due and self._deciding:
            self.record("reconfiguration_deferred", epoch=done)
            if self.verbose:
                print(f"Reconfigure (epoch {done}): the last cut's timing "
                      f"(undo_slower) needs {AFTER_STEPS} steps: no "
                      "reconfiguration now")
        elif due and budget_mode:
            self._budget_step(done)
        elif due:
            self.reconfigure(done)
        if not budget_mode and done == last:
            self._lasso_off(detach=False)
            self.record("penalty_end", epoch=done)
            if self.verbose:
                print(f"Reconfigure (epoch {done}): group lasso off, "
                      "no further reconfiguration")
        super().on_epoch_end(epoch, logs)

    def _budget_step(self, done: int) -> None:
        """The budget mode's reconfiguration after epoch `done`."""
        if self.target_reached is not None or self.cost is None:
            return
        final = done >= self.target_epoch
        if not final and done % self.interval:
            return
        planning = time.perf_counter()
        start = self.initial_cost.inference_flops
        graph = coupling.channel_groups(self.model)
        plan = budget.plan_to_flops(
            graph, self.schedule.goal(done) * start,
            floor=self.flops_target * start, threshold=self.threshold,
            round_to=self.round_to, min_channels=self.min_channels,
            roofline=self.roofline)
        # One decision for all replicas and workers: the first replica's.
        plan.keep = distribute.broadcast(self.model.distribute_strategy,
                                         plan.keep)
        planned = budget.estimate_flops(graph, plan.keep)
        predicted = self._predict(graph, plan)
        cut = (self.cost.inference_flops - planned) / start
        reached = final or planned <= self.flops_target * start * (1 + 1e-9)
        planning = time.perf_counter() - planning
        if not reached and cut < MIN_CUT:
            self.record("budget_skip", epoch=done, cut=cut,
                        goal=self.schedule.goal(done), seconds=planning)
            return
        self.reconfigure(done, plan, planning, predicted)
        if reached:
            self.target_reached = done
            self._lasso_off()
            achieved = self.cost.inference_flops / start
            self.record("target_reached", epoch=done, flops_target=
                        self.flops_target, flops_fraction=achieved)
            if self.verbose:
                print(f"Reconfigure (epoch {done}): FLOPs target "
                      f"{self.flops_target:g} met ({achieved:.3f} of the "
                      "initial); group lasso off, no further "
                      "reconfiguration")

    def _lasso_off(self, detach: bool = True) -> None:
        """Every GroupLasso strength to 0; with `detach`, the regularizers
        and proximal steps leave the variables (no cost left in the step;
        layer configs keep them, at strength 0)."""
        for variable, regularizer in lasso_variables(self.model):
            regularizer.strength = 0.0
            if detach:
                variable.regularizer = None
                if isinstance(variable.constraint, regularizers.ProximalStep):
                    variable.constraint = None
        if detach and self.model.compiled:
            self.model.make_train_function(force=True)
            self.untimed_steps()

    def scalars(self, logs: dict) -> dict[str, float]:
        out = super().scalars(logs)
        pairs = lasso_variables(self.model)
        penalty = float(sum(reg.strength * float(reg.penalty(v))
                            for v, reg in pairs))
        out.update({"lambda": self.strength, "penalty": penalty})
        loss = logs.get("loss")
        if loss is not None and float(loss) > 0:
            out["penalty_share"] = penalty / float(loss)
        return out

    def _flops(self) -> int | None:
        return None if self.cost is None else self.cost.inference_flops

    def _gradient_bytes(self) -> int:
        return cost_lib.gradient_bytes(self.model)

    def _predict(self, graph: coupling.ChannelGraph,
                 plan: planning.Plan) -> float | None:
        """The step seconds `plan` should give: the measured ones minus the
        batch × the per-example seconds the roofline says it saves (None
        without a roofline, a timed step or a known batch size)."""
        if self.roofline is None or self.step_seconds is None \
                or self.batch_size is None:
            return None
        now = np.ones(len(graph.root), bool)
        saved = budget.estimate_seconds(graph, now, self.roofline) \
            - budget.estimate_seconds(graph, plan.keep, self.roofline)
        return max(0.0, self.step_seconds - self.batch_size * saved)

    def reconfigure(self, epoch: int = 0, plan: planning.Plan | None = None,
                    planning_seconds: float = 0.0,
                    predicted_step_seconds: float | None = None
                    ) -> Reconfiguration:
        """Removes the dead channels now, or what `plan` removes (also
        callable outside `fit`, after `set_model(model)`); the seconds spent
        making `plan` count as the reconfiguration's, and
        `predicted_step_seconds` is what the plan's step should take."""
        if self.model is None:
            raise ValueError("Reconfigure.reconfigure: no model; pass the "
                             "callback to model.fit or call set_model(model).")
        self._resolve_round()  # called before any fit
        start = time.perf_counter()
        if self.cost is None and self.initial_cost is None:
            self.refresh()  # called before any fit
        before, flops_before = self.model.count_params(), self._flops()
        bytes_before, step_before = self._gradient_bytes(), self.step_seconds
        if plan is None:
            plan = planning.plan_pruning(
                coupling.channel_groups(self.model), self.threshold,
                round_to=self.round_to, min_channels=self.min_channels)
            # One decision for all replicas and workers: the first replica's.
            plan.keep = distribute.broadcast(self.model.distribute_strategy,
                                             plan.keep)
        changes = plan.changes()
        if changes:
            undo = inplace.reconfigure_in_place(self.model, plan)
            self._undo = (None, undo) if self.undo_slower else None
            self._redo = None
            self.refresh()
            self._retrace = []
        seconds = time.perf_counter() - start + planning_seconds
        done = Reconfiguration(epoch, before, self.model.count_params(),
                               flops_before, self._flops(), bytes_before,
                               self._gradient_bytes(), seconds, changes,
                               step_seconds_before=step_before,
                               step_seconds_predicted=predicted_step_seconds
                               if changes else None)
        self.reconfigurations.append(done)
        if changes:  # at the end of the 0-based epoch `epoch - 1`
            self._companions.after_change(epoch - 1 if epoch else None, done,
                                          plan)
        if self._undo is not None and self._undo[0] is None:
            self._undo = (done, self._undo[1])  # timed from now on
        self.record("reconfiguration", **dataclasses.asdict(done))
        if self.verbose:
            self._print(done)
        return done

    def _print(self, done: Reconfiguration) -> None:
        if not done.changes:
            print(f"Reconfigure (epoch {done.epoch}): no dead channel "
                  f"({done.seconds:.2f} s)")
            return
        share = 100.0 * (done.params_after - done.params_before) / max(
            done.params_before, 1)
        flops = ""
        if done.flops_before:
            change = done.flops_after / done.flops_before - 1.0
            flops = (f", FLOPs/example {done.flops_before:,} -> "
                     f"{done.flops_after:,} ({100.0 * change:+.1f}%)")
        print(f"Reconfigure (epoch {done.epoch}): parameters "
              f"{done.params_before:,} -> {done.params_after:,} ({share:+.1f}%)"
              f"{flops}, all-reduce bytes/step {done.gradient_bytes_before:,}"
              f" -> {done.gradient_bytes_after:,}, {len(done.changes)} layer "
              "outputs narrowed, "
              f"{done.seconds:.2f} s; training FLOPs saved so far "
              f"{100.0 * self.train_flops_saved:.1f}%")
        if self.verbose > 1:
            width = max(len(path) for path, _, _ in done.changes)
            for path, old, new in done.changes:
                print(f"  {path:<{width}}  {old:>5} -> {new}")
