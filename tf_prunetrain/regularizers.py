"""Regularize: PruneTrain's channel group lasso, all of it.

* `GroupLasso` penalises the L2 norm of every channel slice of a weight,
  which drives whole channels to exactly-prunable zero during training.
* `add_group_lasso(model)` attaches one to every kernel whose channels can
  be removed (the channel-coupling analysis says which axes).
* `ProximalStep` / `attach_proximal_step`: with `GroupLasso(proximal=True)`
  the penalty is applied as a proximal step after each update instead of
  a loss term.
* `lasso_variables(model)`: the variables that carry a `GroupLasso`;
  `calibrate`/`set_strength` set λ, `switch_off` ends the lasso, and
  `penalty_scalars` is what `Reconfigure` logs of it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from tf_prunetrain import coupling
from tf_prunetrain import handlers
from tf_prunetrain import surgery

__all__ = ["GroupLasso", "ProximalStep", "add_group_lasso",
           "attach_proximal_step", "lasso_variables"]

_HALF_DTYPES = ("float16", "bfloat16")


def _validate_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(
        strength, (numbers.Real,)
    ):
        try:
            strength = float(strength)  # NumPy scalars, eager tensors
        except (TypeError, ValueError):
            raise TypeError(
                "Argument `strength` must be a real number. "
                f"Received: strength={strength!r}"
            ) from None
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(
            "Argument `strength` must be a finite number >= 0. "
            f"Received: strength={strength}"
        )
    return strength


def _validate_axes(axes: Any) -> tuple[int, ...]:
    if isinstance(axes, numbers.Integral) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(
            "Argument `axes` must be a sequence of ints. "
            f"Received: axes={axes!r}"
        ) from None
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(
                "Argument `axes` must contain only ints. "
                f"Received: axes={axes!r}"
            )
    axes = tuple(int(a) for a in axes)
    if not axes:
        raise ValueError(
            "Argument `axes` must name at least one axis. Received: axes=()"
        )
    if len(set(axes)) != len(axes):
        raise ValueError(
            f"Argument `axes` must not repeat an axis. Received: axes={axes}"
        )
    return axes


def _validate_epsilon(epsilon: Any) -> float:
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `epsilon` must be a real number. "
            f"Received: epsilon={epsilon!r}"
        ) from None
    if not math.isfinite(epsilon) or epsilon <= 0.0:
        raise ValueError(
            "Argument `epsilon` must be a finite number > 0 (it keeps the "
            "gradient of an all-zero group finite). "
            f"Received: epsilon={epsilon}"
        )
    return epsilon


@keras.saving.register_keras_serializable(package="tf_prunetrain")
class GroupLasso(keras.regularizers.Regularizer):
    """Channel group lasso: `strength * sum_axes sum_groups sqrt(sum w^2 + eps)`.

    For each axis in `axes` there is one group per index along that axis,
    holding every weight with that index (all other axes reduced). Usual
    choices (Keras kernel layouts):

    - ConvND kernel `(..., c_in, c_out)`: `axes=(-2, -1)` (input- and
      output-channel groups; each weight sits in two groups).
    - First conv on image channels: `axes=(-1,)` (output channels only).
    - Classifier `Dense`: `axes=(-2,)` (input features only).
    - `DepthwiseConv2D` kernel `(kh, kw, c, multiplier)`: `axes=(-2,)`.

    `strength` lives in a non-trainable float32 `keras.Variable`, so assigning
    `reg.strength = ...` after a model was compiled and traced takes effect
    at the next step without retracing (TensorFlow backend: the traced
    function reads the variable; a jitted JAX train function captures the
    value at trace time, so call `model.make_train_function(force=True)`
    there). The variable is not a layer weight: it is not trained, saved in
    weight files or counted in `model.weights`. One instance may be
    shared by several layers to drive them with one coefficient; saving or
    cloning a model gives every layer its own copy built from `get_config()`.

    Precision: the math runs in float32 for float16/bfloat16 weights (the sum
    of squares overflows float16 easily) and the result is returned as float32,
    which is also what `Model.fit` needs to add it to a float32 loss under a
    pure `"float16"` policy. Under `"mixed_float16"` the variables are float32
    anyway. float64 weights are computed and returned in float64.

    Proximal mode (`proximal=True`): the penalty adds nothing to the loss;
    instead, after every optimizer update, each group is shrunk towards zero
    by `learning_rate * strength` in L2 norm and set exactly to zero when its
    norm is below that (group soft-thresholding, the proximal operator of
    the penalty; see `tf_prunetrain.regularizers.attach_proximal_step`, which
    `Reconfigure` calls for you). A plain sub-gradient step only makes a
    group oscillate around zero with an amplitude of about
    `learning_rate * strength / (1 - momentum)`, so channels fall below the
    pruning threshold only once the learning rate is tiny; the proximal step
    zeroes them while the learning rate is still high, which is what turns
    pruning into training-time savings. With both input- and
    output-channel axes the two shrinkages are applied one after the other.

    Args:
        strength: Coefficient `lambda >= 0`. May be changed later.
        axes: Axes along which groups are formed; one group per index.
        epsilon: `> 0`, added inside each square root so that an all-zero
            group has a finite (zero) gradient.
        proximal: Apply the penalty as a proximal step after each update
            instead of as a loss term.
        calibrated: Whether `strength` was set by `calibrate` (from a
            penalty ratio). It is saved with the model, so a resumed or
            reloaded run keeps its λ instead of calibrating again.

    Example:

    >>> import numpy as np
    >>> reg = GroupLasso(strength=0.5, axes=(-1,))
    >>> w = np.array([[3.0, 0.0], [4.0, 0.0]], dtype="float32")
    >>> round(float(reg.penalty(w)), 3)  # column norms 5 and ~0
    5.0
    >>> round(float(reg(w)), 3)
    2.5
    >>> reg.strength = 0.1
    >>> round(float(reg(w)), 3)
    0.5
    >>> layer = keras.layers.Dense(4, kernel_regularizer=GroupLasso(1e-4, (-2,)))
    >>> prox = GroupLasso(strength=1.0, axes=(-1,), proximal=True)
    >>> float(prox(w))  # no loss term
    0.0
    >>> prox.shrink(w, 1.0).numpy().round(3)  # column norm 5 -> 4, ~0 -> 0
    array([[2.4, 0. ],
           [3.2, 0. ]], dtype=float32)
    """

    def __init__(
        self,
        strength: float = 0.0,
        axes: Sequence[int] = (-2, -1),
        epsilon: float = 1e-8,
        proximal: bool = False,
        calibrated: bool = False,
    ) -> None:
        for name, value in (("proximal", proximal),
                            ("calibrated", calibrated)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"Argument `{name}` must be True or False. "
                                f"Received: {name}={value!r}")
        self._proximal = bool(proximal)
        self.calibrated = bool(calibrated)
        strength = _validate_strength(strength)
        self._axes = _validate_axes(axes)
        self._epsilon = _validate_epsilon(epsilon)
        self._strength = keras.Variable(
            strength,
            shape=(),
            dtype="float32",
            trainable=False,
            autocast=False,
            name="group_lasso_strength",
        )

    # ------------------------------------------------------------------
    # Properties
    @property
    def strength(self) -> float:
        """Current coefficient as a Python float (settable)."""
        # Shortest decimal that round-trips the stored float32 (0.3, not
        # 0.30000001192092896), so configs read naturally.
        # numpy() also reads a mirrored variable (tf.distribute).
        return float(str(np.float32(self._strength.numpy())))

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength.assign(_validate_strength(value))

    @property
    def strength_variable(self) -> keras.Variable:
        """The scalar float32 variable read by traced train functions."""
        return self._strength

    @property
    def axes(self) -> tuple[int, ...]:
        """Axes along which groups are formed (as given, maybe negative)."""
        return self._axes

    @property
    def epsilon(self) -> float:
        """Constant added inside each group's square root."""
        return self._epsilon

    @property
    def proximal(self) -> bool:
        """Whether the penalty is applied as a proximal step (no loss term)."""
        return self._proximal

    # ------------------------------------------------------------------
    # Math
    def _normalized_axes(self, shape: Sequence[Any]) -> list[int]:
        rank = len(shape)
        normalized = []
        for axis in self._axes:
            if not -rank <= axis < rank:
                raise ValueError(
                    f"GroupLasso axes={self._axes} do not fit a weight of "
                    f"shape {tuple(shape)} (rank {rank}): axis {axis} is out "
                    "of range."
                )
            normalized.append(axis % rank)
        if len(set(normalized)) != len(normalized):
            raise ValueError(
                f"GroupLasso axes={self._axes} name the same axis twice for "
                f"a weight of shape {tuple(shape)} (rank {rank})."
            )
        return normalized

    @staticmethod
    def _promoted(x: Any) -> tuple[Any, str]:
        """`(x as a float32/float64 tensor, x's own dtype)`: half-precision
        sums of squares overflow, so the math runs in float32 at least."""
        dtype = keras.backend.standardize_dtype(getattr(x, "dtype", None))
        compute_dtype = "float64" if dtype == "float64" else "float32"
        x = ops.convert_to_tensor(x)
        if keras.backend.standardize_dtype(x.dtype) != compute_dtype:
            x = ops.cast(x, compute_dtype)
        return x, dtype

    def _squares(self, x: Any) -> tuple[Any, list[int]]:
        """Returns `(sum of w^2 over non-group axes, group axes)`."""
        x, _ = self._promoted(x)
        axes = self._normalized_axes(x.shape)
        squares = ops.square(x)
        # Axes that belong to no group are reduced once, shared by all groups.
        common = [i for i in range(len(x.shape)) if i not in axes]
        if common:
            squares = ops.sum(squares, axis=common)
        return squares, axes

    def penalty(self, x: Any) -> Any:
        """Un-scaled group sum `sum_axes sum_groups sqrt(sum w^2 + eps)`.

        Example:

        >>> import numpy as np
        >>> w = np.ones((3, 3, 2, 4), "float32")
        >>> p = GroupLasso(axes=(-2, -1)).penalty(w)  # 2*sqrt(36) + 4*sqrt(18)
        >>> round(float(p), 3)
        28.971
        """
        squares, axes = self._squares(x)
        # `squares` keeps the group axes in ascending order.
        order = sorted(axes)
        total = None
        for axis in axes:
            position = order.index(axis)
            others = [i for i in range(len(order)) if i != position]
            sums = ops.sum(squares, axis=others) if others else squares
            term = ops.sum(ops.sqrt(sums + self._epsilon))
            total = term if total is None else total + term
        return total

    def shrink(self, x: Any, threshold: Any) -> Any:
        """Group soft-thresholding: every group's L2 norm shrinks by
        `threshold` (a scalar, maybe a tensor), groups below it become
        exactly zero. Returns a tensor of `x`'s dtype."""
        w, dtype = self._promoted(x)
        threshold = ops.cast(threshold, w.dtype)
        rank = len(w.shape)
        for axis in self._normalized_axes(w.shape):
            others = [i for i in range(rank) if i != axis]
            norms = ops.sqrt(ops.sum(ops.square(w), axis=others, keepdims=True))
            scale = ops.relu(1.0 - threshold / ops.maximum(norms, 1e-30))
            w = w * scale
        return ops.cast(w, dtype)

    def __call__(self, x: Any) -> Any:
        if self._proximal:
            return ops.zeros((), "float32")
        value = self.penalty(x)
        strength = self._strength.value
        if keras.backend.standardize_dtype(value.dtype) != "float32":
            strength = ops.cast(strength, value.dtype)
        return strength * value

    # ------------------------------------------------------------------
    # Serialization and copying
    def get_config(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "axes": list(self._axes),
            "epsilon": self._epsilon,
            "proximal": self._proximal,
            "calibrated": self.calibrated,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GroupLasso":
        config = dict(config)
        if "axes" in config:
            config["axes"] = tuple(config["axes"])
        return cls(**config)

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies (copy/deepcopy/pickle) get their own strength variable.
        return (
            self.__class__,
            (self.strength, self._axes, self._epsilon, self._proximal,
             self.calibrated),
        )

    def __repr__(self) -> str:
        return (
            f"GroupLasso(strength={self.strength:g}, axes={self._axes}, "
            f"epsilon={self._epsilon:g}"
            + (", proximal=True" if self._proximal else "")
            + (", calibrated=True)" if self.calibrated else ")")
        )


def lasso_variables(model: keras.Model) -> list[tuple[Any, GroupLasso]]:
    """(variable, its GroupLasso) for every trainable variable of `model`
    that carries one.

    >>> import keras, tf_prunetrain
    >>> x = keras.Input((4,))
    >>> m = keras.Model(x, keras.layers.Dense(2, kernel_regularizer=
    ...     tf_prunetrain.GroupLasso(1e-3, axes=(-1,)))(x))
    >>> [v.name for v, _ in tf_prunetrain.regularizers.lasso_variables(m)]
    ['kernel']
    """
    return [(v, v.regularizer) for v in model.trainable_variables
            if isinstance(getattr(v, "regularizer", None), GroupLasso)]


def calibrate(model: keras.Model, loss: float, penalty_ratio: float
              ) -> float:
    """The GroupLasso strength λ that makes the penalty the fraction
    `penalty_ratio` r of the total loss: `λ = r·L / ((1 − r)·GL(W))`, L the
    loss without penalty, GL the summed group lasso of `model`'s regularized
    kernels now. Set it with `set_strength(model, λ, calibrated=True)`
    (`Reconfigure` does both, with the first step's loss).

    >>> import keras, tf_prunetrain
    >>> from tf_prunetrain import regularizers
    >>> x = keras.Input((4,))
    >>> m = tf_prunetrain.add_group_lasso(keras.Model(
    ...     x, keras.layers.Dense(3, name="d")(keras.layers.Dense(8)(x))))
    >>> lam = regularizers.calibrate(m, loss=2.0, penalty_ratio=0.2)
    >>> regularizers.set_strength(m, lam, calibrated=True)
    >>> pairs = regularizers.lasso_variables(m)
    >>> gl = sum(float(reg.penalty(v)) for v, reg in pairs)
    >>> round(lam * gl / (2.0 + lam * gl), 3), pairs[0][1].calibrated
    (0.2, True)

    Raises:
      ValueError: `loss` or the group lasso is not finite, or the group
        lasso is zero (λ would be meaningless).
    """
    if not 0 < penalty_ratio < 1:
        raise ValueError(f"calibrate: penalty_ratio must be in (0, 1), got "
                         f"{penalty_ratio!r}.")
    pairs = lasso_variables(model)
    if not pairs:
        raise ValueError(f"calibrate: model '{model.name}' has no GroupLasso "
                         "regularizer; wrap it with add_group_lasso first.")
    penalty = float(sum(float(reg.penalty(v)) for v, reg in pairs))
    if not np.isfinite(loss):
        raise ValueError(
            f"calibrate: the loss is {loss}, so λ cannot be calibrated from "
            "it. A loss that is not finite at the first step almost always "
            "means NaN or infinite values in the training data or labels "
            "(check np.isfinite on them), or a learning rate so high the "
            "first update diverged.")
    if not np.isfinite(penalty) or penalty <= 0:
        raise ValueError(
            f"calibrate: the group penalty of the regularized kernels is "
            f"{penalty} (NaN, infinite or zero weights). Fix the "
            "initialization, or pass penalty_ratio=None with a strength set "
            "by add_group_lasso(strength=...).")
    return penalty_ratio * loss / ((1.0 - penalty_ratio) * penalty)


def set_strength(model: keras.Model, strength: float,
                 calibrated: bool | None = None) -> None:
    """Sets every GroupLasso strength of `model` (and, unless None, their
    `calibrated` mark)."""
    for _, reg in lasso_variables(model):
        reg.strength = strength
        if calibrated is not None:
            reg.calibrated = calibrated


def switch_off(model: keras.Model) -> None:
    """Every GroupLasso strength of `model` to 0; the regularizers and
    proximal steps leave the variables (no cost left in the step; layer
    configs keep them, at strength 0). Re-make the train function after."""
    for variable, regularizer in lasso_variables(model):
        regularizer.strength = 0.0
        variable.regularizer = None
        if isinstance(variable.constraint, ProximalStep):
            variable.constraint = None


def penalty_scalars(model: keras.Model, logs: dict) -> dict[str, float]:
    """λ (the first regularizer's), the penalty λ·GL(W) now and its share
    of the epoch's `logs["loss"]`: what `Reconfigure` adds to the logs."""
    pairs = lasso_variables(model)
    penalty = float(sum(reg.strength * float(reg.penalty(v))
                        for v, reg in pairs))
    out = {"lambda": pairs[0][1].strength if pairs else 0.0,
           "penalty": penalty}
    loss = logs.get("loss")
    if loss is not None and float(loss) > 0:
        out["penalty_share"] = penalty / float(loss)
    return out


class ProximalStep(keras.constraints.Constraint):
    """`w ← shrink(w, η·λ)`, η the model's current learning rate.

    The learning rate is read from `model.optimizer` when the train step is
    traced, so learning-rate schedules, callbacks that set
    `optimizer.learning_rate`, and the new optimizer an in-place
    reconfiguration builds are all followed.
    """

    def __init__(self, regularizer: GroupLasso, model: keras.Model) -> None:
        self.regularizer = regularizer
        self.model = model

    def __call__(self, w: Any) -> Any:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                f"ProximalStep: model '{self.model.name}' has no optimizer; "
                "compile it before training.")
        rate = ops.cast(optimizer.learning_rate, "float32")
        return self.regularizer.shrink(
            w, rate * self.regularizer.strength_variable.value)


