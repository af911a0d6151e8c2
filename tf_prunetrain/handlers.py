"""The per-layer-type handler table: the one place where layer kinds are known.

Every tensor in a model gets a *channel vector*: an integer id per index of its
last (channel) axis, or None when it has no channel axis the library can
follow. A handler tells, for one layer kind,

* `propagate`: which ids the layer's outputs carry, given its inputs' ids, and
  which weight axes are bound to which ids (through a `Context`);
* `config`: how the layer's config changes when channels are removed;
* `flops`: the layer's forward and backward FLOPs for one example;
* `tf_keras`: how `tfmot_interop.to_tf_keras` writes the layer in tf_keras
  (Keras 2), or None when tf_keras has no such layer.

Ids that must never be removed are *frozen*. Layers not in the table are
handled by `FREEZE_UNKNOWN`: their channels are frozen and a warning names the
layer — never a wrong model. Only channels-last layouts are followed;
`channels_first` layers are frozen the same way.

One lookup rule serves every facet (`handler_for`): an operation gets the
handler of its class or of its nearest base class in the table. A subclass
inherits how channels flow but has no tf_keras counterpart (tf_keras has no
class of that name), so its `tf_keras` is None.

Teach the library a layer kind of your own with `register_layer` and the
building blocks here: `PASS_THROUGH` (channels flow through unchanged),
`PerChannel` (per-channel weights sliced with them), `Kernel` (a
convolution-like kernel with input and output channel axes), `FREEZE`
(channels kept), or a `Handler` subclass of your own.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, NamedTuple, Optional, Protocol, Sequence

import keras
import numpy as np

from tf_prunetrain import _keras

Ids = Optional[np.ndarray]
Mask = Optional[np.ndarray]

# Activations that mix the channel axis: removing a channel changes them.
_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


def _mixes_channels(activation: Any) -> bool:
    """True for softmax-like activations and for custom (unknown) ones."""
    if activation is None:
        return False
    name = keras.activations.serialize(activation)
    return not isinstance(name, str) or name in _MIXING_ACTIVATIONS


class Context(Protocol):
    """What a handler may do while channel ids are propagated."""

    def fresh(self, n: int) -> np.ndarray: ...

    def union(self, a: np.ndarray, b: np.ndarray) -> None: ...

    def freeze(self, ids: Ids) -> None: ...

    def bind(self, layer: Any, weight: str, axis: int, ids: np.ndarray,
             judge: bool) -> None: ...

    def warn(self, layer: Any, reason: str) -> None: ...

    def has_array_constants(self) -> bool:
        """True when the call being propagated has a non-scalar array
        argument besides its tensors (a per-channel constant)."""


def channels(shape: Sequence[int | None]) -> int | None:
    """Size of the channel (last) axis, or None when there is none."""
    if len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


class Flops(NamedTuple):
    """FLOPs of one example through one layer call; a multiply-add counts 2.

    The paper's accounting: weight products (convolutions, Dense) only;
    normalization, activation, pooling and merge layers count zero FLOPs and
    are charged as memory traffic instead (see `cost`).
    """

    forward: int = 0
    weight_grad: int = 0  # gradients of the kernel(s) and bias
    input_grad: int = 0   # gradient with respect to the layer's input


class TfKeras(NamedTuple):
    """A layer kind in tf_keras (Keras 2): the class of the same name in
    `tf_keras.layers`, built from the Keras 3 config with the keys in `rename`
    renamed and the Keras 3-only keys in `drop` removed. A dropped key must
    hold the value given in `drop`: the only one tf_keras can express.
    `weights` maps Keras 3 weight names to tf_keras ones where they differ."""

    drop: Mapping[str, Any] = {}
    rename: Mapping[str, str] = {}
    weights: Mapping[str, str] = {}


def _weight_names(layer: Any) -> set[str]:
    return {w.name for w in layer.weights}


def _kept(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def _channels_first(layer: Any) -> bool:
    return getattr(layer, "data_format", None) == "channels_first"


class Handler:
    """Base handler: channels pass through unchanged, config unchanged."""

    def propagate(self, ctx: Context, layer: Any, ins: list[Ids],
                  in_shapes: list[tuple], out_shapes: list[tuple]) -> list[Ids]:
        if len(ins) != 1 or _channels_first(layer):
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        return [self._follow(ins[0], shape) for shape in out_shapes]

    @staticmethod
    def _follow(ids: Ids, shape: tuple) -> Ids:
        if ids is None or channels(shape) != len(ids):
            return None
        return ids

    def config(self, layer: Any, config: dict, in_masks: list[Mask],
               out_masks: list[Mask]) -> dict:
        return config

    def flops(self, layer: Any, in_shapes: list[tuple],
              out_shapes: list[tuple]) -> Flops:
        """FLOPs of one example; layers without a kernel count zero."""
        return Flops()

    # Branch removal asks whether a merge's inputs are residual branches.
    branch_merge = False
    # True when the output is a view of the input (no new activation memory,
    # no memory traffic), e.g. Flatten.
    view = False
    # Config changes that make the layer compute its statistics over all
    # replicas under tf.distribute (BatchNormalization's `synchronized`).
    replica_sync: dict[str, Any] = {}
    # Judged weight name -> config key of its regularizer (add_group_lasso).
    regularizers: dict[str, str] = {}
    # Per-channel scale weight name -> config key of its regularizer: a zero
    # scale silences the channel (BatchNormalization's gamma). Regularized by
    # add_group_lasso(scales=True).
    scale_regularizers: dict[str, str] = {}
    # Config key holding the output channel count (filters/units), if any:
    # such outputs are rounded to `round_to`.
    count_key: str | None = None
    # The tf_keras counterpart (`tfmot_interop`); None: tf_keras has none.
    tf_keras: TfKeras | None = TfKeras()


class Freeze(Handler):
    """Freezes every channel the layer touches (correct for any layer)."""

    def __init__(self, reason: str | None = None):
        self.reason = reason

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        for ids in ins:
            ctx.freeze(ids)
        if self.reason:
            ctx.warn(layer, self.reason)
        outs = []
        for shape in out_shapes:
            n = channels(shape)
            outs.append(None if n is None else ctx.fresh(n))
            ctx.freeze(outs[-1])
        return outs


def _in_tf_keras(handler: Handler, spec: TfKeras | None) -> Handler:
    """A copy of `handler` whose tf_keras counterpart is `spec`."""
    twin = copy.copy(handler)
    twin.tf_keras = spec
    return twin


FREEZE = Freeze()
FREEZE_UNKNOWN = _in_tf_keras(Freeze(
    "layer kind not in tf_prunetrain's handler table: its channels are "
    "kept (describe it with tf_prunetrain.register_layer)"),
    None)


class PerChannel(Handler):
    """Passes channels through; the named per-channel weights (last axis =
    channel axis) are sliced with them. A weight broadcast over channels
    (PReLU with `shared_axes` covering them) has last axis 1: not sliced."""

    def __init__(self, *weights: str, replica_sync: dict | None = None,
                 scale_regularizers: dict | None = None):
        self.weights = weights
        if replica_sync:
            self.replica_sync = replica_sync
        if scale_regularizers:
            self.scale_regularizers = scale_regularizers

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        outs = super().propagate(ctx, layer, ins, in_shapes, out_shapes)
        ids = outs[0] if outs else None
        axes = np.atleast_1d(getattr(layer, "axis", -1))
        rank = len(out_shapes[0])
        if ids is None or (axes % rank).tolist() != [rank - 1]:
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        for w in layer.weights:
            if w.name in self.weights and w.shape[-1] == len(ids) > 1:
                ctx.bind(layer, w.name, len(w.shape) - 1, ids, judge=False)
        return outs


class ActivationLayer(Handler):
    """`Activation(...)`: elementwise unless it mixes channels (softmax)."""

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        if _mixes_channels(layer.activation):
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        return super().propagate(ctx, layer, ins, in_shapes, out_shapes)


class Kernel(Handler):
    """Convolutions and Dense: a kernel with an input- and an output-channel
    axis (judged for deadness) and a bias on the output channels. A grouped
    convolution with one group per input channel (ConvNeXt's depthwise
    `Conv2D(groups=C)`) couples each input channel to its outputs.

    For a layer of your own (`register_layer`): it needs the attributes
    `kernel` (its weights named 'kernel', and 'bias' if any: `bias` may be
    None) and the config key `count_key` holding its output channel count,
    from which `build` makes a kernel of that size; `in_axis`/`out_axis` are
    the kernel's channel axes. `add_group_lasso` sets its config key
    'kernel_regularizer'.
    """

    regularizers = {"kernel": "kernel_regularizer"}

    def __init__(self, in_axis: int, out_axis: int, count_key: str):
        self.in_axis, self.out_axis, self.count_key = in_axis, out_axis, count_key

    def unsupported(self, layer: Any, ids: Ids) -> str | None:
        groups = getattr(layer, "groups", 1)
        if groups != 1 and (ids is None or groups != len(ids)):
            return ("grouped convolution with several input channels per "
                    "group: its channels are kept")
        if _channels_first(layer):
            return "channels_first layout: its channels are kept"
        if not _weight_names(layer) <= {"kernel", "bias"}:
            return "quantized or LoRA-enabled layer: its channels are kept"
        return None

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        reason = self.unsupported(layer, ins[0] if len(ins) == 1 else None)
        if reason or len(ins) != 1 or ins[0] is None:
            return Freeze(reason).propagate(ctx, layer, ins, in_shapes,
                                            out_shapes)
        rank = len(layer.kernel.shape)
        groups = getattr(layer, "groups", 1)
        if groups == 1:
            out = ctx.fresh(int(layer.kernel.shape[self.out_axis]))
            ctx.bind(layer, "kernel", self.in_axis % rank, ins[0], judge=True)
        else:  # the kernel's input axis has size 1: outputs follow inputs
            out = np.repeat(ins[0], layer.filters // groups)
        ctx.bind(layer, "kernel", self.out_axis % rank, out, judge=True)
        if getattr(layer, "bias", None) is not None:
            ctx.bind(layer, "bias", 0, out, judge=False)
        if _mixes_channels(getattr(layer, "activation", None)):
            ctx.freeze(out)
        return [out]

    def flops(self, layer, in_shapes, out_shapes):
        kernel = int(np.prod(layer.kernel.shape))
        # Transposed convolutions apply the kernel at every input position.
        where = in_shapes[0] if self.in_axis == -1 else out_shapes[0]
        return _product_flops(layer, kernel * _positions(where), out_shapes[0])

    def config(self, layer, config, in_masks, out_masks):
        config = {**config, self.count_key: _kept(out_masks[0])}
        if getattr(layer, "groups", 1) != 1:
            config["groups"] = _kept(in_masks[0])
        return config


class Depthwise(Handler):
    """DepthwiseConv1D/2D: each input channel owns `depth_multiplier` outputs."""

    regularizers = {"kernel": "depthwise_regularizer"}

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        if _channels_first(layer) or ins[0] is None:
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        out = np.repeat(ins[0], layer.depth_multiplier)
        rank = len(layer.kernel.shape)
        ctx.bind(layer, "kernel", rank - 2, ins[0], judge=True)
        if getattr(layer, "bias", None) is not None:
            ctx.bind(layer, "bias", 0, out, judge=False)
        return [out]

    def flops(self, layer, in_shapes, out_shapes):
        return _product_flops(layer, _depthwise_macs(layer.kernel,
                                                     out_shapes[0]),
                              out_shapes[0])


def _positions(shape: tuple) -> int:
    """Positions a kernel is applied at: all non-batch, non-channel dims."""
    if None in shape[1:-1]:
        raise ValueError(f"FLOPs need static spatial dimensions, got {shape}.")
    return int(np.prod(shape[1:-1], dtype=np.int64))


def _product_flops(layer: Any, macs: int, out_shape: tuple) -> Flops:
    """`macs` multiply-adds with weights plus the bias, forward and backward:
    the weight gradient costs the forward again (the bias gradient one add per
    output, like the bias itself), the input gradient the products again."""
    bias = 0
    if getattr(layer, "bias", None) is not None:
        bias = _positions(out_shape) * int(out_shape[-1])
    return Flops(2 * macs + bias, 2 * macs + bias, 2 * macs)


def _depthwise_macs(kernel: Any, out_shape: tuple) -> int:
    """A depthwise kernel (..., C, m) acts once per output position."""
    return int(np.prod(kernel.shape)) * _positions(out_shape)


class Separable(Handler):
    """SeparableConv1D/2D: per-channel depthwise, then a pointwise kernel."""

    regularizers = {"depthwise_kernel": "depthwise_regularizer",
                    "pointwise_kernel": "pointwise_regularizer"}
    count_key = "filters"

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        if _channels_first(layer) or ins[0] is None:
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        mid = np.repeat(ins[0], layer.depth_multiplier)
        out = ctx.fresh(int(layer.pointwise_kernel.shape[-1]))
        rank = len(layer.pointwise_kernel.shape)
        ctx.bind(layer, "depthwise_kernel", rank - 2, ins[0], judge=True)
        ctx.bind(layer, "pointwise_kernel", rank - 2, mid, judge=True)
        ctx.bind(layer, "pointwise_kernel", rank - 1, out, judge=True)
        if getattr(layer, "bias", None) is not None:
            ctx.bind(layer, "bias", 0, out, judge=False)
        return [out]

    def flops(self, layer, in_shapes, out_shapes):
        macs = (_depthwise_macs(layer.depthwise_kernel, out_shapes[0])
                + int(np.prod(layer.pointwise_kernel.shape))
                * _positions(out_shapes[0]))
        return _product_flops(layer, macs, out_shapes[0])

    def config(self, layer, config, in_masks, out_masks):
        return {**config, self.count_key: _kept(out_masks[0])}


class Elementwise(Handler):
    """Add/Subtract/Multiply/Average/Maximum/Minimum: all inputs share one
    channel set (the paper's channel union). A broadcast input (one channel)
    is frozen."""

    def __init__(self, branch_merge: bool = False):
        self.branch_merge = branch_merge

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        n = channels(out_shapes[0])
        full = [ids for ids in ins if ids is not None and len(ids) == n]
        if n is None or not full:
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        broadcast = [ids for ids in ins if ids is None or len(ids) != n]
        for ids in broadcast:
            ctx.freeze(ids)
        if broadcast:
            ctx.freeze(full[0])
        for ids in full[1:]:
            ctx.union(full[0], ids)
        return [full[0]]


class Concat(Handler):
    """Concatenate: along channels the output lists its inputs' ids in order."""

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        rank = len(out_shapes[0])
        if any(ids is None for ids in ins):
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        if layer.axis % rank == rank - 1:
            return [np.concatenate(ins)]
        return Elementwise().propagate(ctx, layer, ins, in_shapes, out_shapes)


class View(Handler):
    """A layer whose output is its input seen differently (Identity)."""

    view = True


class Flatten(View):
    """Flatten: every channel id repeats once per spatial position."""

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        shape = in_shapes[0]
        if ins[0] is None or _channels_first(layer) or None in shape[1:]:
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        return [np.tile(ins[0], int(np.prod(shape[1:-1], dtype=np.int64)))]


class Reshape(View):
    """Reshape keeping the channel axis last (squeeze-excite's (1, 1, C)) or
    flattening everything (like Flatten); other reshapes freeze."""

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        in_shape = in_shapes[0]
        out_n = channels(out_shapes[0])
        if ins[0] is not None and out_n == len(ins[0]):
            return [ins[0]]
        if (ins[0] is not None and len(out_shapes[0]) == 2
                and None not in in_shape[1:]):
            return Flatten().propagate(ctx, layer, ins, in_shapes, out_shapes)
        return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)

    def config(self, layer, config, in_masks, out_masks):
        if out_masks[0] is None:
            return config
        target = tuple(config["target_shape"])
        return {**config, "target_shape": (*target[:-1], _kept(out_masks[0]))}


