"""Bad input on every public entry point: the error type, a message that
names the argument/layer and the fix, and a model left exactly as it was."""

import os
import tempfile

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import data

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    return model


def _snapshot(model):
    return ([l for l in model.layers], [w.numpy().copy() for w in model.weights],
            model.to_json())


def _assert_unchanged(model, snapshot):
    layers, weights, config = snapshot
    assert all(a is b for a, b in zip(layers, model.layers))
    assert len(weights) == len(model.weights)
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert model.to_json() == config


def _dynamic_model():
    x = keras.Input((None, None, 3))
    return keras.Model(x, keras.layers.Conv2D(2, 3, name="c")(x))


def _keep(model, mask_fn):
    graph = tf_prunetrain.channel_groups(model)
    return lambda: tf_prunetrain.planning.plan_pruning(graph,
                                                       keep=mask_fn(model))


def _reconfigure(**kwargs):
    """A Reconfigure of the paper's schedule, cutting every epoch."""
    return tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                     **kwargs)


def _no_model_reconfigure(model):
    plan = tf_prunetrain.planning.plan_pruning(
        tf_prunetrain.channel_groups(model))
    return lambda: _reconfigure().reconfigure(1, plan)


def _nan_weights_reconfigure(model):
    model.get_layer("stage2_block1_conv1").kernel.assign(
        np.full(model.get_layer("stage2_block1_conv1").kernel.shape, np.nan))
    callback = _reconfigure(verbose=0)
    callback.set_model(model)
    # The end of an epoch: the schedule plans a cut of the diverged model.
    return lambda: callback.on_epoch_end(0, {})


def _fit_without_group_lasso(model):
    plain = model_zoo.plain_cnn()
    plain.compile("sgd", LOSS)
    x = model_zoo.random_input(plain, 4)
    return lambda: plain.fit(x, np.arange(4), verbose=0,
                             callbacks=[_reconfigure()])


def _run_log_before_reconfigure(model):
    x = model_zoo.random_input(model, 4)
    return lambda: model.fit(x, np.arange(4), verbose=0, callbacks=[
        tf_prunetrain.RunLog(), _reconfigure(verbose=0)])


def _existing_regularizer(model):
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv",
                            kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    other = keras.Model(x, keras.layers.Conv2D(2, 1)(h))
    return lambda: tf_prunetrain.add_group_lasso(other)


def _export_onto_a_file(model):
    path = os.path.join(tempfile.mkdtemp(), "model")
    open(path, "w").close()
    return lambda: tf_prunetrain.export_saved_model(model, path)


def _checkpoint_in_a_file(model):
    path = os.path.join(tempfile.mkdtemp(), "backup")
    open(path, "w").close()
    return lambda: tf_prunetrain.Checkpoint(path)


