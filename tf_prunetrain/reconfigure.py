"""`Reconfigure`: PruneTrain inside `model.fit` — calibrate λ, shrink in place."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import _keras
from tf_prunetrain import checkpoint as checkpoint_lib
from tf_prunetrain import cost as cost_lib
from tf_prunetrain import distribute
from tf_prunetrain import fading
from tf_prunetrain import inplace
from tf_prunetrain import keras_callbacks
from tf_prunetrain import planning
from tf_prunetrain import regularizers
from tf_prunetrain import schedules

# The default channel multiple (README, "Channel multiples": what rounding
# costs on CPU, and Tensor Cores' multiples of 8 on GPU).
ROUND_TO = 8


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
    seconds: float  # planning and surgery
    changes: list[tuple[str, int, int]]  # (layer, channels before, after)
    # The removed channels' mean group norm (summed L2 norms of their
    # kernel slices) over the kept ones', just before the cut: 0 when only
    # zeros went, about 1 when they were as strong as the rest.
    removed_norm: float | None = None


class Reconfigure(keras.callbacks.Callback):
    """Prunes channels in place during `fit`, when `schedule` says.

    When `fit` starts, the GroupLasso strength λ of every regularized kernel
    is calibrated from `penalty_ratio` r at the first step, so that the
    penalty is the fraction r of the total loss:
    `λ = r·L₀ / ((1 − r)·GL(W₀))` (L₀ is the first batch's loss with λ = 0;
    `regularizers.calibrate`). The regularizers remember it (`calibrated`
    in their config), so a resumed or later `fit` keeps it. Kernels with
    `GroupLasso(proximal=True)` get their proximal step
    (`regularizers.attach_proximal_step`).

    After every epoch the schedule decides (`schedules.Schedule`; a
    `gentle` one as the epoch begins: its cut's channels fade over the
    epoch and the same plan is cut after it). Every plan is held to
    `round_to` and `min_channels`; every replica and worker applies the
    first replica's. A cut is made on the same model object: weights,
    BatchNorm statistics and optimizer state keep their surviving slices,
    a residual branch whose channels all die is removed, and the rest of
    the same `fit` runs the smaller model. When the pruning phase ends, the
    group lasso is switched off and detached (its cost is gone). Frozen
    layers are cut like the others and stay frozen (README, "Prune a
    trained model"); a model with nothing trainable is refused.

    A `tf_prunetrain.RunLog` after this callback accounts the cost, times
    the steps and writes the logs. The epoch logs get `prunetrain_lambda`,
    `prunetrain_penalty` (λ·group lasso) and `prunetrain_penalty_share`;
    `reconfigurations` lists the cuts. Keras' callbacks work across a cut
    but `BackupAndRestore` (use `Checkpoint`); others hear of cuts through
    events (`tf_prunetrain.keras_callbacks`). A fade runs in the train
    step when it is traced after the fade begins (`fading`).

    Args:
      schedule: when and what to cut: `FlopsBudget(target)` (recommended),
        `DeadChannels()` (the paper's), or your own `schedules.Schedule`.
      penalty_ratio: r in (0, 1), or None to keep the model's λ.
      round_to: convolution/Dense widths stay multiples of this (default 8;
        `latency.channel_multiple()` measures one for this device).
      min_channels: fewest channels a layer keeps.
      verbose: 0 silent, 1 one line per cut, 2 also every changed layer.

    Example (half the FLOPs by epoch 1 of 3, then the lasso is off):
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.models import resnet_cifar
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> cb = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
    ...                                round_to=1, verbose=0)
    >>> log = tf_prunetrain.RunLog()
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[cb, log])
    >>> cb.schedule.target_epoch, cb.finished, cb.strength
    (1, 1, 0.0)
    >>> round(log.cost.inference_flops / log.initial_cost.inference_flops, 1)
    0.5
    """

    def __init__(self, schedule: schedules.Schedule, *,
                 penalty_ratio: float | None = 0.2, round_to: int = ROUND_TO,
                 min_channels: int = 1, verbose: int = 1):
        super().__init__()
        if not isinstance(schedule, schedules.Schedule):
            raise TypeError(
                "Reconfigure: schedule must be a tf_prunetrain.schedules."
                "Schedule, e.g. tf_prunetrain.FlopsBudget(0.5) or "
                f"tf_prunetrain.DeadChannels(); got {schedule!r:.80}.")
        if penalty_ratio is not None and not 0 < penalty_ratio < 1:
            raise ValueError("Reconfigure: penalty_ratio must be in (0, 1) or "
                             f"None, got {penalty_ratio!r}.")
        _checks.positive_int(round_to, "round_to", "Reconfigure")
        _checks.positive_int(min_channels, "min_channels", "Reconfigure")
        self.schedule, self.penalty_ratio = schedule, penalty_ratio
        self.round_to, self.min_channels = round_to, min_channels
        self.verbose = verbose
        self.reconfigurations: list[Reconfiguration] = []
        self.finished: int | None = None  # the epoch pruning ended after
        self.initial_flops: int | None = None
        self._resumed = self._started = False
        # The strengths to give back if calibration fails, while it runs.
        self._uncalibrated: list[tuple[Any, float]] | None = None
        # The other callbacks of the fit this one runs in (set_model).
        self._companions = keras_callbacks.Companions([], self)
        self._fade: fading.Fade | None = None  # this epoch's (gentle cuts)
        # A gentle schedule's decision, made when the epoch began.
        self._pending: schedules.Decision | None = None
        self._batch = 0  # the first step of the batch callback in progress
        self._ran: Any = None  # the train function of the last step

    # -- the run -----------------------------------------------------------
    @property
    def strength(self) -> float:
        """The GroupLasso strength λ now in use (the first regularizer's)."""
        pairs = regularizers.lasso_variables(self.model)
        return pairs[0][1].strength if pairs else 0.0

    def context(self) -> schedules.Context:
        """What the schedule sees of the run now."""
        epochs = int((self.params or {}).get("epochs") or 0)
        return schedules.Context(self.model, epochs, self.initial_flops,
                                 self.round_to, self.min_channels,
                                 self._resumed)

    def set_model(self, model: Any) -> None:
        """Also finds the other callbacks of the `fit` (refusing those that
        cannot work across a reconfiguration, before anything runs)."""
        companions = keras_callbacks.Companions(
            _keras.fit_callbacks(self), self)
        super().set_model(model)
        self._companions = companions

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.finished is not None:  # a later fit, or resumed
            self._lasso_off()
            return
        if not self.model.trainable_weights:
            raise ValueError(
                f"Reconfigure: model '{self.model.name}' has no trainable "
                "weights (every layer is frozen), and PruneTrain prunes while "
                "it trains. Unfreeze what should fine-tune (e.g. "
                "backbone.trainable = True) and compile again; frozen "
                "layers are pruned with their statistics (README, 'Prune a "
                "trained model').")
        if not regularizers.lasso_variables(self.model):
            raise ValueError(
                f"Reconfigure: model '{self.model.name}' has no GroupLasso "
                "regularizer, so no channel would ever die. Wrap it first: "
                "model = tf_prunetrain.add_group_lasso(model).")
        distribute.check_optimizer(self.model)
        if not self._started and not self._resumed:
            try:
                self.initial_flops = cost_lib.forward_flops(self.model)
            except ValueError:  # dynamic input sizes
                self.initial_flops = None
        self.schedule.start(self.context())
        self._started = True
        regularizers.attach_proximal_step(self.model)
        pairs = regularizers.lasso_variables(self.model)
        if self.penalty_ratio is not None and not all(
                reg.calibrated for _, reg in pairs):
            # Measured without the penalty; given back if calibration fails.
            self._uncalibrated = [(reg, reg.strength) for _, reg in pairs]
            regularizers.set_strength(self.model, 0.0)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        self._batch = batch  # steps_per_execution k: k steps to the end

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._ran = self.model.train_function
        if self._fade is not None:
            self._fade.step(batch - self._batch + 1)
        if self._uncalibrated is None:
            return
        uncalibrated, self._uncalibrated = self._uncalibrated, None
        loss = float((logs or {}).get("loss", np.nan))
        try:
            strength = regularizers.calibrate(self.model, loss,
                                              self.penalty_ratio)
        except ValueError as err:
            for reg, value in uncalibrated:
                reg.strength = value
            raise ValueError(f"Reconfigure: cannot calibrate λ at the first "
                             f"step: {err} No channel was removed.") from err
        # Every worker uses the first replica's λ (see `distribute`).
        strength = float(distribute.broadcast(
            self.model.distribute_strategy, np.float64(strength)))
        regularizers.set_strength(self.model, strength, calibrated=True)
        self._emit("calibration", strength=strength,
                   penalty_ratio=self.penalty_ratio, loss=loss)
        if self.verbose:
            print(f"Reconfigure: λ = {strength:.3g} (penalty ratio "
                  f"{self.penalty_ratio:g} of the first step's loss "
                  f"{loss:.4g})")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._companions.release()
        self._fade, self._pending = None, None
        if self.finished is None and self.schedule.gentle:
            # Decided once, now: its channels fade over this epoch, and the
            # same plan is cut after it.
            self._pending = self._decide(epoch + 1)
            if self._pending is not None and self._pending.plan is not None:
                self._fade = fading.Fade.for_epoch(
                    self._pending.plan, self.model, self.params,
                    self.schedule, ran=self._ran,
                    fold=_after_retrace(epoch, self.reconfigurations))
                self._emit("fade", epoch=epoch + 1, steps=self._fade.left,
                           traced=self._fade.traced)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        fading.close(self._fade)  # the cut's variables get their own back
        if self.finished is None:
            decision = self._pending if self.schedule.gentle \
                else self._decide(done)
            self._pending = None
            if decision is not None and decision.plan is not None:
                self.reconfigure(done, decision.plan)
            if decision is not None and decision.last:
                self.finished = done
                self._lasso_off()
                self._emit("pruning_end", epoch=done)
                if self.verbose:
                    print(f"Reconfigure (epoch {done}): "
                          f"{type(self.schedule).__name__} is done; group "
                          "lasso off, no further cut")
        if logs is not None:
            logs.update({f"prunetrain_{k}": v for k, v in
                         regularizers.penalty_scalars(self.model,
                                                      logs).items()})

    def _decide(self, epoch: int) -> schedules.Decision | None:
        """The schedule's decision for the 1-based `epoch`, its plan held
        to `round_to` and `min_channels`, the same on every replica."""
        context = self.context()
        decision = self.schedule.decide(epoch, context)
        if decision is not None and decision.plan is not None:
            planning.Constraints(self.round_to, self.min_channels).hold(
                decision.plan, self.model, self.schedule)
        return _agreed(self.model, decision, self.context)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._companions.release()
        fading.close(self._fade)

    def _lasso_off(self) -> None:
        regularizers.switch_off(self.model)
        if self.model.compiled:
            self.model.make_train_function(force=True)
            self._emit("lasso_off")

    def _emit(self, event: str, **fields: Any) -> None:
        self._companions.event(event, fields)  # a RunLog writes it down

    # -- checkpoints -------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """What a resumed run needs (JSON-ready; see `Checkpoint`): the
        schedule's config and state among it."""
        return {"initial_flops": self.initial_flops,
                "finished": self.finished,
                "schedule_config": _described(self.schedule),
                "schedule": self.schedule.get_state(),
                "reconfigurations": [dataclasses.asdict(r)
                                     for r in self.reconfigurations]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues the run `get_state()` described (before `fit`); a
        state saved with a schedule of another config is refused
        (ValueError, nothing changed)."""
        saved = state.get("schedule_config")
        if saved is not None and saved != _described(self.schedule):
            raise checkpoint_lib.Mismatch(
                f"Reconfigure: the checkpoint's schedule was {saved['class']}"
                f"({saved['config']}), this run's is {self.schedule!r}. "
                "Resume with the schedule the run started with, or start a "
                "new run in a fresh checkpoint folder.")
        self.initial_flops = state.get("initial_flops")
        self.finished = state.get("finished")
        self.schedule.set_state(state.get("schedule", {}))
        self.reconfigurations = _records(state.get("reconfigurations", []))
        self._resumed = True

    # -- the cut -----------------------------------------------------------
    def reconfigure(self, epoch: int, plan: planning.Plan
                    ) -> Reconfiguration:
        """Applies `plan` to the model now (also outside `fit`, after
        `set_model(model)`), after the 1-based `epoch` (0: before any)."""
        if self.model is None:
            raise ValueError("Reconfigure.reconfigure: no model; pass the "
                             "callback to model.fit or call set_model(model).")
        start = time.perf_counter()
        before = self._measure()
        changes = plan.changes()
        removed_norm = planning.removed_norm(plan)
        if changes:
            self._emit("cut", epoch=epoch)  # the model is still the old one
            inplace.reconfigure_in_place(self.model, plan)
        after = self._measure()
        done = Reconfiguration(
            epoch, before[0], after[0], before[1], after[1], before[2],
            after[2], time.perf_counter() - start, changes,
            removed_norm=removed_norm)
        self.reconfigurations.append(done)
        if changes:  # at the end of the 0-based epoch `epoch - 1`
            self._companions.after_change(epoch - 1 if epoch else None, done,
                                          plan)
        else:
            self._emit("no_change", epoch=epoch)
        if self.verbose:
            print(describe(done, self.verbose))
        return done

    def _measure(self) -> tuple[int, int | None, int]:
        """Parameters, forward FLOPs per example and gradient bytes now."""
        flops = None if self.initial_flops is None else \
            cost_lib.forward_flops(self.model)
        return (self.model.count_params(), flops,
                cost_lib.gradient_bytes(self.model))


def _described(schedule: schedules.Schedule) -> dict[str, Any]:
    """A schedule's class and config, as a checkpoint compares them."""
    return json.loads(json.dumps({"class": type(schedule).__name__,
                                  "config": schedule.get_config()}))


def _agreed(model: keras.Model, decision: schedules.Decision | None,
            context: Any) -> schedules.Decision | None:
    """The first replica's `decision`, for every replica and worker of
    `model`'s strategy (one broadcast: whether there is one, `last`, and
    the plan's channels; `context()` gives the graph when this replica has
    no plan)."""
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
        return decision
    plan = None if decision is None else decision.plan
    graph = context().graph if plan is None else plan.graph
    keep = np.ones(len(graph.root)) if plan is None else plan.keep
    flags = [decision is not None, plan is not None,
             decision is not None and decision.last]
    agreed = distribute.broadcast(strategy, np.concatenate(
        [np.asarray(flags, float), np.asarray(keep, float)]))
    if not agreed[0]:
        return None
    if not agreed[1]:
        return schedules.Decision(None, bool(agreed[2]))
    if plan is None:  # the first replica planned a cut, this one not
        plan = planning.Plan.keep_all(graph)
    plan.keep = agreed[3:] > 0.5
    return schedules.Decision(plan, bool(agreed[2]))


def _after_retrace(epoch: int, done: list[Reconfiguration]) -> bool:
    """Whether the 0-based `epoch` begins with a train function traced
    anew in every run that gets there, resumed or not: the first, and
    each after a cut (a fade folds into it: `fading`)."""
    return epoch == 0 or any(r.epoch == epoch and r.changes for r in done)


def _records(saved: list[dict[str, Any]]) -> list[Reconfiguration]:
    """`get_state()`'s reconfigurations back (checkpoints written before
    issue 41 also hold the RunLog's step times there: left out)."""
    known = {field.name for field in dataclasses.fields(Reconfiguration)}
    return [Reconfiguration(**{**{k: v for k, v in r.items() if k in known},
                               "changes": [tuple(c) for c in r["changes"]]})
            for r in saved]


def describe(done: Reconfiguration, verbose: int = 1) -> str:
    """What `Reconfigure` prints for `done` (verbose 2: every layer)."""
    head = f"Reconfigure (epoch {done.epoch}): "
    if not done.changes:
        return head + f"nothing to cut ({done.seconds:.2f} s)"
    share = 100.0 * (done.params_after - done.params_before) / max(
        done.params_before, 1)
    flops = ""
    if done.flops_before:
        change = done.flops_after / done.flops_before - 1.0
        flops = (f", FLOPs/example {done.flops_before:,} -> "
                 f"{done.flops_after:,} ({100.0 * change:+.1f}%)")
    lines = [head + f"parameters {done.params_before:,} -> "
             f"{done.params_after:,} ({share:+.1f}%){flops}, all-reduce "
             f"bytes/step {done.gradient_bytes_before:,} -> "
             f"{done.gradient_bytes_after:,}, {len(done.changes)} layer "
             f"outputs narrowed"
             + ("" if done.removed_norm is None else
                f" (their norm {done.removed_norm:.2f} of the kept)")
             + f", {done.seconds:.2f} s"]
    if verbose > 1:
        width = max(len(path) for path, _, _ in done.changes)
        lines += [f"  {path:<{width}}  {old:>5} -> {new}"
                  for path, old, new in done.changes]
    return "\n".join(lines)
