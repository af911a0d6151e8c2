"""PruneTrain under tf.distribute: MirroredStrategy on two logical CPUs
(see conftest.py) and MultiWorkerMirroredStrategy with two local processes."""

import json
import os
import socket
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPOCHS = 3


class _Kill(keras.callbacks.Callback):
    """Zeroes more channel groups after the first epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            pt.zero_random_groups(self.model, 0.3, seed=4)


def _train(strategy):
    with strategy.scope():
        model = tf_prunetrain.distribute.synchronize_batchnorm(
            model_zoo.randomize_batchnorm(model_zoo.resnet_basic()))
        model = tf_prunetrain.add_group_lasso(model)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    pt.zero_random_groups(model, 0.4, seed=3)
    x = model_zoo.random_input(model, batch_size=32, seed=0)
    y = np.arange(32) % 10
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), penalty_ratio=0.2,
        round_to=1, verbose=0)
    model.fit(x, y, epochs=EPOCHS, batch_size=16, shuffle=False, verbose=0,
              callbacks=[_Kill(), callback])
    return model, callback, x


@pytest.fixture(scope="module")
def mirrored():
    # The recipes' strategy: one per process (see make_strategy).
    strategy = tf_prunetrain.distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2  # the two logical CPUs
    return (strategy, *_train(strategy))


def test_mirrored_run_matches_the_single_device_run(mirrored):
    strategy, model, callback, x = mirrored
    single, single_callback, _ = _train(tf.distribute.get_strategy())
    assert [r.changes for r in callback.reconfigurations] == \
        [r.changes for r in single_callback.reconfigurations]
    assert callback.reconfigurations[0].changes  # it did shrink
    assert model.count_params() == single.count_params()
    assert [tuple(w.shape) for w in model.weights] == \
        [tuple(w.shape) for w in single.weights]
    assert callback.strength == pytest.approx(single_callback.strength,
                                              rel=1e-5)
    with strategy.scope():
        mirrored_out = model.predict(x, verbose=0)
    np.testing.assert_allclose(mirrored_out, single.predict(x, verbose=0),
                               rtol=1e-3, atol=1e-4)


def test_variables_stay_mirrored_and_equal_across_replicas(mirrored):
    _, model, callback, _ = mirrored
    assert callback.reconfigurations[0].params_after < \
        callback.reconfigurations[0].params_before
    checked = 0
    for variable in [*model.weights, *model.optimizer.variables]:
        inner = variable.value
        assert isinstance(inner, tf.distribute.DistributedValues), variable.path
        copies = [np.asarray(v) for v in inner.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1],
                                      err_msg=variable.path)
        checked += 1
    assert checked > len(model.weights)


def test_reconfiguration_under_the_strategy_keeps_the_function(mirrored):
    strategy = mirrored[0]
    with strategy.scope():
        model = tf_prunetrain.add_group_lasso(tf_prunetrain.distribute.synchronize_batchnorm(
            model_zoo.randomize_batchnorm(model_zoo.resnet_basic())))
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    pt.zero_random_groups(model, 0.5, seed=5)
    x = model_zoo.random_input(model, batch_size=8)
    with strategy.scope():
        before = model.predict(x, verbose=0)
    callback = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(),
                                         round_to=1, verbose=0)
    callback.set_model(model)
    done = callback.reconfigure(0, pt.dead_channel_plan(callback))
    assert done.params_after < done.params_before
    with strategy.scope():
        after = model.predict(x, verbose=0)
    assert pt.relative_error(before, after) < 1e-5


def _train_proximal(strategy):
    with strategy.scope():
        model = tf_prunetrain.add_group_lasso(
            tf_prunetrain.distribute.synchronize_batchnorm(model_zoo.resnet_basic()),
            strength=2.0, proximal=True)
        model.compile(keras.optimizers.SGD(0.1), LOSS)
    x = model_zoo.random_input(model, batch_size=32, seed=1)
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=2), penalty_ratio=None,
        round_to=1, verbose=0)
    model.fit(x, np.arange(32) % 10, epochs=4, batch_size=16, shuffle=False,
              verbose=0, callbacks=[callback])
    return model, callback


def test_proximal_step_under_the_strategy(mirrored):
    """The proximal step runs on every replica identically and as on one
    device: same reconfigurations, same (exactly zeroed) weights."""
    model, callback = _train_proximal(mirrored[0])
    single, single_callback = _train_proximal(tf.distribute.get_strategy())
    assert any(r.changes for r in callback.reconfigurations)
    assert [r.changes for r in callback.reconfigurations] == \
        [r.changes for r in single_callback.reconfigurations]
    zeros = 0
    for variable, reference in zip(model.weights, single.weights):
        copies = [np.asarray(v) for v in variable.value.values]
        np.testing.assert_array_equal(copies[0], copies[1],
                                      err_msg=variable.path)
        np.testing.assert_allclose(copies[0], reference.numpy(), rtol=1e-3,
                                   atol=1e-4, err_msg=variable.path)
        zeros += int(np.sum(copies[0] == 0.0))
    assert zeros > 0


def test_exported_model_equals_in_strategy_predictions(mirrored, tmp_path):
    strategy, model, _, x = mirrored
    with strategy.scope():
        expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "saved"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x), expected, rtol=1e-5,
                               atol=1e-5)


def test_synchronize_batchnorm_keeps_the_function():
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(model_zoo.resnet_basic()), 1e-3)
    synced = tf_prunetrain.distribute.synchronize_batchnorm(model)
    batchnorms = [l for l in synced.layers
                  if isinstance(l, keras.layers.BatchNormalization)]
    assert batchnorms and all(l.synchronized for l in batchnorms)
    assert [l.name for l in synced.layers] == [l.name for l in model.layers]
    assert synced.get_layer("stem_conv").kernel_regularizer is not None
    x = model_zoo.random_input(model, batch_size=4)
    np.testing.assert_allclose(synced.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def test_broadcast_and_make_strategy(mirrored):
    strategy = mirrored[0]
    assert tf_prunetrain.distribute.make_strategy("mirrored") is strategy
    keep = np.array([True, False, True])
    assert tf_prunetrain.distribute.broadcast(strategy, keep).tolist() == keep.tolist()
    assert float(tf_prunetrain.distribute.broadcast(strategy, np.float64(0.125))) == 0.125
    with pytest.raises(ValueError, match="one of"):
        tf_prunetrain.distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="devices= applies"):
        tf_prunetrain.distribute.make_strategy("default", ["/cpu:0"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_end_with_identical_architecture_and_weights(tmp_path):
    """Worker 1 is given threshold 0 (on its own it would prune nothing):
    both still shrink alike because every decision is worker 0's."""
    results = _two_workers(tmp_path, "dead")
    assert results[0]["changes"][0]  # the first reconfiguration shrank
    assert results[0]["strength"] > 0