class Permute(Handler):
    """Permute: follows channels only when the last axis stays last."""

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        if tuple(layer.dims)[-1] != len(layer.dims):
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        return super().propagate(ctx, layer, ins, in_shapes, out_shapes)


class Rescaling(Handler):
    """Rescaling: scalar scale/offset pass through; per-channel ones (branch
    removal creates a per-channel offset) are sliced with the channels."""

    @staticmethod
    def _arrays(layer: Any) -> dict[str, np.ndarray]:
        values = {key: np.asarray(getattr(layer, key))
                  for key in ("scale", "offset")}
        return {key: v for key, v in values.items() if v.ndim}

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        outs = super().propagate(ctx, layer, ins, in_shapes, out_shapes)
        n = None if outs[0] is None else len(outs[0])
        if any(v.shape[-1] != n for v in self._arrays(layer).values()):
            return FREEZE.propagate(ctx, layer, ins, in_shapes, out_shapes)
        return outs

    def config(self, layer, config, in_masks, out_masks):
        mask = in_masks[0]
        return {**config, **{
            key: keras.saving.serialize_keras_object(
                np.compress(mask, v, axis=-1))
            for key, v in self._arrays(layer).items()
            if mask is not None and v.shape[-1] == len(mask)}}


L = keras.layers
PASS_THROUGH = Handler()  # channels flow through unchanged
_PASS = PASS_THROUGH
# tf_keras spellings of Keras 3 layers (see `TfKeras`).
_CHANNELS_LAST = _in_tf_keras(
    _PASS, TfKeras(drop={"data_format": "channels_last"}))
