"""BatchNorm statistics re-estimated on data after a cut.

A frozen `BatchNormalization` layer (`trainable=False`, the Keras
transfer-learning guide's choice for a fine-tune) normalizes with moving
statistics that training never updates. A cut keeps their surviving
slices, but the channels it removes (faded to zero first) fed the
convolutions before such a layer, so what the layer normalizes is no
longer what its statistics describe. `recalibrate_batchnorm` re-estimates
them on a few batches (AdaBN, Li et al. 2016; EagleEye's re-calibration,
ECCV 2020); `RecalibrateBatchNorm` does it after every cut of a `fit`.

Experimental: on ResNet-20's frozen-BatchNorm transfer (BENCHMARKS.md,
"Issue 37") it lifted PruneTrain at 0.25 from about 0.61 to 0.73-0.81
top-1 in 4 of 5 seeds, and one seed (two of cut-first's five) diverged
epochs after the cut; a frozen-BatchNorm network trains without
normalization, and a cut one did so less stably. Leave BatchNorm
trainable when you prune (README, "Prune a trained model").

Decided here:

* By default only frozen BatchNorm layers are re-estimated: a trainable
  one tracks its inputs as it trains. Pass `layers` to choose.
* The statistics become the plain average of the batches' means and
  variances (not the layer's momentum average), measured with the chosen
  layers normalizing each batch by its own statistics, as in training, and
  every other BatchNorm layer in inference mode. Dropout and other
  training-only layers act as they do in training (their effect is part
  of what a BatchNorm tracks in training too).
* Nothing else changes: no weight, no other layer's statistics, no
  `trainable` flag. On an error every chosen layer keeps the statistics
  it had.
* Layers with `renorm=True` are refused: their statistics follow another
  rule.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import keras


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models' included,
    in the order of `model.layers`."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += batchnorm_layers(layer)
    return found


def _inputs(batch: Any) -> Any:
    """The model inputs of one batch: `x` of `(x, y[, sample_weight])`."""
    return batch[0] if isinstance(batch, tuple) else batch


def recalibrate_batchnorm(
        model: keras.Model, data: Iterable[Any], steps: int = 20,
        layers: Sequence[keras.layers.BatchNormalization] | None = None
) -> list[str]:
    """Re-estimates the moving mean and variance of `layers` (default: the
    frozen BatchNormalization layers of `model`) from `steps` batches of
    `data` (a `tf.data.Dataset` or any iterable of batches: `x` or `(x, y[,
    sample_weight])`; fewer if it ends sooner). Returns the paths of the
    layers re-estimated (none: nothing ran). See the module docstring.

    Raises:
      ValueError: `steps` < 1, a layer not of `model` or with
        `renorm=True`, or `data` without a batch. The model is unchanged.

    Example:
    >>> import keras, numpy as np
    >>> from tf_prunetrain.experimental import recalibration
    >>> inputs = keras.Input((4,))
    >>> norm = keras.layers.BatchNormalization(name="bn")
    >>> model = keras.Model(inputs, norm(keras.layers.Dense(3)(inputs)))
    >>> norm.trainable = False
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (64, 4))
    >>> recalibration.recalibrate_batchnorm(model, [x[:32], x[32:]])
    ['bn']
    >>> out = model.layers[1](x).numpy()
    >>> bool(np.allclose(norm.moving_mean.numpy(), out.mean(0), atol=1e-4))
    True
    """
    if steps < 1:
        raise ValueError(f"recalibrate_batchnorm: steps must be >= 1, got "
                         f"{steps!r}.")
    every = batchnorm_layers(model)
    chosen = [bn for bn in every if not bn.trainable] if layers is None \
        else list(layers)
    for bn in chosen:
        if not any(bn is other for other in every):
            raise ValueError(f"recalibrate_batchnorm: {bn.name!r} is not a "
                             "BatchNormalization layer of this model. Pass "
                             "layers from batchnorm_layers(model).")
        if bn.renorm:
            raise ValueError(f"recalibrate_batchnorm: {bn.name!r} has "
                             "renorm=True, whose statistics follow another "
                             "rule; leave it out of `layers`.")
    if not chosen:
        return []
    saved = [(bn, bn.trainable, bn.momentum, bn.moving_mean.numpy(),
              bn.moving_variance.numpy()) for bn in every]
    done = False
    try:
        for bn in every:
            bn.trainable = any(bn is c for c in chosen)
        seen = 0
        for batch in data:
            seen += 1
            for bn in chosen:  # the running average of `seen` batches
                bn.momentum = (seen - 1) / seen
            model(_inputs(batch), training=True)
            if seen == steps:
                break
        if not seen:
            raise ValueError("recalibrate_batchnorm: `data` gave no batch. "
                             "Pass a dataset of the model's inputs.")
        done = True
    finally:
        for bn, trainable, momentum, mean, variance in saved:
            bn.trainable, bn.momentum = trainable, momentum
            if not done:
                bn.moving_mean.assign(mean)
                bn.moving_variance.assign(variance)
    return [bn.path for bn in chosen]


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """After every cut of `Reconfigure` in the same `fit`, re-estimates the
    frozen BatchNorm layers' statistics on `steps` batches of `data`
    (`recalibrate_batchnorm`). Stateless: a resumed run needs nothing
    saved. The batches are forward passes of the cut model, a one-off per
    cut like the cut's own re-trace.

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain.experimental import recalibration
    >>> inputs = keras.Input((8, 8, 1))
    >>> h = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    >>> h = keras.layers.BatchNormalization(name="bn")(h)
    >>> h = keras.layers.Conv2D(4, 3, name="c2")(keras.layers.ReLU()(h))
    >>> h = keras.layers.BatchNormalization(name="bn2")(h)
    >>> out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    >>> model = tf_prunetrain.add_group_lasso(keras.Model(inputs, out))
    >>> model.get_layer("bn2").trainable = False
    >>> model.compile("sgd", "mse")
    >>> x = np.random.default_rng(0).random((32, 8, 8, 1), "float32")
    >>> y = np.zeros((32, 2), "float32")
    >>> recal = recalibration.RecalibrateBatchNorm([x], steps=1)
    >>> cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
    ...                                 penalty_ratio=None, round_to=1,
    ...                                 verbose=0)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cut, recal])
    >>> recal.recalibrated
    [['bn2']]
    """

    def __init__(self, data: Iterable[Any], steps: int = 20,
                 verbose: int = 0) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"RecalibrateBatchNorm: steps must be >= 1, got "
                             f"{steps!r}.")
        self.data, self.steps, self.verbose = data, steps, verbose
        self.recalibrated: list[list[str]] = []  # per cut, the layers' paths
        self.seconds = 0.0  # spent re-estimating, all cuts together

    def on_reconfigure(self, reconfiguration: Any, plan: Any) -> None:
        """After a cut (`tf_prunetrain.keras_callbacks`' event)."""
        start = time.perf_counter()
        paths = recalibrate_batchnorm(self.model, self.data, self.steps)
        self.seconds += time.perf_counter() - start
        self.recalibrated.append(paths)
        if self.verbose:
            print(f"RecalibrateBatchNorm (epoch {reconfiguration.epoch}): "
                  f"{len(paths)} frozen BatchNorm layers re-estimated on "
                  f"{self.steps} batches")
