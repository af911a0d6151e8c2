"""Small architectures the channel-pruning code must handle (test helper).

Not a test module: import it from tests, e.g.::

    from model_zoo import ALL_BUILDERS, random_input

    for name, build in ALL_BUILDERS.items():
        model = build()
        model(random_input(model), training=False)

Every builder returns an **uncompiled** functional ``keras.Model`` with tiny
widths and small inputs (16x16x3 images, or length-64 x 4-channel sequences),
outputting 10 logits. Kernel initializers are seeded per layer (``seed``
argument), so two calls with the same seed give identical weights without
touching global random state. Layer names are explicit and stable.

``APPLICATIONS`` holds a few ``keras.applications`` models (``weights=None``,
``classes=10``, logits) that build in about a second on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tf_prunetrain.models import resnet_cifar

__all__ = [
    "plain_cnn",
    "resnet_basic",
    "resnet_bottleneck",
    "densenet_like",
    "mobilenetv2_like",
    "squeeze_excite",
    "conv1d_net",
    "separable_net",
    "nested_model",
    "with_preprocessing",
    "Subclassed",
    "ALL_BUILDERS",
    "APPLICATIONS",
    "random_input",
    "randomize_batchnorm",
    "calibrate_batchnorm",
]

NUM_CLASSES = 10
IMAGE_SHAPE = (16, 16, 3)
SEQUENCE_SHAPE = (64, 4)


class _Seeds:
    """Per-layer seeded ``he_normal`` initializers (each call uses a new seed)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._count = 0

    def __call__(self) -> keras.initializers.Initializer:
        self._count += 1
        return keras.initializers.HeNormal(seed=self._seed * 1000 + self._count)


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(name=name)


