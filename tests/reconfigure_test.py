"""In-place reconfiguration and the Reconfigure callback."""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain

TOL = 1e-5
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compiled(build, optimizer=None, strength=1e-3, **compile_kwargs):
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(build()), strength)
    model.compile(optimizer or keras.optimizers.SGD(0.01, momentum=0.9),
                  LOSS, **compile_kwargs)
    return model


def _batch(model, n=16, seed=0):
    x = model_zoo.random_input(model, batch_size=n, seed=seed)
    return x, np.arange(n) % 10


def _in_place(model, **kwargs):
    plan = tf_prunetrain.planning.plan_pruning(
        tf_prunetrain.channel_groups(model), remove_blocks=False, **kwargs)
    tf_prunetrain.inplace.reconfigure_in_place(model, plan)
    return plan


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenetv2_like",
                                  "densenet_like", "nested_model",
                                  "squeeze_excite", "plain_cnn"])
def test_in_place_keeps_objects_and_function(name):
    model = _compiled(model_zoo.ALL_BUILDERS[name])
    x, y = _batch(model)
    model.train_on_batch(x, y)
    pt.zero_random_groups(model, 0.5, seed=1)
    layers = list(model.layers)
    before, params = model.predict(x, verbose=0), model.count_params()
    _in_place(model)
    assert all(a is b for a, b in zip(layers, model.layers))
    assert model.count_params() < params
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL
    model.train_on_batch(x, y)  # training goes on with the new shapes
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def _twins(build, optimizer_fn):
    """Two models with equal weights and equal optimizer state."""
    a = _compiled(build, optimizer_fn())
    x, y = _batch(a)
    a.train_on_batch(x, y)
    a.train_on_batch(x, y)
    b = _compiled(build, optimizer_fn())
    b.set_weights(a.get_weights())
    b.optimizer.build(b.trainable_variables)
    for source, target in zip(a.optimizer.variables, b.optimizer.variables):
        target.assign(source)
    return a, b, x, y


@pytest.mark.parametrize("optimizer_fn", [
    lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    lambda: keras.optimizers.Adam(1e-3),
    lambda: keras.optimizers.AdamW(1e-3, weight_decay=1e-2),
    lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5),
], ids=["sgd", "adam", "adamw", "rmsprop"])
def test_optimizer_state_is_carried_and_next_step_matches(optimizer_fn):
    dense, pruned, x, y = _twins(model_zoo.resnet_basic, optimizer_fn)
    pt.zero_random_groups(dense, 0.5, seed=2)
    pt.zero_random_groups(pruned, 0.5, seed=2)
    plan = _in_place(pruned)
    assert int(pruned.optimizer.iterations) == int(dense.optimizer.iterations)
    # The plan indexes the pruned model's (same, resized) layer objects.
    for (v_new, s_new), (v_old, s_old) in zip(_slots(pruned), _slots(dense)):
        layer = pruned.get_layer(v_old.path.split("/")[-2])
        expected = tf_prunetrain.slicing.slice_weight(
            plan, layer, v_old.name, s_old.numpy())
        np.testing.assert_array_equal(s_new.numpy(), expected)
    dense.train_on_batch(x, y)
    pruned.train_on_batch(x, y)
    for layer in dense.layers:
        same = pruned.get_layer(layer.name)
        for w_old, w_new in zip(layer.weights, same.weights):
            expected = tf_prunetrain.slicing.slice_weight(
                plan, same, w_old.name, w_old.numpy())
            np.testing.assert_allclose(w_new.numpy(), expected, rtol=1e-4,
                                       atol=1e-6, err_msg=w_old.path)


def _slots(model):
    """(model variable, slot variable) for every per-variable slot."""
    opt = model.optimizer
    index = {id(v): i for i, v in enumerate(opt._trainable_variables)}
    pairs = []
    for name, slots in vars(opt).items():
        if name.endswith(("momentums", "velocities", "_average_gradients")) \
                and isinstance(slots, list) and len(slots) == len(index):
            pairs += [(v, slots[i]) for v, i in
                      zip(opt._trainable_variables, index.values())]
    assert pairs, "the optimizer has no slot to compare"
    return pairs


