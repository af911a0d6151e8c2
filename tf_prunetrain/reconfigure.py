"""`Reconfigure`: PruneTrain inside `model.fit` — calibrate λ, shrink in place."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from tf_prunetrain import cost as cost_lib
from tf_prunetrain import coupling
from tf_prunetrain import distribute
from tf_prunetrain import inplace
from tf_prunetrain import proximal
from tf_prunetrain import surgery
from tf_prunetrain.regularizers import GroupLasso
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


class Reconfigure(RunLog):
    """Prunes dead channels every `interval` epochs, in place, during `fit`.

    At the first training step the GroupLasso strength λ of every regularized
    kernel is set from `penalty_ratio` r, so that the penalty is the fraction
    r of the total loss at the start: `λ = r·L₀ / ((1 − r)·GL(W₀))` (L₀ is the
    first batch's loss with λ = 0). With `penalty_ratio=None` the strengths
    the model already has are kept. Every `interval` epochs, after that
    epoch's validation, the channels whose coupled kernel slices all have
    `max|w| < threshold` are removed from the same model object: layers get
    smaller variables, weights/BatchNorm statistics/optimizer state keep
    their surviving slices and the rest of the same `fit` runs the smaller
    model. Dead residual branches keep `min_channels` channels (removing them
    needs a rebuild: `prune_channels` after training does it). Kernels with
    `GroupLasso(proximal=True)` get their proximal step
    (`attach_proximal_step`) at the start of `fit`.

    It is a `RunLog`: it accounts the training FLOPs spent against the dense
    model's and logs the cost every epoch (see `RunLog`), plus
    `prunetrain_lambda`, `prunetrain_penalty` (λ·group lasso, end of epoch)
    and `prunetrain_penalty_share` (its fraction of the epoch's loss); put
    `Reconfigure` before `CSVLogger`/`TensorBoard` in the callback list.
    `reconfigurations` lists what each reconfiguration did; `summary()`
    prints channels initial → now per layer.

    Args:
      interval: epochs between reconfigurations (the paper: 10 on CIFAR).
      penalty_epochs: None (the paper: the group lasso acts for the whole
        run), or the number of epochs it acts for: after that epoch the
        model is reconfigured one last time, every GroupLasso strength is set
        to 0 and the smaller model trains on without penalty (a short,
        strong pruning phase, then plain training of what is left).
      threshold: deadness threshold on absolute kernel values.
      penalty_ratio: r in (0, 1), or None to keep the model's λ.
      round_to: keep convolution/Dense widths multiples of this.
      min_channels: fewest channels a layer keeps.
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
    """

    def __init__(self, interval: int = 10, threshold: float = 1e-4,
                 penalty_ratio: float | None = 0.2, round_to: int = 1,
                 min_channels: int = 1, verbose: int = 1,
                 log_dir: str | None = None, batch_size: int | None = None,
                 penalty_epochs: int | None = None):
        super().__init__(log_dir=log_dir, batch_size=batch_size)
        if penalty_epochs is not None and (
                isinstance(penalty_epochs, bool)
                or not isinstance(penalty_epochs, int) or penalty_epochs < 1):
            raise ValueError("Reconfigure: penalty_epochs must be an integer "
                             f">= 1 or None, got {penalty_epochs!r}.")
        self.penalty_epochs = penalty_epochs
        for name, value in (("interval", interval), ("round_to", round_to),
                            ("min_channels", min_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Reconfigure: {name} must be an integer >= 1, "
                                 f"got {value!r}.")
        if not threshold >= 0:
            raise ValueError(f"Reconfigure: threshold must be >= 0, got "
                             f"{threshold!r}.")
        if penalty_ratio is not None and not 0 < penalty_ratio < 1:
            raise ValueError("Reconfigure: penalty_ratio must be in (0, 1) or "
                             f"None, got {penalty_ratio!r}.")
        self.interval, self.threshold = interval, threshold
        self.penalty_ratio, self.round_to = penalty_ratio, round_to
        self.min_channels, self.verbose = min_channels, verbose
        self.reconfigurations: list[Reconfiguration] = []
        self._calibrating = False
        self._restored_calibration = False
        self._retrace: list[float] | None = None  # step times after a change
        self._step_start = 0.0

    # -- λ -------------------------------------------------------------------
    def _regularized(self) -> list[tuple[Any, GroupLasso]]:
        return [(v, v.regularizer) for v in self.model.trainable_variables
                if isinstance(getattr(v, "regularizer", None), GroupLasso)]

    @property
    def strength(self) -> float:
        """The GroupLasso strength λ now in use (the first regularizer's)."""
        pairs = self._regularized()
        return pairs[0][1].strength if pairs else 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        pairs = self._regularized()
        if not pairs:
            raise ValueError(
                f"Reconfigure: model '{self.model.name}' has no GroupLasso "
                "regularizer, so no channel would ever die. Wrap it first: "
                "model = tf_prunetrain.add_group_lasso(model).")
        proximal.attach_proximal_step(self.model)
        if self.penalty_ratio is not None and not self._calibrated():
            for _, reg in pairs:
                reg.strength = 0.0
            self._calibrating = True
        super().on_train_begin(logs)

    def _calibrated(self) -> bool:
        return self._restored_calibration or getattr(
            self.model, "_prunetrain_calibrated", False)

    def state(self) -> dict[str, Any]:
        """`RunLog.state()` plus whether λ is calibrated and what the
        reconfigurations did."""
        return {**super().state(),
                "calibrated": bool(self.model is not None
                                   and self._calibrated()),
                "reconfigurations": [dataclasses.asdict(r)
                                     for r in self.reconfigurations]}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues a run (see `RunLog.restore`); a calibrated λ is kept
        (the model's regularizers carry it)."""
        super().restore(state)
        self._restored_calibration = bool(state.get("calibrated"))
        self.reconfigurations = [
            Reconfiguration(**{**r, "changes": [tuple(c) for c in r["changes"]]})
            for r in state.get("reconfigurations", [])]

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self._retrace is not None:
            self._time_retrace(time.perf_counter() - self._step_start)
        if not self._calibrating:
            return
        self._calibrating = False
        loss = float((logs or {}).get("loss", np.nan))
        pairs = self._regularized()
        penalty = float(sum(float(reg.penalty(v)) for v, reg in pairs))
        if not np.isfinite(loss) or not np.isfinite(penalty) or penalty <= 0:
            raise ValueError(
                f"Reconfigure: cannot calibrate λ from loss {loss} and group "
                f"penalty {penalty}; fix the input or pass penalty_ratio=None "
                "with a strength set by add_group_lasso(strength=...).")
        r = self.penalty_ratio
        # Every worker uses the first replica's λ (see `distribute`).
        strength = float(distribute.broadcast(
            self.model.distribute_strategy,
            np.float64(r * loss / ((1.0 - r) * penalty))))
        for _, reg in pairs:
            reg.strength = strength
        self.model._prunetrain_calibrated = True
        self.record("calibration", strength=strength, penalty_ratio=r,
                    loss=loss, group_lasso=penalty)
        if self.verbose:
            print(f"Reconfigure: λ = {strength:.3g} (penalty ratio {r:g}: "
                  f"loss {loss:.4g}, group lasso {penalty:.4g})")

    def _time_retrace(self, step_seconds: float) -> None:
        self._retrace.append(step_seconds)
        if len(self._retrace) == 2:
            first, second = self._retrace
            done = self.reconfigurations[-1]
            done.retrace_seconds = max(0.0, first - second)
            self._retrace = None
            self.record("retrace", epoch=done.epoch,
                        seconds=done.retrace_seconds)

    # -- reconfiguration ------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        last = self.penalty_epochs
        if last is None or done <= last:
            if done % self.interval == 0 or done == last:
                self.reconfigure(done)
            if done == last:
                for _, reg in self._regularized():
                    reg.strength = 0.0
                self.record("penalty_end", epoch=done)
                if self.verbose:
                    print(f"Reconfigure (epoch {done}): group lasso off, "
                          "no further reconfiguration")
        super().on_epoch_end(epoch, logs)

    def scalars(self, logs: dict) -> dict[str, float]:
        out = super().scalars(logs)
        pairs = self._regularized()
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

    def reconfigure(self, epoch: int = 0) -> Reconfiguration:
        """Removes the dead channels now (also callable outside `fit`, after
        `set_model(model)`)."""
        if self.model is None:
            raise ValueError("Reconfigure.reconfigure: no model; pass the "
                             "callback to model.fit or call set_model(model).")
        start = time.perf_counter()
        if self.cost is None and self.initial_cost is None:
            self.refresh()  # called before any fit
        before, flops_before = self.model.count_params(), self._flops()
        bytes_before = self._gradient_bytes()
        plan = surgery.plan_pruning(
            coupling.channel_groups(self.model), self.threshold,
            round_to=self.round_to, min_channels=self.min_channels,
            remove_blocks=False)
        # One decision for all replicas and workers: the first replica's.
        plan.keep = distribute.broadcast(self.model.distribute_strategy,
                                         plan.keep)
        changes = plan.changes()
        if changes:
            inplace.reconfigure_in_place(self.model, plan)
            self.refresh()
            self._retrace = []
        seconds = time.perf_counter() - start
        done = Reconfiguration(epoch, before, self.model.count_params(),
                               flops_before, self._flops(), bytes_before,
                               self._gradient_bytes(), seconds, changes)
        self.reconfigurations.append(done)
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
