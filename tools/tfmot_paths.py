r"""A PruneTrain-pruned model handed to TFMOT, both paths measured.

Trains PruneTrain on MNIST-5k (the demo's ResNet in the paper's mode,
`DeadChannels` every 2 epochs), removes the dead channels
(`prune_channels`; counts stay multiples of 4 throughout, for 2:4),
converts the model to tf_keras (`tfmot_interop.to_tf_keras`) and then

(a) quantization-aware training: `quantize_model` → a short fine-tune →
    int8 TFLite; accuracy of the float Keras model, the QAT Keras model and
    the int8 TFLite model on the test split, TFLite sizes float vs int8;
(b) 2:4 sparsity: `prune_low_magnitude(sparsity_m_by_n=(2, 4))` → a short
    fine-tune → `strip_pruning` → TFLite; the 2:4 pattern checked on every
    pruned weight, accuracy before/after, gzipped TFLite size before/after.

    python -m tools.tfmot_paths                  # about 80 s on 2 CPU cores
    python -m tools.tfmot_paths --epochs=20 --json=tfmot.json

Needs the `data` and `tfmot` extras (README, "Handing the pruned model to
TFMOT").
"""

from __future__ import annotations

import gzip
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import tf_prunetrain
from tf_prunetrain import demo
from tf_prunetrain import tfmot_interop
from tf_prunetrain.export import run_tflite
from tools import results

def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _tflite(model: Any, optimize: bool = False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _compile(model: Any, tf_keras: Any, learning_rate: float) -> None:
    model.compile(
        tf_keras.optimizers.Adam(learning_rate),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])


def m_by_n_violations(kernel: np.ndarray, m: int = 2, n: int = 4) -> int:
    """Groups of `n` consecutive input-channel weights (axis -2, TFLite's
    innermost axis; the last group zero-padded) with fewer than `m` zeros."""
    rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])
    rows = np.pad(rows, [(0, 0), (0, -rows.shape[1] % n)])
    zeros = np.count_nonzero(rows.reshape(len(rows), -1, n) == 0, axis=-1)
    return int(np.count_nonzero(zeros < m))


def quantization_path(twin: Any, data: tuple, epochs: int) -> dict[str, Any]:
    """(a): QAT fine-tune of the tf_keras twin, then int8 TFLite."""
    (x_train, y_train), (x_test, y_test) = data
    tfmot = tfmot_interop.load_tfmot()
    tf_keras = tfmot_interop.load_tf_keras()
    float_tflite = _tflite(twin)
    qat = tfmot.quantization.keras.quantize_model(twin)
    _compile(qat, tf_keras, 1e-4)
    qat.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    qat_logits = qat.predict(x_test, verbose=0)
    int8_tflite = _tflite(qat, optimize=True)
    int8_logits = run_tflite(int8_tflite, [x_test])[0]
    return {
        "float_tflite_accuracy": _accuracy(
            run_tflite(float_tflite, [x_test])[0], y_test),
        "qat_keras_accuracy": _accuracy(qat_logits, y_test),
        "int8_tflite_accuracy": _accuracy(int8_logits, y_test),
        "int8_agreement": float(np.mean(np.argmax(int8_logits, -1)
                                        == np.argmax(qat_logits, -1))),
        "float_tflite_bytes": len(float_tflite),
        "int8_tflite_bytes": len(int8_tflite),
    }


def sparsity_path(twin: Any, data: tuple, epochs: int) -> dict[str, Any]:
    """(b): 2:4 pruning fine-tune of the tf_keras twin, stripped, TFLite."""
    (x_train, y_train), (x_test, y_test) = data
    sparsity = tfmot_interop.load_tfmot().sparsity.keras
    tf_keras = tfmot_interop.load_tf_keras()
    before = _tflite(twin)
    wrapped = sparsity.prune_low_magnitude(twin, sparsity_m_by_n=(2, 4))
    _compile(wrapped, tf_keras, 1e-4)
    wrapped.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0,
                callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(wrapped)
    checked = {}
    for wrapper in wrapped.layers:  # PruneLowMagnitude (not public)
        for weight, _, _ in getattr(wrapper, "pruning_vars", ()):
            layer = stripped.get_layer(wrapper.layer.name)
            name = weight.name.split("/")[-1].split(":")[0]
            value = getattr(layer, name).numpy()
            checked[f"{layer.name}/{name}"] = m_by_n_violations(value)
    after = _tflite(stripped)
    return {
        "accuracy_after": _accuracy(stripped.predict(x_test, verbose=0),
                                    y_test),
        "tflite_accuracy_after": _accuracy(run_tflite(after, [x_test])[0],
                                           y_test),
        "violations": checked,
        "gzip_bytes_before": len(gzip.compress(before)),
        "gzip_bytes_after": len(gzip.compress(after)),
    }


