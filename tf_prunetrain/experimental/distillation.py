"""Distillation across a cut: the model before it teaches the model after.

At a cut the narrow network goes on from labels alone, though the wide one
it came from was the better model at that moment (issue 38). `Distill`
keeps a frozen copy of the wide model (the *teacher*) and, for `epochs`
epochs after each cut (and, with `during_fade`, over the fade before it),
adds to the training loss the teacher's soft predictions (Hinton et al.,
2015; US-Nets' in-place distillation; Minitron's distillation after
pruning):

    loss = compiled loss (+ layer losses) + weight · T² · KL(p_T ‖ q_T)

with `p_T = softmax(teacher logits / T)` and `q_T = softmax(student logits
/ T)`, the KL summed over classes and averaged over the batch (a Keras
`KLDivergence`, so it is scaled for `tf.distribute` like the compiled
loss). `distillation_loss` is that term alone.

Decided here:

* **The teacher is the model as the cut's fade began** (a gentle schedule:
  by the cut the faded channels are zero, so the model just before the cut
  *is* the narrow one), **or as it was just before an abrupt cut**. A
  fresh model teaches nothing: with `trained_start=False` (training from
  scratch) no teacher is taken before the first epoch has trained, so a
  cut whose fade runs in epoch 1 goes untaught. It is a
  copy without tf_prunetrain's regularizers (`strip_prunetrain`), never
  trained, in the `fit`'s strategy scope. **Its BatchNorm layers normalize
  each batch by its own statistics**, as in training (a stateless call:
  its variables do not change; Dropout, if any, acts as in training).
  Measured: ResNet-20 after one epoch from scratch (Fashion-MNIST, 2,000
  images) was right on 9.6 % of test images in inference mode (logits'
  std 91: the moving statistics lag the weights, issue 37) and on 55 % in
  this mode.
* **A frozen copy teaches per batch**, not logits cached once per example:
  it is right under augmentation (the teacher sees the same augmented
  batch), needs no example index in the input pipeline, and costs one
  teacher forward pass per step for `epochs` epochs. A cache costs one
  forward pass over the data per cut and its logits go stale under
  augmentation; with `epochs=1` the two cost the same forward passes.
* Outputs may be logits or probabilities: `from_logits=None` reads the
  compiled loss's `from_logits` (a probability output's logarithm is its
  logits up to a constant, which the softmax ignores). A compiled loss
  that says neither is refused at the start of `fit`: pass `from_logits`.
* The term is added in the train step only (`evaluate` reports the plain
  loss). Attaching or detaching re-makes the train function (one trace).
* Put it after `Reconfigure` in the callback list (it hears of fades and
  cuts through `Reconfigure`'s events) and, to resume, among the trackers
  of `tf_prunetrain.Checkpoint`, which then saves the teacher beside the
  model (`save_assets`, `load_assets`).

Example:
>>> import keras, numpy as np, tf_prunetrain
>>> from tf_prunetrain.experimental import distillation
>>> student = keras.ops.convert_to_tensor([[2.0, 0.0], [0.0, 1.0]])
>>> teacher = keras.ops.convert_to_tensor([[1.0, 0.0], [0.0, 3.0]])
>>> round(float(distillation.distillation_loss(student, teacher, 2.0)), 4)
0.2364
"""

from __future__ import annotations

import os
from typing import Any

import keras

from tf_prunetrain import _checks
from tf_prunetrain import export

TEACHER_FILE = "distill_teacher.keras"


def distillation_loss(student: Any, teacher: Any, temperature: float,
                      from_logits: bool = True) -> Any:
    """`T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, summed over the
    last axis and averaged over the batch (scaled for `tf.distribute` as
    Keras' losses are). With `from_logits=False` both are probabilities
    (their logarithms are taken as logits)."""
    if not from_logits:
        student = keras.ops.log(keras.ops.clip(student, 1e-7, 1.0))
        teacher = keras.ops.log(keras.ops.clip(teacher, 1e-7, 1.0))
    t = float(temperature)
    soft_teacher = keras.ops.softmax(keras.ops.stop_gradient(teacher) / t)
    soft_student = keras.ops.softmax(student / t)
    kl = keras.losses.KLDivergence(reduction="sum_over_batch_size")
    return (t * t) * kl(soft_teacher, soft_student)


