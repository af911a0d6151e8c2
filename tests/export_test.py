"""export_saved_model: verified SavedModel (and TFLite) of pruned models,
pruning metadata, safe-mode loading of pruned .keras files, and
strip_prunetrain's plain-Keras copy."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain


def test_pruned_resnet_exports_verified_with_metadata_and_tflite(tmp_path):
    model, callback, log, x = pt.pruned_in_fit(model_zoo.resnet_basic)
    done = tf_prunetrain.export_saved_model(model, str(tmp_path / "saved"),
                                            sample_inputs=x[:4],
                                            callback=callback, log=log,
                                            tflite=True)
    assert done.max_difference <= 1e-5
    assert done.tflite_max_difference <= 1e-3
    assert os.path.getsize(done.tflite_path) > 0
    with open(tmp_path / "saved" / "assets" / "prunetrain.json") as f:
        metadata = json.load(f)
    assert metadata["params"] == model.count_params()
    assert metadata["params"] < metadata["initial_params"]
    assert metadata["initial_params"] == log.initial_cost.params
    assert metadata["train_flops_saved"] == log.train_flops_saved
    assert metadata["channels"] == tf_prunetrain.training_cost(
        model).channels()
    assert metadata["threshold"] == callback.schedule.threshold == 1e-4
    assert metadata["lambda"] == pytest.approx(1e-3)
    assert len(metadata["reconfigurations"]) == 1
    assert metadata["reconfigurations"][0]["params_after"] == \
        model.count_params()
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


class _Never(tf_prunetrain.Schedule):
    """A schedule of one's own, without a deadness threshold."""

    def decide(self, epoch, context):
        return None


def test_metadata_without_a_threshold_or_a_run_log(tmp_path):
    """A schedule of one's own records the base class' threshold; without
    the RunLog there are no initial parameters or training FLOPs saved to
    record."""
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, keras.layers.Conv2D(2, 1, name="conv")(x))
    callback = tf_prunetrain.Reconfigure(_Never(), verbose=0)
    done = tf_prunetrain.export_saved_model(model, str(tmp_path / "saved"),
                                            callback=callback)
    assert done.metadata["threshold"] == tf_prunetrain.Schedule.threshold
    assert done.metadata["reconfigurations"] == []
    assert "initial_params" not in done.metadata
    assert "train_flops_saved" not in done.metadata
    assert done.metadata["channels"] == {"conv": 2}


def test_pruned_mobilenet_style_model_exports_verified(tmp_path):
    model = model_zoo.randomize_batchnorm(model_zoo.mobilenetv2_like())
    pt.zero_random_groups(model, 0.4, seed=2)
    pruned = tf_prunetrain.prune_channels(model)
    assert pruned.count_params() < model.count_params()
    done = tf_prunetrain.export_saved_model(pruned, str(tmp_path / "m"))
    assert done.max_difference <= 1e-5
    assert done.metadata["lambda"] is None  # no GroupLasso on this model
    assert done.metadata["channels"]


def test_a_wrong_export_is_reported(tmp_path, monkeypatch):
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, keras.layers.Conv2D(2, 1)(x))

    class Broken:
        def serve(self, inputs):
            return tf.zeros((inputs.shape[0], 4, 4, 2))

    monkeypatch.setattr(tf.saved_model, "load", lambda path: Broken())
    with pytest.raises(ValueError, match="differs from model"):
        tf_prunetrain.export_saved_model(model, str(tmp_path / "saved"))


def test_dynamic_inputs_need_samples_and_bad_tolerance(tmp_path):
    x = keras.Input((None, None, 3), name="image")
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(x))
    model = keras.Model(x, y)
    with pytest.raises(ValueError, match="sample_inputs"):
        tf_prunetrain.export_saved_model(model, str(tmp_path / "a"))
    done = tf_prunetrain.export_saved_model(
        model, str(tmp_path / "b"),
        sample_inputs=np.ones((2, 9, 7, 3), "float32"))
    assert done.max_difference <= 1e-5 and done.metadata["channels"] is None
    with pytest.raises(ValueError, match="tolerance"):
        tf_prunetrain.export_saved_model(model, str(tmp_path / "c"),
                                         tolerance=-1.0)


def test_pruned_keras_files_load_in_safe_mode(tmp_path):
    # Branch removal folds a dead block's constant output into a Rescaling
    # offset: the file must still load with safe_mode=True.
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    graph = tf_prunetrain.channel_groups(model)
    block = [i for i in np.unique(graph.root[graph.root != 0])
             if any(b.layer.name == "stage2_block2_conv1"
                    for b in graph.bindings.values()
                    if b.judge and i in graph.roots(b.ids)
                    and b.weight == "kernel" and b.axis == 3)]
    pt.zero_groups(model, block)
    pruned = tf_prunetrain.prune_channels(model)
    assert "stage2_block2_conv1" not in [l.name for l in pruned.layers]
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = model_zoo.random_input(model, batch_size=4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-5)