_TABLE: dict[type, Handler] = {
    # Producers: their kernels define channels.
    L.Conv1D: Kernel(-2, -1, "filters"),
    L.Conv2D: Kernel(-2, -1, "filters"),
    L.Conv3D: Kernel(-2, -1, "filters"),
    L.Conv1DTranspose: Kernel(-1, -2, "filters"),
    L.Conv2DTranspose: Kernel(-1, -2, "filters"),
    L.Conv3DTranspose: Kernel(-1, -2, "filters"),
    L.Dense: _in_tf_keras(Kernel(0, 1, "units"),
                          TfKeras(drop={"quantization_config": None})),
    **{cls: _in_tf_keras(Depthwise(),
                         TfKeras(weights={"kernel": "depthwise_kernel"}))
       for cls in (L.DepthwiseConv1D, L.DepthwiseConv2D)},
    L.SeparableConv1D: Separable(),
    L.SeparableConv2D: Separable(),
    # Per-channel parameters.
    L.BatchNormalization: PerChannel(
        "gamma", "beta", "moving_mean", "moving_variance", "moving_stddev",
        "renorm_mean", "renorm_stddev",
        replica_sync={"synchronized": True},
        scale_regularizers={"gamma": "gamma_regularizer"}),
    L.PReLU: PerChannel("alpha"),
    # Channel-mixing normalizations: removing a channel changes statistics.
    L.LayerNormalization: _in_tf_keras(FREEZE,
                                       TfKeras(drop={"rms_scaling": False})),
    L.GroupNormalization: FREEZE,
    L.UnitNormalization: FREEZE,
    L.Normalization: FREEZE,
    L.Softmax: FREEZE,
    L.Masking: FREEZE,
    # Merges.
    L.Add: Elementwise(branch_merge=True),
    L.Subtract: Elementwise(),
    L.Multiply: Elementwise(),
    L.Average: Elementwise(),
    L.Maximum: Elementwise(),
    L.Minimum: Elementwise(),
    L.Concatenate: Concat(),
    # Shape changes.
    L.Flatten: Flatten(),
    L.Reshape: Reshape(),
    L.Permute: Permute(),
    L.Rescaling: Rescaling(),
    L.Identity: View(),
    # Elementwise activations, regularization and spatial-only layers.
    L.Activation: ActivationLayer(),
    L.LeakyReLU: _in_tf_keras(_PASS,
                              TfKeras(rename={"negative_slope": "alpha"})),
    L.Resizing: _in_tf_keras(_PASS, TfKeras(drop={
        "data_format": "channels_last", "pad_to_aspect_ratio": False,
        "fill_mode": "constant", "fill_value": 0.0, "antialias": False})),
    **{cls: _CHANNELS_LAST for cls in (
        L.ZeroPadding1D, L.CenterCrop, L.RandomFlip, L.RandomTranslation,
        L.RandomRotation, L.RandomZoom)},
    # At inference Keras 3.15 passes the image through uncropped (its output
    # shape says cropped); tf_keras crops: no faithful counterpart.
    L.RandomCrop: _in_tf_keras(_PASS, None),
    **{cls: _PASS for cls in (
        L.ReLU, L.ELU, L.Dropout, L.SpatialDropout1D,
        L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
        L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
        L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
        L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
        L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
        L.GlobalAveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
        L.GlobalMaxPooling3D, L.ZeroPadding2D,
        L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
        L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.RepeatVector)},
}


