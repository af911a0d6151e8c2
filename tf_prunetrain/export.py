"""Handing the pruned model on: `export_saved_model`, a SavedModel that
provably computes what the Keras model computes, with the pruning recorded
beside it; and `strip_prunetrain`, the same Keras model with nothing of
tf_prunetrain left in it, for people who load it without the library."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import _checks
from tf_prunetrain import cost as cost_lib
from tf_prunetrain import surgery
from tf_prunetrain.regularizers import lasso_variables

METADATA_FILE = "prunetrain.json"  # in the SavedModel's assets/
_PACKAGE = "tf_prunetrain"  # GroupLasso's registered package


@dataclasses.dataclass
class Export:
    """What `export_saved_model` wrote and measured."""

    path: str
    max_difference: float  # |SavedModel - Keras| on the sample inputs
    metadata: dict[str, Any]
    tflite_path: str | None = None
    tflite_max_difference: float | None = None


def random_inputs(model: keras.Model, seed: int,
                  caller: str = "export_saved_model") -> list[np.ndarray]:
    """Four standard-normal examples per input of `model`, to compare a
    converted model with it; `caller` names the function in errors."""
    rng = np.random.default_rng(seed)
    samples = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)[1:]
        if None in shape:
            raise ValueError(
                f"{caller}: input '{tensor.name}' of model "
                f"'{model.name}' has shape {tuple(tensor.shape)}; pass "
                "sample_inputs= with real examples to verify the export.")
        samples.append(rng.standard_normal((4, *shape)).astype(
            keras.backend.standardize_dtype(tensor.dtype)))
    return samples


def _metadata(model: keras.Model, callback: Any, log: Any) -> dict[str, Any]:
    strengths = {float(reg.strength) for _, reg in lasso_variables(model)}
    out: dict[str, Any] = {"model": model.name, "params": model.count_params(),
                           "lambda": max(strengths) if strengths else None}
    try:
        cost = cost_lib.training_cost(model)
        out.update(inference_flops=cost.inference_flops,
                   channels=cost.channels())
    except ValueError:  # dynamic spatial sizes: no FLOPs
        out.update(inference_flops=None, channels=None)
    if callback is not None:
        out.update(threshold=getattr(getattr(callback, "schedule", None),
                                     "threshold", None),
                   reconfigurations=[dataclasses.asdict(r)
                                     for r in callback.reconfigurations])
    if log is not None:
        out.update(initial_params=getattr(log.initial_cost, "params", None),
                   train_flops_saved=log.train_flops_saved)
    return out


def largest_difference(expected: Any, served: Any) -> float:
    """max |expected - served| over all outputs (float64); infinite when
    two outputs differ in shape."""
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
             for a, b in zip(keras.tree.flatten(expected),
                             keras.tree.flatten(served))]
    diffs = [float(np.max(np.abs(a - b))) if a.shape == b.shape else np.inf
             for a, b in pairs]
    return max(diffs, default=0.0)


def _ours(value: Any) -> bool:
    """A serialized object registered by tf_prunetrain (`GroupLasso`)."""
    return isinstance(value, dict) and str(
        value.get("registered_name") or "").startswith(_PACKAGE + ">")


def _plain_config(config: Any) -> Any:
    """`config` with each of our regularizers and constraints set to None."""
    if isinstance(config, dict):
        return {key: None if key.endswith(("_regularizer", "_constraint"))
                and _ours(value) else _plain_config(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_plain_config(value) for value in config]
    return config


def strip_prunetrain(model: keras.Model) -> keras.Model:
    """A copy of `model` with nothing of tf_prunetrain left in it.

    Same layers, names, architecture and weights (BatchNorm statistics
    included), so the same outputs; no `GroupLasso` regularizers and no
    proximal constraints, so its `.keras` file loads with plain Keras
    (`keras.saving.load_model(path)`, `safe_mode=True` included) where
    tf_prunetrain is not installed. Regularizers and constraints that are
    not ours are kept. A compiled model's copy is compiled alike, with a
    fresh optimizer (a pruned model fine-tuned without the lasso keeps its
    channels). The model passed in is not changed.

    Example:
    >>> import keras, numpy as np, tempfile, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, name="conv")(x)
    >>> model = tf_prunetrain.add_group_lasso(keras.Model(x, y), 1e-3)
    >>> plain = tf_prunetrain.strip_prunetrain(model)
    >>> plain.get_layer("conv").kernel_regularizer is None
    True
    >>> path = tempfile.mkdtemp() + "/pruned.keras"
    >>> plain.save(path)
    >>> "tf_prunetrain" in keras.saving.load_model(path).to_json()
    False
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"strip_prunetrain: model must be a keras.Model, "
                        f"got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"strip_prunetrain: model '{model.name}' is not "
                         "built; build it or call it on data first.")

    try:
        return surgery.clone(model, lambda layer, config: _plain_config(config))
    except (TypeError, ValueError) as err:
        raise TypeError(f"strip_prunetrain: model '{model.name}' must be a "
                        f"functional or Sequential model ({err})") from err