def attach_proximal_step(model: keras.Model) -> int:
    """Binds a `ProximalStep` to every kernel with `GroupLasso(proximal=True)`.

    Call it after `compile` and before training when you train without
    `Reconfigure` (which calls it). Idempotent; returns how many kernels
    have a proximal step. Traced train functions are re-made so that the
    next step applies it.

    Raises:
      ValueError: a kernel already has another constraint (Keras gives a
        variable one constraint), or the optimizer accumulates gradients
        (the step would run once per micro-batch). Nothing is attached then.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((4,))
    >>> y = keras.layers.Dense(1)(keras.layers.Dense(8, name="hidden")(x))
    >>> model = tf_prunetrain.add_group_lasso(keras.Model(x, y),
    ...                                       strength=1.0, proximal=True)
    >>> model.compile("sgd", "mse")
    >>> tf_prunetrain.regularizers.attach_proximal_step(model)
    2
    """
    pairs = [(v, reg) for v, reg in lasso_variables(model) if reg.proximal]
    clashes = [v.path for v, _ in pairs
               if v.constraint is not None
               and not isinstance(v.constraint, ProximalStep)]
    if clashes:
        raise ValueError(
            "attach_proximal_step: these kernels already have a constraint, "
            "and a Keras variable has one: " + ", ".join(clashes) + ". "
            "Remove their kernel_constraint or use GroupLasso(proximal=False).")
    optimizer = getattr(model, "optimizer", None)
    if pairs and getattr(optimizer, "gradient_accumulation_steps", None):
        raise ValueError(
            "attach_proximal_step: the optimizer accumulates gradients "
            f"(gradient_accumulation_steps="
            f"{optimizer.gradient_accumulation_steps}); the proximal step "
            "would shrink once per micro-batch. Use GroupLasso(proximal=False)"
            " or no accumulation.")
    changed = False
    for variable, regularizer in pairs:
        current = variable.constraint
        if (isinstance(current, ProximalStep) and current.model is model
                and current.regularizer is regularizer):
            continue
        variable.constraint = ProximalStep(regularizer, model)
        changed = True
    if changed and model.compiled:
        model.make_train_function(force=True)
    return len(pairs)