def test_callback_calibrates_lambda_from_the_penalty_ratio():
    model = _compiled(model_zoo.resnet_basic, strength=0.0)
    x, y = _batch(model, 32)
    # The first step's loss: training mode, λ = 0, the same single batch.
    loss0 = float(LOSS(y, model(x, training=True)))
    regs = [(v, v.regularizer) for v in model.trainable_variables
            if isinstance(v.regularizer, tf_prunetrain.GroupLasso)]
    penalty0 = sum(float(r.penalty(v)) for v, r in regs)
    cb = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=100), penalty_ratio=0.25,
        verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    # λ·GL / (L + λ·GL) = r at the start; GL is read after the first step.
    assert cb.strength == pytest.approx(0.25 * loss0 / (0.75 * penalty0),
                                        rel=0.02)
    assert {r.strength for _, r in regs} == {cb.strength}
    # Marked calibrated (saved with the model: a later fit keeps this λ).
    assert all(r.calibrated for _, r in regs)
    assert not cb.reconfigurations  # not due before epoch 100


def test_user_strength_is_kept_with_penalty_ratio_none():
    model = _compiled(model_zoo.plain_cnn, strength=3e-3)
    x, y = _batch(model, 32)
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.strength == pytest.approx(3e-3)
    assert not any(reg.calibrated for _, reg in
                   tf_prunetrain.regularizers.lasso_variables(model))


def test_fit_shrinks_the_model_and_other_callbacks_keep_working(tmp_path):
    model = _compiled(model_zoo.resnet_basic)
    x, y = _batch(model, 32)
    xv, yv = _batch(model, 16, seed=1)
    pt.zero_random_groups(model, 0.4, seed=3)

    class Kill(keras.callbacks.Callback):  # more channels die mid-run
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                pt.zero_random_groups(self.model, 0.3, seed=4)

    log = os.path.join(tmp_path, "log.csv")
    ckpt = os.path.join(tmp_path, "ckpt_{epoch}.keras")
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, round_to=1, verbose=0)
    history = model.fit(
        x, y, validation_data=(xv, yv), epochs=4, batch_size=16, verbose=0,
        callbacks=[
            Kill(), cb, tf_prunetrain.RunLog(), keras.callbacks.CSVLogger(log),
            keras.callbacks.ModelCheckpoint(ckpt),
            keras.callbacks.TensorBoard(os.path.join(tmp_path, "tb")),
            keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.5),
            keras.callbacks.LearningRateScheduler(lambda e, lr: lr),
            keras.callbacks.EarlyStopping(patience=10),
        ])
    params = history.history["prunetrain_params"]
    assert params[0] < 44930 and params[-1] < params[0]
    flops = history.history["prunetrain_flops"]
    assert flops[-1] < flops[0] < 3388042  # resnet_basic's dense count
    assert flops[-1] == tf_prunetrain.cost.forward_flops(model)
    # Zeroed at the start and at epoch 2: both reconfigurations shrink.
    assert [r.params_after < r.params_before
            for r in cb.reconfigurations[:2]] == [True, True]
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["prunetrain_params"])) for r in rows] == params
    assert "prunetrain_lambda" in rows[0]
    last = keras.models.load_model(os.path.join(tmp_path, "ckpt_4.keras"))
    assert last.count_params() == model.count_params()
    assert pt.relative_error(model.predict(x, verbose=0),
                             last.predict(x, verbose=0)) < TOL
    assert os.listdir(os.path.join(tmp_path, "tb"))


def test_penalty_epochs_ends_the_lasso_and_the_reconfigurations():
    model = _compiled(model_zoo.resnet_basic, strength=3e-3)
    x, y = _batch(model, 32)
    pt.zero_random_groups(model, 0.3, seed=1)
    cb = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=10, penalty_epochs=2),
        penalty_ratio=None, round_to=1, verbose=0)
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0,
                        callbacks=[cb])
    # Forced at the end of the penalty phase (not an interval multiple), and
    # never again; λ is 0 from there on.
    assert [r.epoch for r in cb.reconfigurations] == [2]
    assert cb.finished == 2
    assert cb.reconfigurations[0].params_after < \
        cb.reconfigurations[0].params_before
    assert history.history["prunetrain_lambda"] == pytest.approx(
        [3e-3, 0.0, 0.0, 0.0, 0.0])
    assert all(float(v.regularizer(v)) == 0.0
               for v in model.trainable_variables
               if isinstance(v.regularizer, tf_prunetrain.GroupLasso))


