"""Frozen BatchNorm statistics re-estimated on data (`recalibration`)."""

import keras
import numpy as np
import pytest

import tf_prunetrain
from tf_prunetrain.experimental import recalibration

L = keras.layers


def _net(frozen=("bn1", "bn2")) -> keras.Model:
    """conv/bn1 -> conv/bn2 -> dropout -> head; statistics off on purpose."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = L.ReLU()(L.BatchNormalization(name="bn1")(
        L.Conv2D(16, 3, padding="same", name="c1")(x)))
    h = L.BatchNormalization(name="bn2")(L.Conv2D(16, 3, name="c2")(h))
    h = L.Dropout(0.0)(L.GlobalAveragePooling2D()(L.ReLU()(h)))
    model = keras.Model(x, L.Dense(3, name="head")(h))
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        bn.moving_mean.assign(rng.normal(0, 3, 16))
        bn.moving_variance.assign(rng.uniform(5, 9, 16))
        bn.trainable = name not in frozen
    return model


def _batches(n=3, seed=2):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.5, 1.0, (16, 8, 8, 3)).astype("float32")
            for _ in range(n)]


def _state(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def _by_hand(model, batches):
    """bn1's and bn2's statistics when both are re-estimated: bn1's inputs
    depend on no statistics; bn2's follow bn1 normalizing each batch by
    its own; each is the average over the batches."""
    c1, c2, bn1 = (model.get_layer(n) for n in ("c1", "c2", "bn1"))
    stats = {"bn1": ([], []), "bn2": ([], [])}
    for x in batches:
        a = c1(x).numpy()
        m, v = a.mean((0, 1, 2)), a.var((0, 1, 2))
        h = np.maximum((a - m) / np.sqrt(v + bn1.epsilon) * bn1.gamma.numpy()
                       + bn1.beta.numpy(), 0)
        b = c2(h).numpy()
        for name, out in (("bn1", a), ("bn2", b)):
            stats[name][0].append(out.mean((0, 1, 2)))
            stats[name][1].append(out.var((0, 1, 2)))
    return {name: (np.mean(means, 0), np.mean(variances, 0))
            for name, (means, variances) in stats.items()}


def _assert_statistics(model, expected):
    for name, (mean, variance) in expected.items():
        bn = model.get_layer(name)
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(bn.moving_variance.numpy(), variance,
                                   rtol=1e-3, atol=1e-4)


def test_the_statistics_are_the_average_of_the_batches_statistics():
    model = _net()
    batches = _batches()
    expected = _by_hand(model, batches)
    before = _state(model)
    done = recalibration.recalibrate_batchnorm(model, batches, steps=3)
    assert done == ["bn1", "bn2"]
    _assert_statistics(model, expected)
    # Only the moving statistics changed; flags and momenta are back.
    after = _state(model)
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    assert changed == {f"bn{i}/moving_{s}" for i in (1, 2)
                       for s in ("mean", "variance")}
    assert [model.get_layer(n).trainable for n in ("bn1", "bn2")] == \
        [False, False]
    assert model.get_layer("bn1").momentum == 0.99


def test_only_frozen_layers_by_default_and_steps_bound_the_batches():
    model = _net(frozen=("bn2",))
    bn1 = model.get_layer("bn1")
    kept = bn1.moving_mean.numpy().copy()
    one = recalibration.RecalibrateBatchNorm(_batches(1), steps=1)
    assert recalibration.recalibrate_batchnorm(
        model, iter(_batches(5)), steps=2) == ["bn2"]
    np.testing.assert_array_equal(bn1.moving_mean.numpy(), kept)
    assert bn1.trainable and not model.get_layer("bn2").trainable
    # Two batches of five: the same as those two alone.
    twin = _net(frozen=("bn2",))
    recalibration.recalibrate_batchnorm(twin, _batches(5)[:2], steps=9)
    np.testing.assert_allclose(
        twin.get_layer("bn2").moving_mean.numpy(),
        model.get_layer("bn2").moving_mean.numpy(), rtol=1e-6, atol=1e-6)
    assert one.recalibrated == [] and one.seconds == 0.0


def test_a_nested_frozen_backbone_is_reached():
    inner = _net()
    x = keras.Input((8, 8, 3))
    outer = keras.Model(x, L.Dense(2)(inner(x)))
    inner.trainable = False
    assert [bn.name for bn in recalibration.batchnorm_layers(outer)] == \
        ["bn1", "bn2"]
    before = inner.get_layer("bn2").moving_mean.numpy().copy()
    assert recalibration.recalibrate_batchnorm(outer, _batches(2)) == \
        ["bn1", "bn2"]
    assert not np.allclose(inner.get_layer("bn2").moving_mean.numpy(),
                           before)
    assert not any(layer.trainable for layer in inner.layers)


@pytest.mark.parametrize("call, message", [
    (lambda m: recalibration.recalibrate_batchnorm(m, _batches(), steps=0),
     "steps must be >= 1"),
    (lambda m: recalibration.recalibrate_batchnorm(m, []), "gave no batch"),
    (lambda m: recalibration.recalibrate_batchnorm(
        m, _batches(), layers=[L.BatchNormalization(name="stray")]),
     "'stray' is not a BatchNormalization layer of this model"),
    (lambda m: recalibration.RecalibrateBatchNorm([], steps=0),
     "steps must be >= 1"),
    # A good batch changes the statistics, then one of the wrong shape
    # fails (Keras' own error): the first batch's change is undone.
    (lambda m: recalibration.recalibrate_batchnorm(
        m, _batches(1) + [np.zeros((4, 5, 5), "float32")], steps=2),
     "expected|incompatible|shape"),
])
def test_bad_input_is_refused_and_the_model_left_as_it_was(call, message):
    model = _net()
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        call(model)
    after = _state(model)
    assert all(np.array_equal(before[p], after[p]) for p in before)
    assert [model.get_layer(n).trainable for n in ("bn1", "bn2")] == \
        [False, False]


def test_renorm_layers_are_refused():
    x = keras.Input((4,))
    norm = L.BatchNormalization(renorm=True, name="rn", trainable=False)
    model = keras.Model(x, norm(L.Dense(3)(x)))
    with pytest.raises(ValueError, match="'rn' has renorm=True"):
        recalibration.recalibrate_batchnorm(model, [np.ones((2, 4))])


@pytest.mark.parametrize("recal_first", [False, True])
def test_after_a_cut_the_frozen_statistics_describe_the_cut_model(
        recal_first):
    """A frozen BatchNorm behind a cut: the cut keeps its slices (the
    function in inference mode is preserved), and `RecalibrateBatchNorm`
    then re-estimates them from what the cut model feeds it."""
    model = tf_prunetrain.add_group_lasso(_net())
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights stay put
    x = np.concatenate(_batches(4))
    y = np.zeros((len(x), 3), "float32")
    stream = _batches(2, seed=5)
    recal = recalibration.RecalibrateBatchNorm(stream, steps=2)
    cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
                                    penalty_ratio=None, round_to=1,
                                    verbose=0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[recal, cut] if recal_first else [cut, recal])
    assert cut.reconfigurations[0].changes
    assert recal.recalibrated == [["bn1", "bn2"]] and recal.seconds > 0
    # Their statistics are those the cut model's batches give (the second
    # epoch trains at learning rate 0: nothing moves after the cut).
    assert model.get_layer("bn2").moving_mean.shape[0] < 16
    _assert_statistics(model, _by_hand(model, stream))
    assert not model.get_layer("bn2").trainable