def add_group_lasso(
    model: keras.Model,
    strength: float = 0.0,
    epsilon: float = 1e-8,
    replace_existing: bool = False,
    proximal: bool = False,
    scales: bool = False,
) -> keras.Model:
    """Returns an equivalent model with `GroupLasso` on every prunable kernel.

    Groups follow the channel-coupling analysis: an axis of a kernel gets
    groups only when its channels can be removed at all, so the first
    convolution's image-channel inputs and the classifier's class outputs are
    not regularized (the paper's rule), nor are channels frozen by layers the
    library cannot follow. Weights, names and compile settings are kept.
    An axis only partly frozen (a layer reading `Concatenate([image, h])`)
    is regularized whole: `GroupLasso` groups every index of its axes; the
    frozen slices are merely shrunk, never removed.

    Keras regularizers do not combine: a kernel that already has one (say
    L2 weight decay) raises a ValueError unless `replace_existing=True`. The
    paper keeps weight decay on; put it on the optimizer instead
    (`keras.optimizers.SGD(..., weight_decay=5e-4)`).

    Args:
      model: a built functional or Sequential model.
      strength: initial coefficient λ of every GroupLasso (the `Reconfigure`
        callback calibrates it from a penalty ratio at the first step).
      epsilon: added inside each group's square root.
      replace_existing: replace kernels' existing regularizers.
      proximal: apply the penalty as a proximal step after each update
        (`GroupLasso(proximal=True)`, see there) instead of a loss term;
        channels then die while the learning rate is still high.
      scales: also put an element-wise `GroupLasso` (L1) on the per-channel
        scales of prunable channels (BatchNormalization's `gamma`). A
        convolution followed by BatchNorm is scale-invariant, so the lasso
        on its kernel alone cannot tell a useless channel from a useful one;
        a zero `gamma` silences the channel, after which its kernel slices
        get no gradient and the lasso zeroes them (the paper leaves gamma
        alone: off by default).

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="conv")(x)
    >>> y = keras.layers.Dense(2, name="classifier")(
    ...     keras.layers.GlobalAveragePooling2D()(h))
    >>> m = tf_prunetrain.add_group_lasso(keras.Model(x, y), strength=1e-4)
    >>> m.get_layer("conv").kernel_regularizer.axes
    (-1,)
    >>> m.get_layer("classifier").kernel_regularizer.axes
    (-2,)
    """
    graph = coupling.channel_groups(model)
    axes = _prunable_axes(graph, scales)
    clashes = [
        f"'{layer.name}'.{key}" for layer in _layers(graph)
        for key in axes.get(id(layer), {})
        if not isinstance(getattr(layer, key, None), (type(None), GroupLasso))
    ]
    if clashes and not replace_existing:
        raise ValueError(
            "add_group_lasso: these kernels already have a regularizer: "
            f"{', '.join(clashes)}. Pass replace_existing=True to replace "
            "them (move weight decay to the optimizer's weight_decay).")

    def config_fn(layer: Any, config: dict) -> dict:
        for key, layer_axes in axes.get(id(layer), {}).items():
            config[key] = GroupLasso(strength, layer_axes, epsilon, proximal)
        return config

    return surgery.clone(model, config_fn)


def _layers(graph: coupling.ChannelGraph) -> list[Any]:
    """The distinct layers that own channel-carrying weights."""
    return list({id(b.layer): b.layer for b in graph.bindings.values()}.values())


def _prunable_axes(graph: coupling.ChannelGraph, scales: bool
                   ) -> dict[int, dict[str, tuple[int, ...]]]:
    """id(layer) -> {regularizer config key: weight axes to regularize}."""
    found: dict[int, dict[str, tuple[int, ...]]] = {}
    for b in graph.bindings.values():
        handler = handlers.handler_for(b.layer)
        key = (handler.regularizers if b.judge else
               handler.scale_regularizers if scales else {}).get(b.weight)
        if key is None or np.all(graph.is_frozen(b.ids)):
            continue
        rank = len(coupling.weight(b.layer, b.weight).shape)
        layer_axes = found.setdefault(id(b.layer), {})
        layer_axes[key] = tuple(sorted({*layer_axes.get(key, ()), b.axis - rank}))
    return found