class KerasOp(Handler):
    """A `keras.ops` call in the graph (MobileNetV3's hard-swish, ...),
    handled like `inner`. Only its tensor operands are followed: an array
    constant beside them would break when channels go, so a call that takes
    one is frozen. tf_keras has no layer for these."""

    tf_keras = None

    def __init__(self, inner: Handler):
        self.inner = inner

    def propagate(self, ctx, layer, ins, in_shapes, out_shapes):
        if ctx.has_array_constants():
            return Freeze("operation with an array constant: its channels "
                          "are kept").propagate(ctx, layer, ins, in_shapes,
                                                out_shapes)
        return self.inner.propagate(ctx, layer, ins, in_shapes, out_shapes)


_OP_MERGE, _OP_PASS = KerasOp(Elementwise()), KerasOp(_PASS)
_NN, _NP = _keras.ops_nn, _keras.ops_numpy
_TABLE.update({
    **{cls: _OP_MERGE for cls in (_NP.Add, _NP.Subtract, _NP.Multiply,
                                  _NP.Maximum, _NP.Minimum)},
    **{cls: _OP_PASS for cls in (
        _NN.Relu, _NN.Relu6, _NN.Sigmoid, _NN.HardSigmoid, _NN.Silu,
        _NN.HardSilu, _NN.Softplus, _NN.LeakyRelu, _NN.Elu, _NN.Selu,
        _NN.Gelu, _NP.Tanh, _NP.Negative, _NP.Absolute, _NP.Square)},
})