def test_after_fit_save_load_export_and_summary_show_the_pruned_model(tmp_path):
    model = _compiled(model_zoo.mobilenetv2_like)
    x, y = _batch(model)
    pt.zero_random_groups(model, 0.5, seed=5)
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, round_to=1, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    assert cb.reconfigurations[0].changes  # the summary shows a cut model
    expected = model.predict(x, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == model.count_params()
    assert pt.relative_error(expected, loaded.predict(x, verbose=0)) < TOL
    model.export(os.path.join(tmp_path, "saved"), verbose=False)
    served = tf.saved_model.load(os.path.join(tmp_path, "saved"))
    assert pt.relative_error(expected, served.serve(x).numpy()) < TOL
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert f"{layer.filters})" in text
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert f"Trainable params: {trainable:,}" in text


@pytest.mark.parametrize("jit", [False, True])
def test_mixed_precision_and_jit(jit):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _compiled(model_zoo.resnet_basic, jit_compile=jit)
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = _batch(model)
    model.fit(x, y, epochs=1, verbose=0)
    pt.zero_random_groups(model, 0.5, seed=6)
    before = model.predict(x, verbose=0)
    scale = float(model.optimizer.dynamic_scale)
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=1),
                                   penalty_ratio=None, round_to=1, verbose=0)
    cb.set_model(model)
    done = cb.reconfigure(0, _dead_plan(model))
    assert done.changes and done.params_after < done.params_before
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(model.optimizer.dynamic_scale) == scale
    assert pt.relative_error(before, model.predict(x, verbose=0)) < 1e-2
    model.fit(x, y, epochs=1, verbose=0)


def test_failed_reconfiguration_leaves_the_model_untouched(monkeypatch):
    model = _compiled(model_zoo.resnet_basic)
    x, y = _batch(model)
    model.train_on_batch(x, y)
    pt.zero_random_groups(model, 0.5, seed=7)
    optimizer = model.optimizer
    shapes = [tuple(w.shape) for w in model.weights]
    before = model.predict(x, verbose=0)
    victim = model.get_layer("stage3_block1_conv2")

    def broken_build(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(victim, "build", broken_build)
    with pytest.raises(RuntimeError, match="rolled back.*simulated"):
        _in_place(model)
    monkeypatch.undo()
    assert [tuple(w.shape) for w in model.weights] == shapes
    assert model.optimizer is optimizer
    assert pt.relative_error(before, model.predict(x, verbose=0)) == 0.0
    model.train_on_batch(x, y)  # still trains


def test_bad_arguments_and_models():
    for kwargs in ({"interval": 0}, {"threshold": -1.0},
                   {"penalty_epochs": 0}, {"penalty_epochs": 2.5}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"DeadChannels: {name}"):
            tf_prunetrain.DeadChannels(**kwargs)
    for kwargs in ({"penalty_ratio": 1.0}, {"penalty_ratio": 0.0},
                   {"round_to": 0}, {"min_channels": 0}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"Reconfigure: {name}"):
            tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(), **kwargs)
    plain = model_zoo.plain_cnn()
    plain.compile("sgd", LOSS)
    x, y = _batch(plain)
    with pytest.raises(ValueError, match="add_group_lasso"):
        plain.fit(x, y, verbose=0, callbacks=[
            tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels())])


# -- DeadChannels' decisions, without fit ------------------------------------
def _dead_plan(model, threshold=1e-4, round_to=1):
    """The plan that cuts `model`'s dead channels now."""
    return tf_prunetrain.planning.plan_pruning(
        tf_prunetrain.channel_groups(model), threshold, round_to=round_to)


def _kept(plan, model, name):
    """Indices of the output channels of layer `name` that `plan` keeps."""
    layer = model.get_layer(name)
    rank = len(layer.kernel.shape)
    kept, = [idx for axis, idx in
             tf_prunetrain.slicing.weight_slices(plan, layer)["kernel"]
             if axis % rank == rank - 1]  # the kernel's output axis
    return kept.tolist()


def test_dead_channels_is_due_every_interval_for_the_whole_run():
    schedule = tf_prunetrain.DeadChannels(interval=3)
    context = pt.schedule_context(pt.two_convs(8, 6, "relu"))
    decisions = {e: schedule.decide(e, context) for e in range(1, 11)}
    assert [e for e, d in decisions.items() if d is not None] == [3, 6, 9]
    # Never the last: without penalty_epochs the lasso acts to the end.
    assert not any(d.last for d in decisions.values() if d is not None)
    assert all(isinstance(d.plan, tf_prunetrain.planning.Plan)
               for d in decisions.values() if d is not None)
    assert tf_prunetrain.DeadChannels().interval == 10  # the paper's