# A process that has never imported tf_prunetrain, and cannot: it loads a
# .keras file with plain Keras in safe mode and checks the outputs.
_PLAIN_LOADER = r"""
import sys

class _NoPruneTrain:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tf_prunetrain":
            raise ImportError("tf_prunetrain is not available here")

sys.meta_path.insert(0, _NoPruneTrain())
import keras
import numpy as np

path, arrays = sys.argv[1], np.load(sys.argv[2])
try:
    model = keras.saving.load_model(path, safe_mode=True)
except Exception as err:
    print(f"LOAD FAILED: {type(err).__name__}: {err}")
    sys.exit(3)
served = model.predict(arrays["x"], verbose=0)
np.testing.assert_allclose(served, arrays["y"], rtol=1e-5, atol=1e-5)
assert not any(m.split(".")[0] == "tf_prunetrain" for m in sys.modules)
print("LOADED", model.count_params())
"""


def _load_without_tf_prunetrain(tmp_path, path, x, y):
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, x=x, y=y)
    return subprocess.run([sys.executable, "-c", _PLAIN_LOADER, str(path),
                           str(arrays)], capture_output=True, text=True,
                          timeout=300, env={**os.environ,
                                            "TF_CPP_MIN_LOG_LEVEL": "3"})


def _our_objects(model):
    return [(layer.name, key) for layer in model.layers
            for key, value in vars(layer).items()
            if isinstance(value, (tf_prunetrain.GroupLasso,
                                  tf_prunetrain.regularizers.ProximalStep))] + [
        v.path for v in model.weights
        if isinstance(getattr(v, "regularizer", None),
                      tf_prunetrain.GroupLasso)
        or isinstance(getattr(v, "constraint", None),
                      tf_prunetrain.regularizers.ProximalStep)]


def test_stripped_model_loads_in_plain_keras_in_another_process(tmp_path):
    """Pruned in place inside fit with the proximal lasso on kernels and
    BatchNorm scales: the stripped .keras file loads in a process without
    tf_prunetrain (safe_mode=True) and computes the same outputs; the
    unstripped file does not load there."""
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(model_zoo.resnet_basic()), 1e-3,
        proximal=True, scales=True)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pt.zero_random_groups(model, 0.5, seed=1)
    x = model_zoo.random_input(model, batch_size=16)
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), penalty_ratio=None,
        round_to=1, verbose=0)
    model.fit(x, np.arange(16) % 10, epochs=1, verbose=0,
              callbacks=[callback])
    assert callback.reconfigurations[0].changes
    before = _our_objects(model)
    assert before  # regularizers and proximal steps are attached

    plain = tf_prunetrain.strip_prunetrain(model)
    assert not _our_objects(plain) and "tf_prunetrain" not in plain.to_json()
    assert _our_objects(model) == before  # the trained model is untouched
    assert [l.name for l in plain.layers] == [l.name for l in model.layers]
    assert [w.path for w in plain.weights] == [w.path for w in model.weights]
    for a, b in zip(plain.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(plain.predict(x, verbose=0), y, rtol=1e-6,
                               atol=1e-6)

    plain.save(tmp_path / "plain.keras")
    done = _load_without_tf_prunetrain(tmp_path, tmp_path / "plain.keras", x, y)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"LOADED {model.count_params()}" in done.stdout
    model.save(tmp_path / "trainable.keras")
    done = _load_without_tf_prunetrain(tmp_path, tmp_path / "trainable.keras",
                                       x, y)
    assert done.returncode == 3 and "GroupLasso" in done.stdout, done.stdout


def test_strip_keeps_other_regularizers_and_rejects_what_it_cannot_copy():
    x = keras.Input((8,))
    h = keras.layers.Dense(4, name="l2", kernel_regularizer=keras.regularizers.L2(0.1),
                           kernel_constraint=keras.constraints.MaxNorm(2.0))(x)
    model = keras.Model(x, keras.layers.Dense(
        3, name="out", kernel_regularizer=tf_prunetrain.GroupLasso(1e-3))(h))
    plain = tf_prunetrain.strip_prunetrain(model)
    assert isinstance(plain.get_layer("l2").kernel_regularizer,
                      keras.regularizers.L2)
    assert isinstance(plain.get_layer("l2").kernel_constraint,
                      keras.constraints.MaxNorm)
    assert plain.get_layer("out").kernel_regularizer is None
    assert isinstance(model.get_layer("out").kernel_regularizer,
                      tf_prunetrain.GroupLasso)
    with pytest.raises(TypeError, match="strip_prunetrain: model must be a "
                       "keras.Model, got str"):
        tf_prunetrain.strip_prunetrain("model")
    with pytest.raises(TypeError, match="functional or Sequential"):
        tf_prunetrain.strip_prunetrain(model_zoo.Subclassed())