def export_saved_model(model: keras.Model, path: str,
                       sample_inputs: Any = None, callback: Any = None,
                       tolerance: float = 1e-5, tflite: bool = False,
                       seed: int = 0, *, log: Any = None) -> Export:
    """Writes `model` as a SavedModel (endpoint `serve`) and verifies it.

    The SavedModel is reloaded and run on `sample_inputs` (default: four
    standard-normal examples per input); its outputs must equal the Keras
    model's (inference mode) within `tolerance`, or a ValueError says by how
    much they differ. `assets/prunetrain.json` records the pruning: channels
    per convolution/Dense layer, parameters, inference FLOPs, λ; given the
    `Reconfigure` callback that trained it (`callback`), every
    reconfiguration and its schedule's deadness threshold (None for a
    schedule without one); given the `RunLog` of that run (`log`), the
    initial parameters and the fraction of the training FLOPs saved. With
    `tflite=True` it also writes `<path>/model.tflite`, verified the same way
    (TFLite kernels round differently: within `100 × tolerance`).

    Example:
    >>> import keras, tempfile, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> model = keras.Model(x, keras.layers.Conv2D(4, 3, name="conv")(x))
    >>> done = tf_prunetrain.export_saved_model(
    ...     model, tempfile.mkdtemp() + "/saved")
    >>> done.max_difference < 1e-5, done.metadata["channels"]
    (True, {'conv': 4})
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"export_saved_model: model must be a keras.Model, "
                        f"got {type(model).__name__}.")
    _checks.non_negative(tolerance, "tolerance", "export_saved_model")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"export_saved_model: path '{path}' is a file; "
                              "a SavedModel is a folder. Pass a new or "
                              "folder path.")
    samples = (random_inputs(model, seed) if sample_inputs is None
               else keras.tree.flatten(sample_inputs))
    args = samples[0] if len(samples) == 1 else samples
    expected = model(args, training=False)
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)  # keep it: it owns the variables
    difference = largest_difference(expected, loaded.serve(args))
    if difference > tolerance:
        raise ValueError(
            f"export_saved_model: the SavedModel at '{path}' differs from "
            f"model '{model.name}' by {difference:.3g} (> tolerance "
            f"{tolerance:g}) on the sample inputs; it should not be used.")
    metadata = _metadata(model, callback, log)
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    with open(os.path.join(path, "assets", METADATA_FILE), "w",
              encoding="utf-8") as f:
        json.dump(metadata, f, indent=1, default=lambda v: np.asarray(v).tolist())
    done = Export(path, difference, metadata)
    if tflite:
        done.tflite_path, done.tflite_max_difference = _tflite(
            path, samples, expected, 100 * tolerance)
    return done


def _tflite(path: str, samples: list[np.ndarray], expected: Any,
            tolerance: float) -> tuple[str, float]:
    content = tf.lite.TFLiteConverter.from_saved_model(path).convert()
    target = os.path.join(path, "model.tflite")
    with open(target, "wb") as f:
        f.write(content)
    difference = largest_difference(keras.tree.flatten(expected),
                                    run_tflite(content, samples))
    if difference > tolerance:
        raise ValueError(f"export_saved_model: the TFLite model '{target}' "
                         f"differs by {difference:.3g} (> {tolerance:g}).")
    return target, difference


def run_tflite(content: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Runs a TFLite model (its first signature) on a batch of `inputs`,
    given and returned in the order of the signature's sorted tensor names.

    Example:
    >>> import tempfile, numpy as np, tensorflow as tf
    >>> from tf_prunetrain.export import run_tflite
    >>> module, path = tf.Module(), tempfile.mkdtemp()
    >>> module.double = tf.function(lambda x: 2 * x,
    ...                             input_signature=[tf.TensorSpec((None, 3))])
    >>> tf.saved_model.save(module, path)
    >>> content = tf.lite.TFLiteConverter.from_saved_model(path).convert()
    >>> run_tflite(content, [np.ones((2, 3), "float32")])[0].tolist()
    [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    interpreter = tf.lite.Interpreter(model_content=content)
    key, signature = next(iter(interpreter.get_signature_list().items()))
    outputs = interpreter.get_signature_runner(key)(
        **dict(zip(sorted(signature["inputs"]), inputs)))
    return [outputs[k] for k in sorted(outputs)]