def test_two_workers_meet_a_flops_target_alike(tmp_path):
    results = _two_workers(tmp_path, "target")
    assert results[0]["finished"] == 2
    assert results[0]["strength"] == 0.0  # the lasso is off after it


def _two_workers(tmp_path, mode):
    """Runs multi_worker_job.py on two local workers; checks that they end
    with the same architecture, decisions and weights; returns their
    results."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    job = os.path.join(os.path.dirname(__file__), "multi_worker_job.py")
    procs = []
    for index, threshold in enumerate(("1e-4", "0")):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, job, str(tmp_path), threshold, mode], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    results = [json.loads((tmp_path / f"{i}.json").read_text())
               for i in range(2)]
    assert results[0] == results[1]
    weights = [np.load(tmp_path / f"{i}.npz") for i in range(2)]
    assert weights[0].files == weights[1].files
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    return results


def test_an_optimizer_made_outside_the_scope_is_named(mirrored):
    strategy = mirrored[0]

    def fit(inside):
        optimizer = None if inside else keras.optimizers.SGD(0.01)
        with strategy.scope():
            model = tf_prunetrain.add_group_lasso(
                pt.two_convs(16, 16), strength=0.01)
            model.compile(optimizer or keras.optimizers.SGD(0.01), LOSS)
        x = np.random.default_rng(0).random((32, 8, 8, 3), np.float32)
        callback = tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=1, gentle=False),
            penalty_ratio=None, round_to=1, verbose=0)
        model.fit(x, np.arange(32) % 10, epochs=2, batch_size=16,
                  verbose=0, callbacks=[callback])
        return model

    with pytest.warns(UserWarning, match="created outside the strategy's "
                      r"scope, so every replica counts each step .* 2x"):
        model = fit(inside=False)
    # As the warning says: 2 steps counted twice, then 2 once after the cut.
    assert int(model.optimizer.iterations.numpy()) == 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert int(fit(inside=True).optimizer.iterations.numpy()) == 4
    assert not [w for w in caught if "outside the strategy" in str(w.message)]