CASES = {
    # name: (make the call from the model, error type, message pattern)
    "DeadChannels interval": (
        lambda m: lambda: tf_prunetrain.DeadChannels(interval=0),
        ValueError, "DeadChannels: interval must be an integer >= 1"),
    "DeadChannels threshold": (
        lambda m: lambda: tf_prunetrain.DeadChannels(threshold=-1.0),
        ValueError, "DeadChannels: threshold must be >= 0"),
    "DeadChannels penalty_epochs": (
        lambda m: lambda: tf_prunetrain.DeadChannels(penalty_epochs=0),
        ValueError, "DeadChannels: penalty_epochs must be an integer >= 1 "
        "or None"),
    "FlopsBudget target": (
        lambda m: lambda: tf_prunetrain.FlopsBudget(1.5), ValueError,
        r"FlopsBudget: target must be a number in \(0, 1\).*got 1\.5"),
    "FlopsBudget target_epoch": (
        lambda m: lambda: tf_prunetrain.FlopsBudget(0.5, target_epoch=0),
        ValueError, "FlopsBudget: target_epoch must be an integer >= 1"),
    "FlopsBudget interval": (
        lambda m: lambda: tf_prunetrain.FlopsBudget(0.5, interval=-2),
        ValueError, "FlopsBudget: interval must be an integer >= 1"),
    "FlopsBudget min_cut": (
        lambda m: lambda: tf_prunetrain.FlopsBudget(0.5, min_cut=-0.1),
        ValueError, "FlopsBudget: min_cut must be >= 0"),
    "Reconfigure schedule": (
        lambda m: lambda: tf_prunetrain.Reconfigure("not a schedule"),
        TypeError, "Reconfigure: schedule must be a tf_prunetrain.schedules."
        "Schedule.*got 'not a schedule'"),
    "Reconfigure schedule class": (
        lambda m: lambda: tf_prunetrain.Reconfigure(
            tf_prunetrain.DeadChannels), TypeError,
        "Reconfigure: schedule must be"),
    "penalty_ratio": (lambda m: lambda: _reconfigure(penalty_ratio=1.5),
                      ValueError,
                      r"Reconfigure: penalty_ratio must be in \(0, 1\)"),
    "round_to": (lambda m: lambda: _reconfigure(round_to=0), ValueError,
                 "Reconfigure: round_to must be an integer >= 1, got 0"),
    "min_channels": (lambda m: lambda: _reconfigure(min_channels=0),
                     ValueError, "Reconfigure: min_channels must be an "
                     "integer >= 1"),
    "RunLog before Reconfigure": (_run_log_before_reconfigure, ValueError,
                                  "Reconfigure must come before RunLog"),
    "reconfigure without model": (_no_model_reconfigure, ValueError,
                                  "set_model"),
    "NaN weights": (_nan_weights_reconfigure, ValueError,
                    "stage2_block1_conv1/kernel.*diverged"),
    "no GroupLasso": (_fit_without_group_lasso, ValueError,
                      "add_group_lasso"),
    "subclassed": (lambda m: lambda: tf_prunetrain.channel_groups(
        model_zoo.Subclassed()), TypeError, "subclassed model.*functional API"),
    "prune threshold": (lambda m: lambda: tf_prunetrain.prune_channels(
        m, threshold=-1.0), ValueError, "threshold"),
    "prune threshold type": (lambda m: lambda: tf_prunetrain.prune_channels(
        m, threshold="1e-4"), ValueError, "threshold must be a number"),
    "prune a string": (lambda m: lambda: tf_prunetrain.prune_channels(
        "model"), TypeError, "prune_channels: model must be a keras.Model, "
        "got str"),
    "export onto a file": (_export_onto_a_file, FileExistsError,
                           "export_saved_model: path '.*' is a file"),
    "checkpoint in a file": (_checkpoint_in_a_file, NotADirectoryError,
                             "Checkpoint: directory '.*' is a file"),
    "checkpoint trackers": (lambda m: lambda: tf_prunetrain.Checkpoint(
        tempfile.mkdtemp(), trackers=[keras.callbacks.History()]),
        TypeError, r"Checkpoint: trackers must have get_state\(\) and "
        r"set_state\(state\).*got History"),
    "keep unknown layer": (lambda m: _keep(m, lambda _: {"nope": [True]}),
                           ValueError, "no layer 'nope'"),
    "keep wrong length": (lambda m: _keep(m, lambda _: {
        "stem_conv": [True] * 3}), ValueError, "stem_conv.*output channels"),
    "keep frozen": (lambda m: _keep(m, lambda _: {
        "classifier": [False] + [True] * 9}), ValueError, "frozen"),
    "negative strength": (lambda m: lambda: tf_prunetrain.add_group_lasso(
        m, strength=-1.0), ValueError, "strength"),
    "existing regularizer": (_existing_regularizer, ValueError,
                             "conv.*replace_existing"),
    "GroupLasso axes": (lambda m: lambda: tf_prunetrain.GroupLasso(
        1.0, axes=(5,))(np.ones((3, 4), "float32")), ValueError,
        "out of range"),
    "cost batch_size": (lambda m: lambda: tf_prunetrain.training_cost(
        m, batch_size=0), ValueError, "batch_size"),
    "cost dynamic sizes": (lambda m: lambda: tf_prunetrain.training_cost(
        _dynamic_model()), ValueError, "layer 'c'.*static spatial"),
    "export tolerance": (lambda m: lambda: tf_prunetrain.export_saved_model(
        m, "unused", tolerance=-1.0), ValueError, "tolerance"),
    "export dynamic sizes": (lambda m: lambda: tf_prunetrain.export_saved_model(
        _dynamic_model(), "unused"), ValueError, "sample_inputs"),
    "dynamic batch multiple": (lambda m: lambda: tf_prunetrain.dynamic_batch.dynamic_batch_size(
        tf_prunetrain.training_cost(m, 8), m, multiple=0), ValueError,
        "multiple"),
    "dynamic batch cap": (lambda m: lambda: tf_prunetrain.dynamic_batch.dynamic_batch_size(
        tf_prunetrain.training_cost(m, 8), m, max_batch_size=4), ValueError,
        "max_batch_size"),
    "strategy": (lambda m: lambda: tf_prunetrain.distribute.make_strategy("tpu"),
                 ValueError, "one of"),
    "RunLog batch_size": (lambda m: lambda: tf_prunetrain.RunLog(
        batch_size=-1), ValueError, "RunLog: batch_size"),
    "pipeline batch_size": (lambda m: lambda: data.pipeline(
        data.synthetic((4, 4, 3), 2, 4), batch_size=0, training=True),
        ValueError, "batch_size"),
    "CIFAR directory": (lambda m: lambda: data.cifar("/nonexistent/cifar"),
                        FileNotFoundError, "data_batch_1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_and_the_model_is_unchanged(name):
    make, error, pattern = CASES[name]
    model = _model()
    call = make(model)  # may set up bad state (NaN weights) on the model
    snapshot = _snapshot(model)
    with pytest.raises(error, match=pattern):
        call()
    _assert_unchanged(model, snapshot)


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_nan_data_at_calibration_is_reported_as_the_data():
    model = _model()
    config, strength = model.to_json(), _strengths(model)
    x = model_zoo.random_input(model, 8)
    x[0, 0, 0, 0] = np.nan
    callback = _reconfigure(verbose=0)
    with pytest.raises(ValueError, match=r"loss is nan.*NaN or infinite "
                       r"values in the training data or labels"):
        model.fit(x, np.arange(8), verbose=0, callbacks=[callback])
    # Keras took the step; we changed nothing: architecture, λ, no cut.
    assert model.to_json() == config and _strengths(model) == strength
    assert not callback.reconfigurations


def _strengths(model):
    return [v.regularizer.strength for v in model.weights
            if isinstance(getattr(v, "regularizer", None),
                          tf_prunetrain.GroupLasso)]


def test_infinite_threshold_warns_and_leaves_the_model_alone():
    model = _model()
    snapshot = _snapshot(model)
    with pytest.warns(UserWarning, match=r"threshold=inf counts every "
                      r"channel as dead.*finite threshold"):
        pruned = tf_prunetrain.prune_channels(model, threshold=float("inf"))
    _assert_unchanged(model, snapshot)
    assert pruned.get_layer("stem_conv").filters == 1  # min_channels


def test_checkpoint_directory_replaced_by_a_file_before_restore(tmp_path):
    backup = tf_prunetrain.Checkpoint(str(tmp_path / "backup"))
    (tmp_path / "backup").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"):
        backup.restore()


def test_group_lasso_on_a_weight_it_cannot_group():
    x = keras.Input((4,))
    layer = keras.layers.Dense(3, bias_regularizer=tf_prunetrain.GroupLasso(
        1e-3, axes=(-2, -1)))
    model = keras.Model(x, layer(x))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"do not fit a weight of shape \(3,\)"):
        model.fit(np.ones((4, 4)), np.ones((4, 3)), verbose=0)