def register_layer(cls: type, handler: Handler, replace: bool = False
                   ) -> None:
    """Teaches tf_prunetrain how channels flow through layer class `cls`
    (and its subclasses): pruning, `add_group_lasso`, FLOPs and in-place
    reconfiguration then follow its channels instead of freezing them.

    Args:
      cls: a Keras layer (or `keras.Operation`) class.
      handler: how its channels flow: `PASS_THROUGH`, `PerChannel(...)`,
        `Kernel(...)`, `FREEZE` or an instance of your own `Handler`
        subclass.
      replace: allow replacing the handler of a class already in the table.

    Raises:
      TypeError: `cls` is not an Operation class or `handler` not a Handler.
      ValueError: `cls` is already in the table and `replace` is False.

    Example:
    >>> import keras, tf_prunetrain
    >>> from tf_prunetrain import handlers
    >>> class Shift(keras.layers.Layer):  # adds 1: channels pass through
    ...     def call(self, x):
    ...         return x + 1.0
    >>> tf_prunetrain.register_layer(Shift, handlers.PASS_THROUGH)
    >>> handlers.handler_for(Shift()) is handlers.PASS_THROUGH
    True
    >>> handlers.unregister_layer(Shift)  # frozen again, with a warning
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.Operation)):
        raise TypeError(f"register_layer: cls must be a Keras layer class "
                        f"(a keras.Operation subclass), got {cls!r}.")
    if not isinstance(handler, Handler):
        raise TypeError(
            f"register_layer: handler for {cls.__name__} must be a "
            f"tf_prunetrain.handlers.Handler (PASS_THROUGH, PerChannel(...), "
            f"Kernel(...), FREEZE, ...), got {type(handler).__name__}.")
    if cls in _TABLE and not replace:
        raise ValueError(
            f"register_layer: {cls.__module__}.{cls.__qualname__} already "
            "has a handler; pass replace=True to replace it.")
    _TABLE[cls] = handler


def unregister_layer(cls: type) -> None:
    """Removes the handler `register_layer` gave `cls`.

    Raises:
      KeyError: `cls` has no handler of its own.
    """
    if cls not in _TABLE:
        raise KeyError(f"unregister_layer: {cls!r} has no handler of its own.")
    del _TABLE[cls]


def registered_kinds() -> dict[type, Handler]:
    """A copy of the table: every class with a handler of its own."""
    return dict(_TABLE)


def handler_for(operation: Any) -> Handler:
    """The handler of `operation`'s class or of its nearest listed base
    class; a base class's handler comes without a tf_keras counterpart (a
    subclass may compute something else). Unlisted: `FREEZE_UNKNOWN`."""
    kind = type(operation)
    for cls in kind.__mro__:
        if cls in _TABLE:
            handler = _TABLE[cls]
            return handler if cls is kind else _in_tf_keras(handler, None)
    return FREEZE_UNKNOWN
