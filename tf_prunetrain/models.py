"""Reference model builders (CIFAR-style ResNet and VGG) for ``tf_prunetrain``.

The builders return plain, uncompiled Keras 3 functional models whose layers
have deterministic, readable names, so pruning reports and tests can refer to
layers by name.  All models output **logits** (no softmax); compile them with
``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.

Layer-naming scheme
-------------------
ResNet (``resnet_cifar``)::

    input
    stem_conv, stem_bn, stem_relu
    stage{s}_block{b}_conv{i}, stage{s}_block{b}_bn{i}, stage{s}_block{b}_relu{i}
    stage{s}_block{b}_shortcut_conv, stage{s}_block{b}_shortcut_bn  (projection only)
    stage{s}_block{b}_add, stage{s}_block{b}_out                     (post-add ReLU)
    avg_pool, classifier

with ``s`` in 1..3, ``b`` in 1..blocks_per_stage (both 1-based), ``i`` in 1..2
for basic blocks and 1..3 for bottleneck blocks.

VGG (``vgg_cifar``)::

    input
    block{b}_conv{i}, block{b}_bn{i}, block{b}_relu{i}, block{b}_pool
    flatten, classifier
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tf_prunetrain import _checks

__all__ = ["resnet_cifar", "vgg_cifar", "VGG_CONFIGS", "BOTTLENECK_EXPANSION"]

#: Channel expansion of the last 1x1 conv in a bottleneck block.
BOTTLENECK_EXPANSION: int = 4

#: Conv widths per VGG block (CIFAR variants); each block ends with a maxpool.
VGG_CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}

# PyTorch-like BatchNorm defaults (torch momentum 0.1 == keras momentum 0.9).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)



def _check_input_shape(
    input_shape: Any, min_spatial: int | None = None, allow_none: bool = True
) -> tuple[int | None, int | None, int]:
    """Validate an ``(height, width, channels)`` input shape."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"`input_shape` must be a (height, width, channels) tuple, got {input_shape!r}."
        ) from None
    if len(shape) != 3:
        raise ValueError(
            f"`input_shape` must have 3 entries (height, width, channels), got {shape!r}."
        )
    height, width, channels = shape
    if not _is_int(channels) or channels < 1:
        raise ValueError(
            f"`input_shape` channels must be a positive integer, got {channels!r}."
        )
    for dim, label in ((height, "height"), (width, "width")):
        if dim is None:
            if not allow_none:
                raise ValueError(
                    f"`input_shape` {label} must be known (not None) for this model, "
                    f"got {shape!r}."
                )
            continue
        if not _is_int(dim) or dim < 1:
            raise ValueError(
                f"`input_shape` {label} must be a positive integer or None, got {dim!r}."
            )
        if min_spatial is not None and dim < min_spatial:
            raise ValueError(
                f"`input_shape` {label} must be >= {min_spatial} for this model, got {dim}."
            )
    return height, width, channels


def _check_weight_decay(weight_decay: Any) -> float:
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise ValueError(f"`weight_decay` must be a float >= 0, got {weight_decay!r}.")
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
    return float(weight_decay)


class _Init:
    """Hands out ``he_normal`` initializers; seeded per layer when ``seed`` is set."""

    def __init__(self, seed: int | None) -> None:
        if seed is not None and not _is_int(seed):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self._seed = seed
        self._count = 0

    def __call__(self) -> keras.initializers.Initializer | str:
        if self._seed is None:
            return "he_normal"
        self._count += 1
        return keras.initializers.HeNormal(seed=self._seed + self._count)


def _regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name
    )


# --------------------------------------------------------------------------- #
# ResNet
# --------------------------------------------------------------------------- #
def _resolve_blocks_per_stage(
    depth: Any, bottleneck: bool, blocks_per_stage: Any
) -> int:
    if blocks_per_stage is not None:
        return _checks.positive_int(blocks_per_stage, "blocks_per_stage")
    per_block = 9 if bottleneck else 6
    kind = "bottleneck" if bottleneck else "basic"
    if not _is_int(depth) or depth < per_block + 2 or (depth - 2) % per_block != 0:
        valid = ", ".join(str(per_block * n + 2) for n in range(1, 6))
        raise ValueError(
            f"Invalid ResNet depth {depth!r} for {kind} blocks: depth must be "
            f"{per_block}*n + 2 with n >= 1 (e.g. {valid}, ...). Pass "
            "`blocks_per_stage` to choose the number of blocks per stage directly."
        )
    return (depth - 2) // per_block


