"""Pruning what is already trained: frozen layers, loaded models, a
keras.applications backbone from a weights file, short fine-tunes."""

import os

import keras
import numpy as np
import pytest

import tf_prunetrain
from tf_prunetrain import data as data_lib
from pruning_testing import OutputsAroundCuts

L = keras.layers


def _frozen_front(freeze: bool = True) -> keras.Model:
    """c1/bn1 (frozen) -> c2/bn2 -> c3/bn3 -> head, BatchNorm statistics
    random (as a trained model's are)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = x
    for i, width in enumerate((16, 16, 16), 1):
        h = L.Conv2D(width, 3, padding="same", name=f"c{i}",
                     trainable=not (freeze and i == 1))(h)
        h = L.BatchNormalization(name=f"bn{i}",
                                 trainable=not (freeze and i == 1))(h)
        h = L.ReLU()(h)
    model = keras.Model(x, L.Dense(4, name="head")(
        L.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.2, 16))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, 16))
    return model


def _values(model: keras.Model, names) -> dict[str, list[np.ndarray]]:
    return {n: [np.array(w) for w in model.get_layer(n).weights]
            for n in names}


def _kept(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether every slice of `after` along the last axis is one of
    `before`'s, unchanged (a cut keeps surviving slices)."""
    old = before.reshape(-1, before.shape[-1]).T
    return all(any(np.array_equal(new, o) for o in old)
               for new in after.reshape(-1, after.shape[-1]).T)


def _fit_cut(model, epochs=2, steps=None, **budget):
    """`model` with GroupLasso, fitted `epochs` with a FlopsBudget(0.5)
    cut; returns it, the callback and the outputs around each cut."""
    model = tf_prunetrain.add_group_lasso(model, 0.01, proximal=True,
                                          scales=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    shape = model.input_shape[1:]
    x = rng.normal(size=(64, *shape)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], 64)
    probe = OutputsAroundCuts(x[:8])
    cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5, **budget),
                                    penalty_ratio=None, round_to=1, verbose=0)
    if steps is None:
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
                  callbacks=[probe, cut])
    else:  # epochs of `steps` steps on an endless stream
        data, _ = data_lib.stream((x, y), 16, steps_per_epoch=steps)
        model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0,
                  callbacks=[probe, cut])
    return model, cut, probe


def test_frozen_layers_keep_their_slices_flags_and_the_function_across_a_cut():
    model = _frozen_front()
    before = _values(model, ["c1", "bn1"])
    model, cut, probe = _fit_cut(model)
    assert [r.changes for r in cut.reconfigurations if r.changes]
    assert model.get_layer("c1").filters < 16  # the frozen layer was cut
    for old, new in probe.pairs:  # the gentle cut removed zeros only
        np.testing.assert_allclose(new, old, atol=1e-5)
    for name in ("c1", "bn1"):
        layer = model.get_layer(name)
        assert layer.trainable is False and not layer.trainable_weights
        for old, new in zip(before[name], layer.weights):
            assert _kept(old, np.array(new)), f"{name}/{new.name}"
    frozen = {id(w) for n in ("c1", "bn1")
              for w in model.get_layer(n).weights}
    assert not frozen & {id(v) for v in model.optimizer._trainable_variables}
    assert model.get_layer("c2").trainable and model.get_layer("bn2").trainable