def attach(model: keras.Model, teacher: keras.Model, temperature: float,
           weight: float, from_logits: bool) -> None:
    """Adds `weight · distillation_loss` from `teacher` to `model`'s
    training loss (its `compute_loss`, in the train step only) and
    re-makes the train function. `detach` takes it off."""
    base = type(model).compute_loss.__get__(model)

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = base(x, y, y_pred, sample_weight, training=training)
        if not training:
            return loss
        taught, _ = teacher.stateless_call(
            teacher.trainable_variables, teacher.non_trainable_variables, x,
            training=True)
        return loss + weight * distillation_loss(
            y_pred, keras.ops.cast(taught, y_pred.dtype), temperature,
            from_logits)

    compute_loss.teacher = teacher
    model.compute_loss = compute_loss
    if model.compiled:
        model.make_train_function(force=True)


def teacher_of(model: keras.Model) -> keras.Model | None:
    """The teacher `attach` gave `model`, or None."""
    return getattr(vars(model).get("compute_loss"), "teacher", None)


def detach(model: keras.Model) -> None:
    """Takes `attach`'s term off `model`'s loss (nothing if none)."""
    if teacher_of(model) is None:
        return
    del model.compute_loss
    if model.compiled:
        model.make_train_function(force=True)


def _from_logits(model: keras.Model) -> bool | None:
    """The compiled loss's `from_logits`, or None when it does not say."""
    loss = model.loss
    if isinstance(loss, str):
        return False if "crossentropy" in loss else None
    config = loss.get_config() if isinstance(loss, keras.losses.Loss) \
        else {}
    value = config.get("from_logits")
    return None if value is None else bool(value)