def resnet_cifar(
    depth: int = 20,
    num_classes: int = 10,
    input_shape: Sequence[int | None] = (32, 32, 3),
    widths: Sequence[int] = (16, 32, 64),
    bottleneck: bool = False,
    weight_decay: float = 0.0,
    name: str | None = None,
    *,
    blocks_per_stage: int | None = None,
    seed: int | None = None,
) -> keras.Model:
    """Build a CIFAR-style ResNet (He et al., 2016) returning logits.

    Structure: ``stem_conv`` 3x3 (``widths[0]``) + BN + ReLU, three stages,
    global average pooling and a ``Dense(num_classes)`` classifier **without
    softmax** (the output is logits).

    * Basic blocks (``bottleneck=False``): conv3x3-BN-ReLU-conv3x3-BN, add,
      ReLU; ``(depth - 2) / 6`` blocks per stage (depth 20, 32, 44, 56, 110...).
    * Bottleneck blocks (``bottleneck=True``): conv1x1-BN-ReLU, conv3x3-BN-ReLU,
      conv1x1 (``4 * width``)-BN, add, ReLU; ``(depth - 2) / 9`` blocks per
      stage (depth 29, 47, 56, 110, 164...). The stride sits on the 3x3 conv.
      ``widths`` are the inner (bottleneck) widths; stage outputs have
      ``4 * width`` channels.
    * ``blocks_per_stage`` overrides the depth-derived block count (``depth``
      is then only used for the default name), e.g. the PruneTrain paper's CIFAR
      "ResNet-50" is ``bottleneck=True, blocks_per_stage=8``.

    Stages 2 and 3 downsample with stride 2 in their first block. Whenever a
    block changes the spatial size or channel count, the shortcut is a
    projection (1x1 conv with the block's stride + BN); otherwise it is the
    identity. Convolutions use ``use_bias=False`` and ``he_normal``
    initialization; with ``weight_decay > 0`` an ``L2(weight_decay)`` kernel
    regularizer is attached to every conv and the classifier. BatchNorm uses
    ``momentum=0.9, epsilon=1e-5`` (PyTorch defaults).

    Args:
        depth: Nominal network depth (see above).
        num_classes: Number of output logits.
        input_shape: ``(height, width, channels)``; height/width may be ``None``.
        widths: Three positive stage widths.
        bottleneck: Use bottleneck blocks instead of basic blocks.
        weight_decay: L2 factor for kernel regularizers (0 disables them).
        name: Model name; defaults to ``"resnet{depth}_cifar"``.
        blocks_per_stage: Optional explicit number of blocks per stage.
        seed: Optional integer seed making kernel initialization deterministic.

    Returns:
        An uncompiled functional ``keras.Model``.

    Example:
        >>> import numpy as np
        >>> model = resnet_cifar(depth=20, num_classes=10)
        >>> model.get_layer("stage2_block1_shortcut_conv").strides
        (2, 2)
        >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
        (2, 10)
    """
    num_classes = _checks.positive_int(num_classes, "num_classes")
    shape = _check_input_shape(input_shape)
    if not isinstance(bottleneck, bool):
        raise ValueError(f"`bottleneck` must be a bool, got {bottleneck!r}.")
    widths = _check_widths(widths)
    weight_decay = _check_weight_decay(weight_decay)
    n_blocks = _resolve_blocks_per_stage(depth, bottleneck, blocks_per_stage)
    if name is None:
        if blocks_per_stage is None:
            name = f"resnet{depth}_cifar"
        else:
            name = f"resnet{n_blocks * (9 if bottleneck else 6) + 2}_cifar"
    conv = _Conv(_Init(seed), _regularizer(weight_decay))
    inputs = keras.Input(shape=shape, name="input")
    x = _resnet_stages(conv, inputs, widths, n_blocks, bottleneck)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return _classified(inputs, x, num_classes, conv.init(), conv.regularizer,
                       name)


def _check_widths(widths: Any) -> tuple[int, int, int]:
    """Validate the three ResNet stage widths."""
    try:
        widths = tuple(widths)
    except TypeError:
        raise ValueError(
            f"`widths` must be a sequence of 3 ints, got {widths!r}."
        ) from None
    if len(widths) != 3 or not all(_is_int(w) and w >= 1 for w in widths):
        raise ValueError(
            f"`widths` must be a sequence of 3 positive integers, got {widths!r}."
        )
    return widths


class _Conv:
    """Applies the ResNet's convolutions: bias-free, ``same`` padding, each
    with the next initializer of ``init`` and the kernel ``regularizer``."""

    def __init__(self, init: _Init,
                 regularizer: keras.regularizers.Regularizer | None) -> None:
        self.init, self.regularizer = init, regularizer

    def __call__(self, x: Any, filters: int, kernel: int, stride: int,
                 name: str) -> Any:
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=self.init(),
            kernel_regularizer=self.regularizer,
            name=name,
        )(x)