def _conv_bn_relu(
    x: Any,
    init: _Seeds,
    filters: int,
    name: str,
    kernel_size: int = 3,
    strides: int = 1,
    relu_max: float | None = None,
) -> Any:
    """Conv2D(no bias) -> BN -> ReLU (ReLU6 when ``relu_max=6``)."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=init(),
        name=f"{name}_conv",
    )(x)
    x = _bn(f"{name}_bn")(x)
    return keras.layers.ReLU(max_value=relu_max, name=f"{name}_relu")(x)


def _classifier(x: Any, init: _Seeds, name: str = "classifier") -> Any:
    return keras.layers.Dense(NUM_CLASSES, kernel_initializer=init(), name=name)(x)


# --------------------------------------------------------------------------- #
# Builders
# --------------------------------------------------------------------------- #
def plain_cnn(seed: int = 0) -> keras.Model:
    """Conv/BN/ReLU/MaxPool x2 -> Flatten -> Dense(32) -> Dropout -> Dense(10)."""
    init = _Seeds(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = _conv_bn_relu(inputs, init, 8, "block1")
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = _conv_bn_relu(x, init, 16, "block2")
    x = keras.layers.MaxPooling2D(2, name="block2_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(
        32, activation="relu", kernel_initializer=init(), name="hidden"
    )(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="plain_cnn")


def resnet_basic(seed: int = 0) -> keras.Model:
    """ResNet-14 (basic blocks, 2 per stage, widths 8/16/32) on 16x16 input."""
    return resnet_cifar(
        depth=14,
        num_classes=NUM_CLASSES,
        input_shape=IMAGE_SHAPE,
        widths=(8, 16, 32),
        name="resnet_basic",
        seed=seed,
    )


def resnet_bottleneck(seed: int = 0) -> keras.Model:
    """ResNet-20 (bottleneck blocks, 2 per stage, inner widths 4/8/16) on 16x16."""
    return resnet_cifar(
        depth=20,
        num_classes=NUM_CLASSES,
        input_shape=IMAGE_SHAPE,
        widths=(4, 8, 16),
        bottleneck=True,
        name="resnet_bottleneck",
        seed=seed,
    )


def densenet_like(seed: int = 0, growth: int = 4) -> keras.Model:
    """Two dense blocks (``Concatenate([x, new])``) joined by a transition.

    Block 1 layers: BN-ReLU-Conv3x3(growth); block 2 layers (DenseNet-BC style):
    BN-ReLU-Conv1x1(4*growth)-BN-ReLU-Conv3x3(growth). Transition:
    BN-ReLU-Conv1x1 (half the channels) + AveragePooling2D(2).
    """
    init = _Seeds(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = keras.layers.Conv2D(
        8, 3, padding="same", use_bias=False, kernel_initializer=init(), name="stem_conv"
    )(inputs)

    def conv(y: Any, filters: int, kernel: int, name: str) -> Any:
        return keras.layers.Conv2D(
            filters,
            kernel,
            padding="same",
            use_bias=False,
            kernel_initializer=init(),
            name=name,
        )(y)

    for i in range(1, 4):
        p = f"dense1_layer{i}"
        y = _bn(f"{p}_bn")(x)
        y = keras.layers.ReLU(name=f"{p}_relu")(y)
        y = conv(y, growth, 3, f"{p}_conv")
        x = keras.layers.Concatenate(name=f"{p}_concat")([x, y])

    channels = 8 + 3 * growth
    x = _bn("transition1_bn")(x)
    x = keras.layers.ReLU(name="transition1_relu")(x)
    x = conv(x, channels // 2, 1, "transition1_conv")
    x = keras.layers.AveragePooling2D(2, name="transition1_pool")(x)

    for i in range(1, 3):
        p = f"dense2_layer{i}"
        y = _bn(f"{p}_bn1")(x)
        y = keras.layers.ReLU(name=f"{p}_relu1")(y)
        y = conv(y, 4 * growth, 1, f"{p}_conv1")
        y = _bn(f"{p}_bn2")(y)
        y = keras.layers.ReLU(name=f"{p}_relu2")(y)
        y = conv(y, growth, 3, f"{p}_conv2")
        x = keras.layers.Concatenate(name=f"{p}_concat")([x, y])

    x = _bn("final_bn")(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="densenet_like")


def mobilenetv2_like(seed: int = 0) -> keras.Model:
    """MobileNetV2-style inverted residual blocks with ReLU6.

    ``block0``: no expansion (t=1), depthwise + project, identity residual.
    ``block1``: expand x6, depthwise stride 2, project (no residual).
    ``block2``: expand x6, depthwise stride 1, project, identity residual.
    """
    init = _Seeds(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = _conv_bn_relu(inputs, init, 8, "stem", relu_max=6.0)

    def inverted_residual(
        x: Any, in_ch: int, out_ch: int, expansion: int, stride: int, name: str
    ) -> Any:
        y = x
        if expansion != 1:
            y = _conv_bn_relu(
                y, init, in_ch * expansion, f"{name}_expand", kernel_size=1, relu_max=6.0
            )
        y = keras.layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=init(),
            name=f"{name}_dw_conv",
        )(y)
        y = _bn(f"{name}_dw_bn")(y)
        y = keras.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(y)
        y = keras.layers.Conv2D(
            out_ch,
            1,
            padding="same",
            use_bias=False,
            kernel_initializer=init(),
            name=f"{name}_project_conv",
        )(y)
        y = _bn(f"{name}_project_bn")(y)
        if stride == 1 and in_ch == out_ch:
            y = keras.layers.Add(name=f"{name}_add")([x, y])
        return y

    x = inverted_residual(x, 8, 8, 1, 1, "block0")
    x = inverted_residual(x, 8, 12, 6, 2, "block1")
    x = inverted_residual(x, 12, 12, 6, 1, "block2")
    x = _conv_bn_relu(x, init, 32, "head", kernel_size=1, relu_max=6.0)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="mobilenetv2_like")


def squeeze_excite(seed: int = 0) -> keras.Model:
    """Two residual blocks, each gated by a squeeze-excite branch.

    ``se1`` (EfficientNet style): GAP -> Reshape((1,1,C)) -> Conv1x1 reduce
    (relu) -> Conv1x1 expand (sigmoid) -> Multiply. ``se2`` (SENet style):
    GAP -> Dense reduce (relu) -> Dense expand (sigmoid) -> Reshape((1,1,C))
    -> Multiply. Each gated map is added to the block input.
    """
    init = _Seeds(seed)
    channels, reduced = 16, 4
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = _conv_bn_relu(inputs, init, channels, "stem")

    for b, style in ((1, "conv"), (2, "dense")):
        p = f"block{b}"
        shortcut = x
        y = _conv_bn_relu(x, init, channels, f"{p}_a")
        y = keras.layers.Conv2D(
            channels,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=init(),
            name=f"{p}_b_conv",
        )(y)
        y = _bn(f"{p}_b_bn")(y)

        s = keras.layers.GlobalAveragePooling2D(name=f"se{b}_squeeze")(y)
        if style == "conv":
            s = keras.layers.Reshape((1, 1, channels), name=f"se{b}_reshape")(s)
            s = keras.layers.Conv2D(
                reduced, 1, activation="relu", kernel_initializer=init(),
                name=f"se{b}_reduce",
            )(s)
            s = keras.layers.Conv2D(
                channels, 1, activation="sigmoid", kernel_initializer=init(),
                name=f"se{b}_expand",
            )(s)
        else:
            s = keras.layers.Dense(
                reduced, activation="relu", kernel_initializer=init(),
                name=f"se{b}_reduce",
            )(s)
            s = keras.layers.Dense(
                channels, activation="sigmoid", kernel_initializer=init(),
                name=f"se{b}_expand",
            )(s)
            s = keras.layers.Reshape((1, 1, channels), name=f"se{b}_reshape")(s)
        y = keras.layers.Multiply(name=f"se{b}_excite")([y, s])

        x = keras.layers.Add(name=f"{p}_add")([shortcut, y])
        x = keras.layers.ReLU(name=f"{p}_out")(x)

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="squeeze_excite")


def conv1d_net(seed: int = 0) -> keras.Model:
    """Conv1D/BN/ReLU/MaxPooling1D x2 + Conv1D -> GlobalAveragePooling1D -> Dense."""
    init = _Seeds(seed)
    inputs = keras.Input(SEQUENCE_SHAPE, name="input")
    x = inputs
    for b, (filters, kernel) in enumerate(((8, 5), (16, 3), (16, 3)), start=1):
        x = keras.layers.Conv1D(
            filters,
            kernel,
            padding="same",
            use_bias=False,
            kernel_initializer=init(),
            name=f"block{b}_conv",
        )(x)
        x = _bn(f"block{b}_bn")(x)
        x = keras.layers.ReLU(name=f"block{b}_relu")(x)
        if b < 3:
            x = keras.layers.MaxPooling1D(2, name=f"block{b}_pool")(x)
    x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="conv1d_net")


def separable_net(seed: int = 0) -> keras.Model:
    """ZeroPadding2D + valid Conv2D, two SeparableConv2D (one with
    ``depth_multiplier=2``), Cropping2D, MaxPool, GAP, Dense."""
    init = _Seeds(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = keras.layers.ZeroPadding2D(1, name="pad")(inputs)
    x = keras.layers.Conv2D(
        8, 3, padding="valid", use_bias=False, kernel_initializer=init(), name="stem_conv"
    )(x)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for b, mult in ((1, 1), (2, 2)):
        x = keras.layers.SeparableConv2D(
            16,
            3,
            padding="same",
            depth_multiplier=mult,
            use_bias=False,
            depthwise_initializer=init(),
            pointwise_initializer=init(),
            name=f"sep{b}_conv",
        )(x)
        x = _bn(f"sep{b}_bn")(x)
        x = keras.layers.ReLU(name=f"sep{b}_relu")(x)
    x = keras.layers.Cropping2D(2, name="crop")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="separable_net")


def nested_model(seed: int = 0) -> keras.Model:
    """Outer functional model calling two sub-models.

    ``stem`` (8 channels) -> ``inner_block`` (functional: Input(16,16,8) ->
    2x conv/BN/ReLU, 16 channels; its input channels are the stem's prunable
    channels) -> MaxPool -> ``inner_seq`` (``keras.Sequential``: conv/BN/ReLU,
    16 channels) -> GAP -> Dense.
    """
    init = _Seeds(seed)

    inner_in = keras.Input((16, 16, 8), name="inner_input")
    y = _conv_bn_relu(inner_in, init, 16, "inner1")
    y = _conv_bn_relu(y, init, 16, "inner2")
    inner_block = keras.Model(inner_in, y, name="inner_block")

    inner_seq = keras.Sequential(
        [
            keras.Input((8, 8, 16), name="seq_input"),
            keras.layers.Conv2D(
                16, 3, padding="same", use_bias=False, kernel_initializer=init(),
                name="seq_conv",
            ),
            _bn("seq_bn"),
            keras.layers.ReLU(name="seq_relu"),
        ],
        name="inner_seq",
    )

    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = _conv_bn_relu(inputs, init, 8, "stem")
    x = inner_block(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = inner_seq(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="nested_model")


def with_preprocessing(seed: int = 0) -> keras.Model:
    """``Rescaling(1/255)`` on raw pixels, then conv/BN/ReLU x2 -> GAP -> Dense."""
    init = _Seeds(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn_relu(x, init, 8, "block1")
    x = _conv_bn_relu(x, init, 16, "block2", strides=2)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier(x, init)
    return keras.Model(inputs, outputs, name="with_preprocessing")


class Subclassed(keras.Model):
    """A subclassed model (no layer graph): what the library must reject.
    Built on (1, 4) inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3)
        self(np.zeros((1, 4), "float32"))

    def call(self, x: Any) -> Any:
        return self.dense(x)


