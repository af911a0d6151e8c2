"""export_saved_model: verified SavedModel (and TFLite) of pruned models,
pruning metadata, and safe-mode loading of pruned .keras files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain


def test_pruned_resnet_exports_verified_with_metadata_and_tflite(tmp_path):
    model, callback, x = pt.pruned_in_fit(model_zoo.resnet_basic)
    done = tf_prunetrain.export_saved_model(model, str(tmp_path / "saved"),
                                            sample_inputs=x[:4],
                                            callback=callback, tflite=True)
    assert done.max_difference <= 1e-5
    assert done.tflite_max_difference <= 1e-3
    assert os.path.getsize(done.tflite_path) > 0
    with open(tmp_path / "saved" / "assets" / "prunetrain.json") as f:
        metadata = json.load(f)
    assert metadata["params"] == model.count_params()
    assert metadata["params"] < metadata["initial_params"]
    assert metadata["channels"] == tf_prunetrain.training_cost(
        model).channels()
    assert metadata["threshold"] == callback.threshold
    assert metadata["lambda"] == pytest.approx(1e-3)
    assert len(metadata["reconfigurations"]) == 1
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


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