def _resnet_stages(conv: _Conv, inputs: Any, widths: tuple[int, int, int],
                   n_blocks: int, bottleneck: bool) -> Any:
    """The stem and the three stages of ``n_blocks`` blocks on ``inputs``."""
    x = conv(inputs, widths[0], 3, 1, "stem_conv")
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    channels = widths[0]
    for s, width in enumerate(widths, start=1):
        for b in range(1, n_blocks + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            x, channels = _residual_block(conv, x, f"stage{s}_block{b}",
                                          width, stride, channels, bottleneck)
    return x


def _residual_block(conv: _Conv, x: Any, prefix: str, width: int,
                    stride: int, channels: int, bottleneck: bool
                    ) -> tuple[Any, int]:
    """One block named ``prefix`` on ``x`` (``channels`` channels); returns
    its output and its channel count."""
    out_channels = width * BOTTLENECK_EXPANSION if bottleneck else width
    shortcut = x
    if stride != 1 or channels != out_channels:
        shortcut = conv(x, out_channels, 1, stride, f"{prefix}_shortcut_conv")
        shortcut = _bn(f"{prefix}_shortcut_bn")(shortcut)

    if bottleneck:
        specs = [(width, 1, 1), (width, 3, stride), (out_channels, 1, 1)]
    else:
        specs = [(width, 3, stride), (width, 3, 1)]
    y = x
    for i, (filters, kernel, conv_stride) in enumerate(specs, start=1):
        y = conv(y, filters, kernel, conv_stride, f"{prefix}_conv{i}")
        y = _bn(f"{prefix}_bn{i}")(y)
        if i < len(specs):
            y = keras.layers.ReLU(name=f"{prefix}_relu{i}")(y)

    x = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(x), out_channels


def _classified(inputs: Any, features: Any, num_classes: int,
                initializer: Any, regularizer: Any, name: str) -> keras.Model:
    """The model from `inputs` to a `Dense` "classifier" (logits) on
    `features`."""
    outputs = keras.layers.Dense(num_classes, kernel_initializer=initializer,
                                 kernel_regularizer=regularizer,
                                 name="classifier")(features)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- #
# VGG
# --------------------------------------------------------------------------- #
def vgg_cifar(
    depth: int = 11,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    batch_norm: bool = True,
    width_multiplier: float = 1.0,
    name: str | None = None,
    *,
    weight_decay: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """Build a CIFAR-style VGG (11/13/16/19) returning logits.

    Five conv blocks (3x3 convs, ``same`` padding, each followed by optional
    BN and ReLU) each ending with a 2x2 max-pool, then ``Flatten`` and a single
    ``Dense(num_classes)`` classifier **without softmax** (the output is
    logits). Conv widths follow :data:`VGG_CONFIGS` scaled by
    ``width_multiplier`` (rounded, at least 1). With ``batch_norm=True`` convs
    have ``use_bias=False``; otherwise they carry a bias. Kernels use
    ``he_normal``; ``weight_decay > 0`` adds ``L2(weight_decay)`` regularizers.

    Args:
        depth: One of 11, 13, 16, 19.
        num_classes: Number of output logits.
        input_shape: ``(height, width, channels)``; height and width must be
            known and at least 32 (five 2x2 pools).
        batch_norm: Insert BatchNormalization after every conv.
        width_multiplier: Positive factor applied to every conv width.
        name: Model name; defaults to ``"vgg{depth}_cifar"``.
        weight_decay: L2 factor for kernel regularizers (0 disables them).
        seed: Optional integer seed making kernel initialization deterministic.

    Returns an uncompiled functional ``keras.Model``:

        >>> model = vgg_cifar(depth=11, width_multiplier=0.25)
        >>> model.get_layer("block1_conv1").filters, model.output.shape
        (16, (None, 10))
    """
    if not _is_int(depth) or depth not in VGG_CONFIGS:
        raise ValueError(
            f"Invalid VGG depth {depth!r}; expected one of {sorted(VGG_CONFIGS)}."
        )
    num_classes = _checks.positive_int(num_classes, "num_classes")
    shape = _check_input_shape(input_shape, min_spatial=32, allow_none=False)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"`batch_norm` must be a bool, got {batch_norm!r}.")
    if (
        isinstance(width_multiplier, bool)
        or not isinstance(width_multiplier, (int, float))
        or not width_multiplier > 0
    ):
        raise ValueError(
            f"`width_multiplier` must be a positive number, got {width_multiplier!r}."
        )
    weight_decay = _check_weight_decay(weight_decay)
    if name is None:
        name = f"vgg{depth}_cifar"

    init = _Init(seed)
    reg = _regularizer(weight_decay)
    inputs = keras.Input(shape=shape, name="input")
    x = _vgg_blocks(inputs, VGG_CONFIGS[depth], width_multiplier, batch_norm,
                    init, reg)
    x = keras.layers.Flatten(name="flatten")(x)
    return _classified(inputs, x, num_classes, init(), reg, name)


def _vgg_blocks(inputs: Any, blocks: tuple[tuple[int, ...], ...],
                width_multiplier: float, batch_norm: bool, init: _Init,
                reg: keras.regularizers.Regularizer | None) -> Any:
    """The conv blocks of ``blocks`` (base widths) on ``inputs``, each
    ending in a max-pool."""
    x = inputs
    for b, block in enumerate(blocks, start=1):
        for i, base in enumerate(block, start=1):
            filters = max(1, int(round(base * width_multiplier)))
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=not batch_norm,
                kernel_initializer=init(),
                kernel_regularizer=reg,
                name=f"block{b}_conv{i}",
            )(x)
            if batch_norm:
                x = _bn(f"block{b}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"block{b}_relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return x