def hand_over(pruned: Any, data: tuple,
              fine_tune_epochs: int = 1) -> dict[str, Any]:
    """Converts a pruned Keras 3 model to tf_keras and runs both paths."""
    (_, _), (x_test, y_test) = data
    twin = tfmot_interop.to_tf_keras(pruned, sample_inputs=x_test[:64])
    return {
        "keras_accuracy": _accuracy(pruned.predict(x_test, verbose=0),
                                    y_test),
        "twin_accuracy": _accuracy(twin.predict(x_test, verbose=0), y_test),
        "quantization": quantization_path(twin, data, fine_tune_epochs),
        "sparsity": sparsity_path(twin, data, fine_tune_epochs),
    }


def measure(epochs: int = 12, strength: float = 2e-2,
            threshold: float = 1e-4, fine_tune_epochs: int = 1, seed: int = 0,
            widths: tuple[int, int, int] = (8, 16, 32),
            log_dir: str | None = None) -> dict[str, Any]:
    """PruneTrain on MNIST-5k, then both TFMOT paths; returns the figures."""
    data = demo.load_mnist5k(seed=seed)
    # The paper's mode (flops_target 0): dead channels every 2 epochs, in
    # multiples of 4 as 2:4 sparsity needs.
    settings = dict(epochs=epochs, batch_size=64, strength=strength,
                    flops_target=0, target_epoch=None, threshold=threshold,
                    interval=2, round_to=4, learning_rate=0.1,
                    weight_decay=5e-4, depth=8, widths=tuple(widths),
                    seed=seed, verbose=0)
    run = demo.train(True, data, settings,
                     log_dir or tempfile.mkdtemp(prefix="tfmot_paths_"))
    pruned = tf_prunetrain.prune_channels(run["model"], threshold=threshold,
                                          round_to=4)
    return {"initial_params": run["runlog"].initial_cost.params,
            "pruned_params": pruned.count_params(),
            **hand_over(pruned, data, fine_tune_epochs)}


def table(result: dict[str, Any]) -> str:
    """The figures as text."""
    q, s = result["quantization"], result["sparsity"]
    bad = sum(s["violations"].values())
    return "\n".join([
        f"PruneTrain model: {result['initial_params']:,} -> "
        f"{result['pruned_params']:,} parameters; test accuracy Keras 3 "
        f"{result['keras_accuracy']:.4f}, tf_keras twin "
        f"{result['twin_accuracy']:.4f}",
        "(a) QAT -> int8 TFLite: accuracy float TFLite "
        f"{q['float_tflite_accuracy']:.4f}, QAT Keras "
        f"{q['qat_keras_accuracy']:.4f}, int8 TFLite "
        f"{q['int8_tflite_accuracy']:.4f} (agrees with QAT Keras on "
        f"{100 * q['int8_agreement']:.1f}% of the images); TFLite "
        f"{q['float_tflite_bytes']:,} B float -> {q['int8_tflite_bytes']:,} B"
        " int8",
        f"(b) 2:4 sparsity: {len(s['violations'])} weights checked, "
        f"{bad} groups of 4 with fewer than 2 zeros; accuracy "
        f"{result['twin_accuracy']:.4f} -> {s['accuracy_after']:.4f} "
        f"(TFLite {s['tflite_accuracy_after']:.4f}); gzipped TFLite "
        f"{s['gzip_bytes_before']:,} B -> {s['gzip_bytes_after']:,} B",
    ])


def main() -> None:
    """The command line (flags are defined here, not at import: the tests
    import this file beside other tools that define flags)."""
    epochs = flags.DEFINE_integer("epochs", 12,
                                  "PruneTrain epochs on MNIST-5k.")
    strength = flags.DEFINE_float("strength", 2e-2, "Group-lasso strength λ.")
    threshold = flags.DEFINE_float("threshold", 1e-4, "A channel is dead when "
                                   "all its weights are below this.")
    fine_tune = flags.DEFINE_integer("fine_tune_epochs", 1,
                                     "Epochs of QAT and of 2:4 fine-tuning.")
    seed = flags.DEFINE_integer("seed", 0, "Seed of data split and weights.")
    json_path = flags.DEFINE_string("json", None,
                                    "Also write the figures here.")

    def run(argv: list[str]) -> None:
        del argv
        result = measure(epochs.value, strength.value, threshold.value,
                         fine_tune.value, seed.value)
        print(table(result))
        results.write(result, json_path.value)

    app.run(run)


if __name__ == "__main__":
    main()