def test_dead_channels_ends_at_penalty_epochs():
    schedule = tf_prunetrain.DeadChannels(interval=3, penalty_epochs=7)
    context = pt.schedule_context(pt.two_convs(8, 6, "relu"))
    decisions = {e: schedule.decide(e, context) for e in range(1, 13)}
    # Every interval up to penalty_epochs, and at it (not a multiple).
    assert [e for e, d in decisions.items() if d is not None] == [3, 6, 7]
    assert [decisions[e].last for e in (3, 6, 7)] == [False, False, True]
    assert schedule.cut_epochs(12) == [3, 6, 7]
    # penalty_epochs on an interval multiple: the cut there is the last.
    aligned = tf_prunetrain.DeadChannels(interval=2, penalty_epochs=4)
    assert [(e, d.last) for e in range(1, 9)
            if (d := aligned.decide(e, context)) is not None] == [
                (2, False), (4, True)]


def test_dead_channels_plans_exactly_the_zeroed_channels():
    model = pt.two_convs(8, 6, "relu")
    assert tf_prunetrain.coupling.zero_channels(
        model, {"c1": [1, 4], "c2": [0, 3, 5]}) == 5
    decision = tf_prunetrain.DeadChannels(interval=1).decide(
        1, pt.schedule_context(model))
    assert decision is not None and not decision.last
    plan = decision.plan
    assert plan.changes() == [("c1", 8, 6), ("c2", 6, 3), ("gap", 6, 3)]
    assert _kept(plan, model, "c1") == [0, 2, 3, 5, 6, 7]
    assert _kept(plan, model, "c2") == [1, 2, 4]
    # The same plan as planning.plan_pruning's at the schedule's threshold.
    np.testing.assert_array_equal(plan.keep, _dead_plan(model).keep)
    # Applied by Reconfigure: the model loses exactly those channels.
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(),
                                   round_to=1, verbose=0)
    cb.set_model(model)
    x = model_zoo.random_input(model, batch_size=4)
    before = model.predict(x, verbose=0)
    done = cb.reconfigure(1, plan)
    assert done.changes == plan.changes()
    assert (model.get_layer("c1").filters, model.get_layer("c2").filters) \
        == (6, 3)
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL


def test_dead_channels_follows_threshold_and_the_context_widths():
    model = pt.two_convs(8, 6, "relu")
    tf_prunetrain.coupling.zero_channels(model, {"c1": [1, 4],
                                                 "c2": [0, 3, 5]})
    c1 = model.get_layer("c1")
    weak = c1.kernel.numpy()
    weak[..., 2] = 1e-3  # small, but above the default threshold
    c1.kernel.assign(weak)
    # The consumer's input slice of channel 2 is weak as well (its dead
    # outputs stay zero).
    c2 = model.get_layer("c2")
    kernel = c2.kernel.numpy()
    kernel[:, :, 2, :] = np.where(kernel[:, :, 2, :] != 0, 1e-3, 0.0)
    c2.kernel.assign(kernel)
    default = tf_prunetrain.DeadChannels(interval=1)
    assert _kept(default.decide(1, pt.schedule_context(model)).plan, model, "c1") == \
        [0, 2, 3, 5, 6, 7]
    loose = tf_prunetrain.DeadChannels(interval=1, threshold=1e-2)
    assert _kept(loose.decide(1, pt.schedule_context(model)).plan, model, "c1") == \
        [0, 3, 5, 6, 7]
    # round_to=2 from the context: c2's 3 live channels round up to 4 (its
    # strongest dead one comes back); c1's 6 already are a multiple of 2.
    rounded = default.decide(1, pt.schedule_context(model, round_to=2)).plan
    assert rounded.changes() == [("c1", 8, 6), ("c2", 6, 4), ("gap", 6, 4)]
    # min_channels from the context: every channel dead, 2 kept.
    tf_prunetrain.coupling.zero_channels(model, {"c2": [1, 2, 4]})
    least = default.decide(1, pt.schedule_context(model, min_channels=2)).plan
    assert dict((p, a) for p, _, a in least.changes())["c2"] == 2