class Distill(keras.callbacks.Callback):
    """The model before each cut teaches the model after it (module doc).

    Args:
      epochs: epochs after each cut with the teacher's term (>= 1).
      temperature: T > 0 of the softened predictions.
      weight: the term's factor (> 0) beside the compiled loss.
      during_fade: also over a gentle cut's fade (the epoch before it).
      from_logits: whether the model outputs logits; None reads the
        compiled loss's.
      trained_start: whether the model the run starts from is trained (a
        pretrained model may teach from epoch 1); False from scratch.
      verbose: 1 prints a line when a teacher starts and stops.

    After `fit`, `teaching_steps` counts the steps trained with a teacher.

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.models import resnet_cifar
    >>> model = tf_prunetrain.add_group_lasso(
    ...     resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x, y = np.random.rand(32, 8, 8, 1), np.arange(32) % 10
    >>> distill = tf_prunetrain.experimental.Distill(epochs=1)
    >>> _ = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
    ...     tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
    ...                               round_to=1, verbose=0), distill])
    >>> distill.teaching_steps  # the fade's epoch 1 and epoch 2 after it
    4
    """

    def __init__(self, epochs: int = 2, temperature: float = 4.0,
                 weight: float = 1.0, during_fade: bool = True,
                 from_logits: bool | None = None, trained_start: bool = True,
                 verbose: int = 0) -> None:
        super().__init__()
        _checks.positive_int(epochs, "epochs", "Distill")
        for name, value in (("temperature", temperature), ("weight", weight)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not value > 0:
                raise ValueError(f"Distill: {name} must be a number > 0, "
                                 f"got {value!r}.")
        if from_logits is not None and not isinstance(from_logits, bool):
            raise ValueError("Distill: from_logits must be True, False or "
                             f"None (read from the compiled loss), got "
                             f"{from_logits!r}.")
        self.epochs, self.temperature = epochs, float(temperature)
        self.weight, self.during_fade = float(weight), during_fade
        self.from_logits, self.verbose = from_logits, verbose
        self.trained_start = trained_start
        self.teacher: keras.Model | None = None
        self.until: int | None = None  # the last 1-based epoch it teaches
        self.fading = False  # a fade runs: its teacher was taken
        self.teaching_steps = 0
        self._logits: bool | None = None
        self._saved_teacher = False  # set_state: the checkpoint has one
        self._batch = 0  # the first step of the batch callback in progress

    # -- the run ---------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        if len(self.model.outputs) != 1:
            raise ValueError(
                f"Distill: model '{self.model.name}' has "
                f"{len(self.model.outputs)} outputs; distillation teaches "
                "one output of class scores.")
        self._logits = self.from_logits
        if self._logits is None:
            self._logits = _from_logits(self.model)
        if self._logits is None:
            raise ValueError(
                f"Distill: cannot tell whether model '{self.model.name}' "
                f"outputs logits from its compiled loss {self.model.loss!r}; "
                "pass Distill(from_logits=True) for logits or False for "
                "probabilities.")

    def on_prunetrain_event(self, event: str, fields: dict[str, Any]
                            ) -> None:
        """"fade": the teacher is the model now; "cut" (abrupt): the model
        now, unless a fade already took it; "no_change": none comes."""
        if event == "fade" or (event == "cut" and not self.fading):
            # A fade in epoch 1 begins with the model the run started from.
            if self.trained_start or event == "cut" or fields["epoch"] > 1:
                self._take_teacher()
            self.fading = event == "fade"
        elif event == "no_change":
            self.fading = False
            if self.until is None:
                self.teacher = None

    def on_reconfigure(self, reconfiguration: Any, plan: Any) -> None:
        """A cut: teach from now to `epochs` epochs after it."""
        self.fading = False
        if self.teacher is not None:
            self.until = reconfiguration.epoch + self.epochs
            self._sync(True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._sync(self.teacher is not None and (
            (self.fading and self.during_fade)
            or (self.until is not None and epoch + 1 <= self.until)))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None
                             ) -> None:
        self._batch = batch  # steps_per_execution k: k steps to the end

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        if teacher_of(self.model) is not None:
            self.teaching_steps += batch - self._batch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.until is not None and epoch + 1 >= self.until \
                and not self.fading:
            self.until, self.teacher = None, None
            self._sync(False)

    def on_train_end(self, logs: dict | None = None) -> None:
        detach(self.model)  # a later fit, or evaluate, runs without it

    def _take_teacher(self) -> None:
        strategy = self.model.distribute_strategy
        with strategy.scope():
            self.teacher = export.strip_prunetrain(self.model)

    def _sync(self, teaching: bool) -> None:
        """Attaches the teacher if `teaching` and none is, or detaches."""
        now = teacher_of(self.model)
        if teaching and now is not self.teacher:
            detach(self.model)
            attach(self.model, self.teacher, self.temperature, self.weight,
                   self._logits)
            if self.verbose:
                print(f"Distill: teacher on (T = {self.temperature:g}, "
                      f"weight {self.weight:g})")
        elif not teaching and now is not None:
            detach(self.model)
            if self.verbose:
                print("Distill: teacher off")

    # -- checkpoints -----------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """What a resumed run needs besides the teacher (`save_assets`)."""
        return {"until": self.until, "fading": self.fading,
                "teacher": self.teacher is not None,
                "teaching_steps": self.teaching_steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self.until, self.fading = state.get("until"), state.get("fading",
                                                                 False)
        self.teaching_steps = state.get("teaching_steps", 0)
        self._saved_teacher = bool(state.get("teacher"))

    def save_assets(self, folder: str) -> None:
        """Writes the teacher (if any) into a checkpoint's `folder`."""
        if self.teacher is not None:
            self.teacher.save(os.path.join(folder, TEACHER_FILE))

    def load_assets(self, folder: str) -> None:
        """Reads the teacher `save_assets` wrote (in the current strategy
        scope); a checkpoint whose state has one but whose file is missing
        is damaged (FileNotFoundError)."""
        self.teacher = None
        if self._saved_teacher:
            self.teacher = keras.models.load_model(
                os.path.join(folder, TEACHER_FILE), compile=False)