def test_partial_freezing_trains_only_the_unfrozen_layers_after_a_cut():
    model = _frozen_front()
    model, cut, _ = _fit_cut(model, epochs=3)
    c1, c2 = (np.array(model.get_layer(n).kernel) for n in ("c1", "c2"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    model.fit(x, rng.integers(0, 4, 32), epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.get_layer("c1").kernel, c1)
    assert not np.array_equal(model.get_layer("c2").kernel, c2)
    assert cut.finished is not None


def test_a_model_with_nothing_trainable_is_refused_and_left_whole():
    model = _frozen_front()
    model = tf_prunetrain.add_group_lasso(model, 0.01)
    model.trainable = False
    model.compile(keras.optimizers.SGD(0.01), "mse")
    weights = [np.array(w) for w in model.weights]
    with pytest.raises(ValueError, match="no trainable weights.*Unfreeze"):
        model.fit(np.ones((8, 8, 8, 3)), np.ones((8, 4)), epochs=2, verbose=0,
                  callbacks=[tf_prunetrain.Reconfigure(
                      tf_prunetrain.FlopsBudget(0.5), penalty_ratio=None)])
    assert [tuple(w.shape) for w in model.weights] == \
        [w.shape for w in weights]
    for old, new in zip(weights, model.weights):
        np.testing.assert_array_equal(old, new)


def test_a_loaded_model_is_cut_within_its_first_pass(tmp_path):
    model = _frozen_front(freeze=False)
    model.compile("sgd", "mse")
    model.save(tmp_path / "trained.keras")
    loaded = keras.models.load_model(tmp_path / "trained.keras")
    # A 1-pass fine-tune as 4 epochs of a quarter pass: the cut comes after
    # the first quarter (target_epoch 25 % of fit's epochs).
    model, cut, probe = _fit_cut(loaded, epochs=4, steps=1)
    assert cut.schedule.target_epoch == 1 and cut.finished == 1
    assert probe.pairs
    for old, new in probe.pairs:
        np.testing.assert_allclose(new, old, atol=1e-5)
    model.save(tmp_path / "pruned.keras")
    again = keras.models.load_model(tmp_path / "pruned.keras")
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_a_one_epoch_budget_says_how_to_cut_within_it():
    model = tf_prunetrain.add_group_lasso(_frozen_front(), 0.01)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(np.ones((8, 8, 8, 3)), np.ones((8, 4)), epochs=1,
                  verbose=0, callbacks=[tf_prunetrain.Reconfigure(
                      tf_prunetrain.FlopsBudget(0.5), penalty_ratio=None)])


def test_a_keras_applications_backbone_from_a_weights_file(tmp_path):
    """The Keras transfer-learning flow: a backbone loaded from weights,
    nested in a new model, its head trained with it frozen, then unfrozen
    with BatchNorm kept frozen, fine-tuned and cut."""
    keras.utils.set_random_seed(0)
    original = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    rng = np.random.default_rng(0)
    for layer in original.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    path = str(tmp_path / "backbone.weights.h5")
    original.save_weights(path)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=path)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, L.Dense(3, name="head")(
        L.GlobalAveragePooling2D()(base(inputs))))
    x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    base.trainable = False
    model.compile(keras.optimizers.SGD(0.01), keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    base.trainable = True
    norms = [layer for layer in base.layers
             if isinstance(layer, L.BatchNormalization)]
    for layer in norms:
        layer.trainable = False
    statistics = {layer.name: np.array(layer.moving_mean) for layer in norms}
    model, cut, probe = _fit_cut(model)
    assert cut.reconfigurations and cut.finished == 1
    for old, new in probe.pairs:
        np.testing.assert_allclose(new, old, atol=1e-4)
    backbone = model.layers[1]
    assert backbone.name == base.name
    smaller = 0
    for layer in backbone.layers:
        if isinstance(layer, L.BatchNormalization):
            assert layer.trainable is False
            mean = np.array(layer.moving_mean)
            assert _kept(statistics[layer.name], mean), layer.name
            smaller += mean.size < statistics[layer.name].size
    assert smaller > 10
    flops = tf_prunetrain.cost.forward_flops(model)
    assert flops <= 0.55 * cut.initial_flops
    model.save(tmp_path / "pruned.keras")
    again = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(again.predict(x[:4], verbose=0),
                               model.predict(x[:4], verbose=0), atol=1e-5)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    """README, "Prune a trained model": its example, as printed there."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"),
              encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Prune a trained model"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out.split("\n")
    assert "1 1" in printed
    ratio = float([line for line in printed if line.startswith("0.")][0])
    assert 0.2 < ratio <= 0.25
    assert (tmp_path / "pruned.keras").exists()
