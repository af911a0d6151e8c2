"""Proximal group lasso: the shrink operator, its constraint, and training."""

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain.regularizers import ProximalStep
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _group_norms(w: np.ndarray, axis: int) -> np.ndarray:
    axis %= w.ndim
    others = tuple(i for i in range(w.ndim) if i != axis)
    return np.sqrt(np.sum(np.square(w), axis=others))


# -- the operator ----------------------------------------------------------------
@pytest.mark.parametrize("axes", [(-1,), (-2,), (-2, -1)])
def test_shrink_matches_group_soft_thresholding(axes):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 5, 6)).astype("float32")
    w[..., 2] *= 1e-3  # a group below the threshold
    threshold = 0.5
    reg = tf_prunetrain.GroupLasso(1.0, axes, proximal=True)
    expected = w.astype("float64")
    for axis in axes:
        norms = _group_norms(expected, axis)
        scale = np.maximum(0.0, 1.0 - threshold / norms)
        shape = [1] * w.ndim
        shape[axis % w.ndim] = -1
        expected = expected * scale.reshape(shape)
    got = reg.shrink(w, threshold).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    if -1 in axes:
        assert np.all(got[..., 2] == 0.0)  # exactly zero, not small


def test_shrink_keeps_half_precision_dtype_and_zero_groups():
    w = np.zeros((2, 4), "float16")
    w[:, 0] = 3.0
    out = tf_prunetrain.GroupLasso(1.0, (-1,), proximal=True).shrink(w, 0.1)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.all(np.isfinite(out.numpy()))
    np.testing.assert_allclose(np.linalg.norm(out.numpy()[:, 0].astype("f4")),
                               np.sqrt(18) - 0.1, rtol=1e-3)
    assert np.all(out.numpy()[:, 1:] == 0)


def test_proximal_regularizer_adds_no_loss_and_round_trips():
    w = np.ones((3, 4), "float32")
    reg = tf_prunetrain.GroupLasso(0.5, (-1,), proximal=True)
    assert float(reg(w)) == 0.0
    assert float(reg.penalty(w)) > 0  # still measurable (logs, calibration)
    copy = tf_prunetrain.GroupLasso.from_config(reg.get_config())
    assert copy.proximal and copy.strength == 0.5
    assert "proximal=True" in repr(reg)
    assert not tf_prunetrain.GroupLasso(0.5).proximal
    with pytest.raises(TypeError, match="proximal"):
        tf_prunetrain.GroupLasso(0.5, proximal="yes")


# -- attaching -------------------------------------------------------------------
def _small(proximal=True, strength=1.0):
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(),
                                          strength=strength, proximal=proximal)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    return model


def test_attach_binds_every_proximal_kernel_once():
    model = _small()
    regularized = [v for v in model.trainable_variables
                   if isinstance(v.regularizer, tf_prunetrain.GroupLasso)]
    assert tf_prunetrain.regularizers.attach_proximal_step(model) == len(regularized) > 0
    first = [v.constraint for v in regularized]
    assert all(isinstance(c, ProximalStep) and c.model is model for c in first)
    assert tf_prunetrain.regularizers.attach_proximal_step(model) == len(regularized)
    assert [v.constraint for v in regularized] == first  # idempotent
    assert tf_prunetrain.regularizers.attach_proximal_step(_small(proximal=False)) == 0


def test_attach_refuses_a_kernel_with_its_own_constraint():
    model = _small()
    victim = next(v for v in model.trainable_variables
                  if isinstance(v.regularizer, tf_prunetrain.GroupLasso))
    victim.constraint = keras.constraints.MaxNorm(2.0)
    with pytest.raises(ValueError, match=victim.path):
        tf_prunetrain.regularizers.attach_proximal_step(model)
    assert isinstance(victim.constraint, keras.constraints.MaxNorm)
    assert all(v.constraint is None for v in model.trainable_variables
               if v is not victim)  # nothing attached


def test_attach_refuses_gradient_accumulation():
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1.0,
                                          proximal=True)
    model.compile(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
                  LOSS)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        tf_prunetrain.regularizers.attach_proximal_step(model)
    assert all(v.constraint is None for v in model.trainable_variables)


# -- training --------------------------------------------------------------------
def _one_step_delta(model, x, y):
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_on_batch(x, y)
    return before


