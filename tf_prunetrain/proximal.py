"""The proximal group-lasso step: shrink channel groups after each update.

A `GroupLasso(proximal=True)` adds nothing to the loss; its penalty is
applied by `ProximalStep`, a Keras variable constraint (Keras applies a
variable's constraint right after every optimizer update) that soft-thresholds
each group by `learning_rate * strength`. `attach_proximal_step(model)` binds
one to every such kernel; `Reconfigure` does it at the start of `fit`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tf_prunetrain.regularizers import GroupLasso


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
    >>> tf_prunetrain.attach_proximal_step(model)
    2
    """
    pairs = [(v, v.regularizer) for v in model.trainable_variables
             if isinstance(getattr(v, "regularizer", None), GroupLasso)
             and v.regularizer.proximal]
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
