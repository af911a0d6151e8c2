"""Memory-aware dynamic mini-batch: batch growth and its cost accounting."""

import keras
import numpy as np
import pytest

import tf_prunetrain

L = keras.layers


def _net(width, shape=(8, 8, 3)):
    x = keras.Input(shape)
    h = L.ReLU()(L.Conv2D(width, 3, padding="same", name="conv")(x))
    y = L.Dense(10, name="fc")(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, y)


def test_batch_grows_into_the_initial_activation_budget():
    initial = tf_prunetrain.training_cost(_net(32), batch_size=64)
    # Per example, float32: input 8·8·3, conv and relu 8·8·w each, pooled
    # w, logits 10.
    per_example = lambda w: 4 * (192 + 2 * 64 * w + w + 10)  # noqa: E731
    assert initial.activation_bytes == per_example(32)
    budget = 64 * per_example(32)
    expected = budget // per_example(8) // 8 * 8
    assert tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(8)) == expected
    assert expected > 64 * 3  # about four times the memory per example freed
    assert tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(8), multiple=32) \
        == budget // per_example(8) // 32 * 32
    assert tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(8),
                                            max_batch_size=100) == 100
    # Never below the initial batch, even if the model grew.
    assert tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(64)) == 64


def test_bad_arguments():
    initial = tf_prunetrain.training_cost(_net(8), batch_size=16)
    with pytest.raises(ValueError, match="multiple"):
        tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(8), multiple=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, _net(8), max_batch_size=8)


def test_run_log_counts_the_dense_model_on_each_steps_batch():
    model = _net(8)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    x, y = np.ones((32, 8, 8, 3), "float32"), np.arange(32) % 10
    log = tf_prunetrain.RunLog(batch_size=8)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[log])
    per_example = tf_prunetrain.training_cost(model).train_flops
    assert log.train_flops_dense == 4 * 8 * per_example
    log.batch_size = 16  # the next fit runs bigger batches
    model.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0,
              callbacks=[log])
    assert log.steps == 4 + 2
    assert log.train_flops_dense == (4 * 8 + 2 * 16) * per_example
    assert log.train_flops_spent == log.train_flops_dense  # nothing pruned