def test_step_is_gradient_step_then_exact_group_shrink():
    """One SGD step (no momentum) equals the plain step followed by
    `shrink(·, lr·λ)`; the learning rate is read at each trace."""
    build = lambda: model_zoo.resnet_basic(seed=3)  # noqa: E731
    x, y = model_zoo.random_input(build(), 8), np.arange(8) % 10
    for rate in (0.05, 0.0):
        plain = tf_prunetrain.add_group_lasso(build(), 0.7, proximal=False)
        plain.compile(keras.optimizers.SGD(rate), LOSS)
        for v in plain.trainable_variables:  # same gradients: no loss term
            if isinstance(v.regularizer, tf_prunetrain.GroupLasso):
                v.regularizer.strength = 0.0
        prox = tf_prunetrain.add_group_lasso(build(), 0.7, proximal=True)
        prox.compile(keras.optimizers.SGD(rate), LOSS)
        tf_prunetrain.regularizers.attach_proximal_step(prox)
        before = [v.numpy().copy() for v in prox.trainable_variables]
        plain.train_on_batch(x, y)
        prox.train_on_batch(x, y)
        for vp, vq, w0 in zip(plain.trainable_variables,
                              prox.trainable_variables, before):
            expected = vp.numpy()
            if isinstance(vq.regularizer, tf_prunetrain.GroupLasso):
                expected = vq.regularizer.shrink(expected, rate * 0.7).numpy()
            np.testing.assert_allclose(vq.numpy(), expected, rtol=1e-5,
                                       atol=1e-6, err_msg=vq.path)
            if rate == 0.0:
                np.testing.assert_array_equal(vq.numpy(), w0)


def _mnist_like(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.normal(size=(n, 12, 12, 1)).astype("float32") * 0.3
    x[np.arange(n), y, y, 0] += 3.0  # learnable: a bright pixel per class
    return x, y


def test_proximal_mode_kills_channels_at_a_high_learning_rate():
    """Same λ and schedule: the sub-gradient penalty leaves every group above
    the threshold, the proximal step zeroes groups exactly and `Reconfigure`
    removes them inside the same fit without changing the outputs."""
    x, y = _mnist_like()
    results = {}
    for proximal in (False, True):
        keras.utils.set_random_seed(0)
        model = tf_prunetrain.add_group_lasso(
            resnet_cifar(8, input_shape=(12, 12, 1), widths=(8, 16, 16),
                         seed=0),
            strength=0.3, proximal=proximal)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS)
        cb = tf_prunetrain.Reconfigure(
            tf_prunetrain.DeadChannels(interval=100), penalty_ratio=None,
            round_to=1, verbose=0)
        model.fit(x, y, batch_size=32, epochs=12, verbose=0, callbacks=[cb])
        assert not cb.reconfigurations  # no cut was due in the run
        before = model.predict(x[:16], verbose=0)
        done = cb.reconfigure(12, pt.dead_channel_plan(cb))
        after = model.predict(x[:16], verbose=0)
        assert pt.relative_error(before, after) < 1e-5
        results[proximal] = (done, model)
    sub, _ = results[False]
    prox, model = results[True]
    assert not sub.changes
    assert prox.changes and prox.params_after < prox.params_before
    # The rebuilt, narrower kernels keep their proximal step.
    for v in model.trainable_variables:
        if isinstance(v.regularizer, tf_prunetrain.GroupLasso):
            assert isinstance(v.constraint, ProximalStep)
            assert v.constraint.model is model
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # trains on


def test_reconfigure_in_fit_with_proximal_and_calibration():
    x, y = _mnist_like()
    keras.utils.set_random_seed(1)
    model = tf_prunetrain.add_group_lasso(
        resnet_cifar(8, input_shape=(12, 12, 1), widths=(8, 16, 16), seed=1),
        proximal=True)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS,
                  metrics=["accuracy"])
    cb = tf_prunetrain.Reconfigure(tf_prunetrain.DeadChannels(interval=2),
                                   penalty_ratio=0.99, round_to=1, verbose=0)
    log = tf_prunetrain.RunLog()
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0,
                        callbacks=[cb, log])
    assert cb.strength > 0, cb.strength
    assert any(r.changes for r in cb.reconfigurations), cb.strength
    assert 0 < log.train_flops_saved < 1
    # The re-trace after a change is timed (the step after it is slower).
    mid = [t for t in log.cut_timings
           if t.epoch != cb.reconfigurations[-1].epoch]
    assert mid and all(t.retrace_seconds > 0 for t in mid)
    # A cut that changed nothing re-traces nothing: the RunLog does not
    # time it (no record of its own: a "no_change" event).
    assert [t.epoch for t in log.cut_timings] == [
        r.epoch for r in cb.reconfigurations if r.changes]
    # Logged loss has no penalty term in proximal mode: it is the data loss.
    assert history.history["prunetrain_penalty"][-1] > 0
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("jit", [False, True])
def test_proximal_step_under_mixed_precision_and_jit(jit):
    """The step reads the learning rate through LossScaleOptimizer and works
    in XLA-compiled train steps; float32 master kernels get exact zeros."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(),
                                              strength=5.0, proximal=True)
        model.compile(keras.optimizers.SGD(0.1), LOSS, jit_compile=jit)
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    tf_prunetrain.regularizers.attach_proximal_step(model)
    x, y = model_zoo.random_input(model, 16), np.arange(16) % 10
    for _ in range(3):
        model.train_on_batch(x, y)
    kernels = [v for v in model.trainable_variables
               if isinstance(v.regularizer, tf_prunetrain.GroupLasso)]
    assert all(np.isfinite(v.numpy()).all() for v in kernels)
    dead = sum(int(np.sum(_group_norms(v.numpy(), -1) == 0.0))
               for v in kernels)
    assert dead > 0
