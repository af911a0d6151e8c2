"""Gentle cuts: `fading.Fade` and `FlopsBudget(gentle=True)` in `fit`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import budget
from tf_prunetrain import fading
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _plan(model, fraction=0.5):
    graph = tf_prunetrain.channel_groups(model)
    return budget.plan_to_flops(
        graph, fraction * tf_prunetrain.cost.forward_flops(model),
        ranking=budget.NormPerFlop())


def test_fade_shrinks_exactly_the_doomed_slices_linearly_to_zero():
    model = pt.two_convs(16, 16)
    plan = _plan(model)
    doomed = ~plan.mask(plan.graph.layer_outputs()["c1"])
    assert 0 < doomed.sum() < 16
    c1, c2 = model.get_layer("c1").kernel, model.get_layer("c2").kernel
    before1, before2 = c1.numpy(), c2.numpy()
    fade = fading.Fade(plan, steps=4)
    fade.step()  # a quarter gone, on both coupled sides
    np.testing.assert_allclose(c1.numpy()[..., doomed],
                               0.75 * before1[..., doomed], rtol=1e-6)
    np.testing.assert_allclose(c2.numpy()[:, :, doomed],
                               0.75 * before2[:, :, doomed], rtol=1e-6)
    np.testing.assert_array_equal(c1.numpy()[..., ~doomed],
                                  before1[..., ~doomed])
    fade.step()  # half
    np.testing.assert_allclose(c1.numpy()[..., doomed],
                               0.5 * before1[..., doomed], rtol=1e-6)
    fade.step(), fade.step(), fade.step()  # a fifth step does nothing
    assert fade.left == 0
    assert not c1.numpy()[..., doomed].any()
    assert not c2.numpy()[:, :, doomed].any()
    np.testing.assert_array_equal(c2.numpy()[:, :, ~doomed],
                                  before2[:, :, ~doomed])
    # The cut of the faded channels leaves the model's function.
    x = np.random.default_rng(0).random((4, 8, 8, 3), np.float32)
    small = tf_prunetrain.surgery.rebuild(_plan(model))
    np.testing.assert_allclose(small(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="Fade: steps must be >= 1"):
        fading.Fade(plan, steps=0)


def _fit(gentle, strategy=None, ranking=None, epochs=4, data=None,
         steps_per_execution=1):
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf_prunetrain.add_group_lasso(resnet_cifar(
            8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0),
            strength=0.05, proximal=True, scales=True)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS,
                      steps_per_execution=steps_per_execution)
    rng = np.random.default_rng(0)
    x = rng.random((128, 12, 12, 1), np.float32)
    y = np.arange(128) % 10
    outputs = pt.OutputsAroundCuts(x[:16])
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.4, target_epoch=2, interval=1,
                                  ranking=ranking, gentle=gentle),
        penalty_ratio=None, round_to=1, verbose=0)
    model.fit(data if data is not None else x, None if data is not None
              else y, epochs=epochs, batch_size=32, verbose=0, shuffle=False,
              callbacks=[outputs, callback])
    return model, callback, outputs


@pytest.mark.parametrize("ranking", [None, budget.ThinWidths()])
def test_gentle_cuts_remove_zeros_and_keep_the_function(ranking):
    model, callback, outputs = _fit(True, ranking=ranking)
    cuts = [r for r in callback.reconfigurations if r.changes]
    assert len(cuts) == 2 and callback.finished == 2
    for cut in cuts:
        assert cut.removed_norm == pytest.approx(0.0, abs=1e-6)
    assert len(outputs.pairs) == 2
    for before, after in outputs.pairs:
        np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)
    # The same run cutting at once removes live channels: outputs move.
    _, abrupt, abrupt_outputs = _fit(False, ranking=ranking)
    assert all(r.removed_norm > 0.05 for r in abrupt.reconfigurations
               if r.changes)
    assert max(np.abs(a - b).max() for b, a in abrupt_outputs.pairs) > 1e-2
    # Both end at the same FLOPs.
    assert [r.flops_after for r in cuts][-1] == pytest.approx(
        [r.flops_after for r in abrupt.reconfigurations
         if r.changes][-1], rel=0.05)


def test_gentle_cut_with_several_steps_per_execution_removes_zeros():
    # 4 steps an epoch in 2 callbacks of 2 steps: the fade still ends at 0.
    _, callback, outputs = _fit(True, steps_per_execution=2)
    cuts = [r for r in callback.reconfigurations if r.changes]
    assert len(cuts) == 2
    assert all(r.removed_norm == pytest.approx(0.0, abs=1e-6) for r in cuts)
    for before, after in outputs.pairs:
        np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)


def test_gentle_cut_under_mirrored_strategy_keeps_replicas_equal():
    strategy = tf_prunetrain.distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    model, callback, outputs = _fit(True, strategy=strategy)
    assert all(r.removed_norm == pytest.approx(0.0, abs=1e-6)
               for r in callback.reconfigurations if r.changes)
    for variable in model.trainable_weights:  # each replica's copy
        copies = [np.asarray(v) for v in variable.value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1],
                                      err_msg=variable.path)
    for before, after in outputs.pairs:
        np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)


def test_gentle_needs_steps_per_epoch_and_a_bool():
    rng = np.random.default_rng(0)
    unsized = tf.data.Dataset.from_tensor_slices(
        (rng.random((64, 12, 12, 1), np.float32), np.arange(64) % 10)
    ).filter(lambda x, y: True).batch(32)
    with pytest.raises(ValueError, match="needs the number of steps per "
                       "epoch: pass steps_per_epoch"):
        _fit(True, data=unsized)
    with pytest.raises(TypeError, match="FlopsBudget: gentle must be True "
                       "or False"):
        tf_prunetrain.FlopsBudget(0.5, gentle="yes")
    schedule = tf_prunetrain.FlopsBudget(0.5, gentle=True)
    config = json.loads(json.dumps(schedule.get_config()))
    assert tf_prunetrain.FlopsBudget.from_config(config).gentle is True


def test_removed_norm_is_relative_to_what_each_layer_keeps():
    model = pt.two_convs(16, 16)
    for name, scale in (("c1", 1.0), ("c2", 100.0)):  # layers' scales differ
        layer = model.get_layer(name)
        layer.kernel.assign(np.full(layer.kernel.shape, scale, "float32"))
    model.get_layer("fc").kernel.assign(np.ones((16, 10), "float32"))
    plan = _plan(model)  # live channels as strong as the kept ones
    assert plan.changes()
    assert tf_prunetrain.planning.removed_norm(plan) == pytest.approx(1.0)
    tf_prunetrain.coupling.zero_channels(model, {"c1": list(range(12))})
    dead = _plan(model, 0.6)  # only zeros go
    assert dead.changes()
    assert tf_prunetrain.planning.removed_norm(dead) == 0.0
    assert tf_prunetrain.planning.removed_norm(
        tf_prunetrain.planning.Plan.keep_all(dead.graph)) is None


def _faded(in_step, frozen=()):
    """Four steps of a fade over four steps from the first (its plan made
    before `fit`), in the train step or after it: the weights, the fade,
    and the kernels' constraints after it closed."""
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(
        resnet_cifar(8, input_shape=(8, 8, 1), widths=(8, 16, 16), seed=0),
        strength=0.02, proximal=True, scales=True)
    for name in frozen:
        model.get_layer(name).trainable = False
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    tf_prunetrain.regularizers.attach_proximal_step(model)
    plan = _plan(model)

    class Fader(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # before the first trace
            self.fade = fading.Fade(plan, steps=4, in_step=in_step)

        def on_train_batch_end(self, batch, logs=None):
            self.fade.step()

        def on_train_end(self, logs=None):
            self.fade.close()

    fader = Fader()
    x = np.random.default_rng(1).random((64, 8, 8, 1)).astype("float32")
    model.fit(x, np.arange(64) % 10, batch_size=16, shuffle=False,
              verbose=0, callbacks=[fader])
    return ([w.numpy() for w in model.weights], fader.fade, plan,
            [type(w.constraint).__name__ for w in model.trainable_weights])


@pytest.mark.parametrize("frozen", [(), ("stage2_block1_conv1",)])
def test_a_fade_in_the_train_step_trains_as_the_fade_after_it(frozen):
    """Folded into the train step (a constraint the optimizer applies), the
    fade multiplies by the same float32 factors as its own graph after the
    step: the weights agree to float32 rounding (the step's graph may order
    the multiplies otherwise), and the doomed slices are exactly zero.
    A frozen layer's targets are not updated by the optimizer: they keep
    the fade's own graph."""
    inside, fade, plan, constraints = _faded(True, frozen)
    after, own, _, own_constraints = _faded(False, frozen)
    for a, b in zip(inside, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert own.traced and fade.traced == bool(frozen)
    # Closed: the kernels have their proximal steps back, nothing else.
    assert constraints == own_constraints
    assert "Faded" not in constraints and "ProximalStep" in constraints
    faded = 0
    for name, ids in plan.graph.layer_outputs().items():
        layer = plan.graph.model.get_layer(name)
        doomed = ~plan.mask(ids)
        if isinstance(layer, keras.layers.Conv2D) and doomed.any():
            assert not layer.kernel.numpy()[..., doomed].any(), name
            assert layer.kernel.numpy()[..., ~doomed].any(), name
            faded += 1
    assert faded