ALL_BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "plain_cnn": plain_cnn,
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "densenet_like": densenet_like,
    "mobilenetv2_like": mobilenetv2_like,
    "squeeze_excite": squeeze_excite,
    "conv1d_net": conv1d_net,
    "separable_net": separable_net,
    "nested_model": nested_model,
    "with_preprocessing": with_preprocessing,
}


# --------------------------------------------------------------------------- #
# keras.applications (weights=None, 10 logits). These use unseeded default
# initializers, so each builder calls keras.utils.set_random_seed(seed) first
# (this resets Python/NumPy/backend global seeds).
# --------------------------------------------------------------------------- #
def _application(
    factory: Callable[..., keras.Model], seed: int = 0, **kwargs: Any
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return factory(weights=None, classes=NUM_CLASSES, classifier_activation=None, **kwargs)


def mobilenet_v2_app(seed: int = 0) -> keras.Model:
    """keras.applications.MobileNetV2, alpha 0.35, 32x32 (~0.42M params)."""
    return _application(
        keras.applications.MobileNetV2, seed, input_shape=(32, 32, 3), alpha=0.35
    )


def mobilenet_v3_small_app(seed: int = 0) -> keras.Model:
    """keras.applications.MobileNetV3Small, alpha 0.75, 32x32 (~1.04M params).

    Includes Rescaling, hard-swish/SE built from raw ``ops`` add/multiply nodes
    (non-Layer operations in the graph) and a Conv2D+Flatten classifier head.
    """
    return _application(
        keras.applications.MobileNetV3Small, seed, input_shape=(32, 32, 3), alpha=0.75
    )


def efficientnet_b0_app(seed: int = 0) -> keras.Model:
    """keras.applications.EfficientNetB0, 32x32 (~4.06M params; SE, Rescaling,
    Normalization)."""
    return _application(keras.applications.EfficientNetB0, seed, input_shape=(32, 32, 3))


def resnet50_app(seed: int = 0) -> keras.Model:
    """keras.applications.ResNet50, 32x32 (~23.6M params)."""
    return _application(keras.applications.ResNet50, seed, input_shape=(32, 32, 3))


def densenet121_app(seed: int = 0) -> keras.Model:
    """keras.applications.DenseNet121, 32x32 (~7.0M params; 58 Concatenates)."""
    return _application(keras.applications.DenseNet121, seed, input_shape=(32, 32, 3))


def convnext_tiny_app(seed: int = 0) -> keras.Model:
    """keras.applications.ConvNeXtTiny, 32x32 (~27.8M params): LayerNormalization,
    depthwise as ``Conv2D(groups=C)`` and a custom ``LayerScale`` layer."""
    return _application(keras.applications.ConvNeXtTiny, seed, input_shape=(32, 32, 3))


APPLICATIONS: dict[str, Callable[[], keras.Model]] = {
    "mobilenet_v2": mobilenet_v2_app,
    "mobilenet_v3_small": mobilenet_v3_small_app,
    "efficientnet_b0": efficientnet_b0_app,
    "resnet50": resnet50_app,
    "densenet121": densenet121_app,
    "convnext_tiny": convnext_tiny_app,
}


# --------------------------------------------------------------------------- #
# Numerical helpers
# --------------------------------------------------------------------------- #
def random_input(model: keras.Model, batch_size: int = 2, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 batch matching ``model``'s (single) input shape.

    Models whose first layer is ``Rescaling`` get uniform [0, 255) pixels.
    """
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"Model {model.name!r} has an undefined input dim: {shape}.")
    rng = np.random.default_rng(seed)
    if any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers[:3]):
        return rng.uniform(0.0, 255.0, (batch_size, *shape)).astype("float32")
    return rng.standard_normal((batch_size, *shape)).astype("float32")


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization (including in sub-models) non-trivial
    gamma/beta/moving statistics, so BN is not near-identity in numerical
    comparisons. Modifies ``model`` in place and returns it."""
    rng = np.random.default_rng(seed)
    for layer in _iter_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        n = layer.moving_mean.shape[-1]
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
        layer.moving_mean.assign(rng.normal(0.0, 0.1, n).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return model


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> keras.Model:
    """Set every BatchNormalization's moving statistics to the batch statistics
    of ``x`` (one eager ``training=True`` pass with momentum 0).

    Keeps activations well-scaled through deep untrained models (e.g. the
    ``APPLICATIONS``), whose logits otherwise hardly depend on the input.
    Modifies ``model`` in place and returns it.
    """
    bns = [
        layer
        for layer in _iter_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [layer.momentum for layer in bns]
    try:
        for layer in bns:
            layer.momentum = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in zip(bns, saved):
            layer.momentum = momentum
    return model


def _iter_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """All layers of ``model``, recursing into nested models."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_iter_layers(layer))
    return out
