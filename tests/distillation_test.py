"""The model before a cut teaching the model after it (`experimental.Distill`)."""

import keras
import numpy as np
import pytest

import model_zoo
import tf_prunetrain
from recipes import timeline as timeline_lib
from tf_prunetrain.experimental import distillation

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _dense(seed, outputs=3):
    keras.utils.set_random_seed(seed)
    x = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    return keras.Model(x, keras.layers.Dense(outputs, name="out")(h))


@pytest.mark.parametrize("temperature,weight", [(1.0, 1.0), (4.0, 0.5)])
def test_the_loss_with_a_teacher_is_the_formula(temperature, weight):
    student, teacher = _dense(0), _dense(1)
    student.compile(keras.optimizers.SGD(0.0), LOSS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    s, t = student.predict(x, verbose=0), teacher.predict(x, verbose=0)
    ce = -np.log(_softmax(s)[np.arange(6), y]).mean()
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    kl = (p * np.log(p / q)).sum(-1).mean()
    distillation.attach(student, teacher, temperature, weight, True)
    taught = student.train_on_batch(x, y)
    np.testing.assert_allclose(
        taught, ce + weight * temperature ** 2 * kl, rtol=1e-5)
    # Only the train step: evaluate reports the plain loss; detached, the
    # train step does too.
    np.testing.assert_allclose(student.evaluate(x, y, verbose=0), ce,
                               rtol=1e-5)
    distillation.detach(student)
    assert distillation.teacher_of(student) is None
    np.testing.assert_allclose(student.train_on_batch(x, y), ce, rtol=1e-5)


def test_probability_outputs_use_their_logarithms():
    s = np.array([[0.7, 0.2, 0.1]], "float32")
    t = np.array([[0.2, 0.5, 0.3]], "float32")
    from_probabilities = distillation.distillation_loss(s, t, 2.0, False)
    from_logits = distillation.distillation_loss(np.log(s), np.log(t), 2.0)
    np.testing.assert_allclose(float(from_probabilities), float(from_logits),
                               rtol=1e-5)


def _pruned_run(epochs, distill, callbacks=(), model=None, initial_epoch=0,
                reconfigure=None):
    """A ResNet whose gentle cut after epoch 2 fades over epoch 2."""
    if model is None:
        model = tf_prunetrain.add_group_lasso(model_zoo.randomize_batchnorm(
            model_zoo.resnet_basic()), strength=1e-3)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    x = model_zoo.random_input(model, batch_size=32, seed=0)
    y = np.arange(32) % 10
    reconfigure = reconfigure or tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=2, interval=2),
        penalty_ratio=None, round_to=1, verbose=0)
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=False, verbose=0,
              initial_epoch=initial_epoch,
              callbacks=[reconfigure, distill, *callbacks])
    return model, reconfigure


def test_the_teacher_is_the_model_as_the_fade_began():
    timeline = timeline_lib.Timeline()
    distill = tf_prunetrain.experimental.Distill(epochs=1,
                                                 trained_start=False)
    model, cut = _pruned_run(4, distill, [timeline])
    assert [r.epoch for r in cut.reconfigurations] == [2]
    # Taught over the fade (epoch 2) and the epoch after the cut; none
    # before (a fresh model teaches nothing) and none after.
    assert distill.teaching_steps == 4 and distill.teacher is None
    taught = [s for s in timeline.segments if "teacher" in s]
    assert sum(s["steps"] for s in taught) == 4
    assert [s.get("teacher") is None for s in timeline.segments] == [
        True, False, False, True]
    teacher = timeline.architectures[taught[0]["teacher"]]
    # The teacher had the uncut widths.
    assert teacher == timeline.architectures[
        timeline_lib.architecture_key(tf_prunetrain.strip_prunetrain(
            model_zoo.resnet_basic()))]
    assert distillation.teacher_of(model) is None  # detached after fit


def test_resume_mid_distillation_ends_where_the_run_would(tmp_path):
    def parts(folder):
        cut = tf_prunetrain.Reconfigure(
            tf_prunetrain.FlopsBudget(0.5, target_epoch=2, interval=2),
            penalty_ratio=None, round_to=1, verbose=0)
        distill = tf_prunetrain.experimental.Distill(epochs=2)
        return cut, distill, tf_prunetrain.Checkpoint(
            folder, trackers=[cut, distill])

    cut, distill, backup = parts(str(tmp_path / "a"))
    whole, _ = _pruned_run(5, distill, [backup], reconfigure=cut)
    # Stopped after epoch 3: the cut was after 2, the teacher teaches to 4.
    cut, distill, backup = parts(str(tmp_path / "b"))
    _pruned_run(3, distill, [backup], reconfigure=cut)
    assert distill.until == 4
    cut, distill, backup = parts(str(tmp_path / "b"))
    model, epoch = backup.restore()
    assert epoch == 3 and distill.until == 4 and distill.teacher is not None
    resumed, _ = _pruned_run(5, distill, [backup], model=model,
                             initial_epoch=3, reconfigure=cut)
    assert distill.teaching_steps == 6  # epochs 2 (the fade), 3 and 4
    for a, b in zip(whole.weights, resumed.weights):  # bit for bit
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_under_mirrored_strategy_it_matches_one_device():
    def run(strategy):
        with strategy.scope():
            model = tf_prunetrain.add_group_lasso(
                tf_prunetrain.distribute.synchronize_batchnorm(
                    model_zoo.randomize_batchnorm(model_zoo.resnet_basic())),
                strength=1e-3)
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
        distill = tf_prunetrain.experimental.Distill(epochs=1)
        model, _ = _pruned_run(3, distill, model=model)
        return model, distill

    one, one_distill = run(tf_prunetrain.distribute.make_strategy("default"))
    two, two_distill = run(tf_prunetrain.distribute.make_strategy("mirrored"))
    assert two.distribute_strategy.num_replicas_in_sync == 2
    assert one_distill.teaching_steps == two_distill.teaching_steps == 4
    for a, b in zip(one.weights, two.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=a.path)


def test_bad_arguments_and_models_are_refused():
    with pytest.raises(ValueError, match="epochs"):
        tf_prunetrain.experimental.Distill(epochs=0)
    with pytest.raises(ValueError, match="temperature"):
        tf_prunetrain.experimental.Distill(temperature=0)
    with pytest.raises(ValueError, match="from_logits"):
        tf_prunetrain.experimental.Distill(from_logits="yes")
    model = _dense(0)
    model.compile("sgd", "mse")  # says nothing of logits
    with pytest.raises(ValueError, match="from_logits=True"):
        model.fit(np.zeros((4, 5)), np.zeros((4, 3)), verbose=0,
                  callbacks=[tf_prunetrain.experimental.Distill()])


def test_it_must_come_after_reconfigure_in_the_callbacks():
    """It hears of fades and cuts from `Reconfigure`: listed before it,
    the fit is refused before any step, naming both; after it, it works
    (the tests above)."""
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(),
                                          strength=1e-3)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    before = [w.numpy().copy() for w in model.weights]
    distill = tf_prunetrain.experimental.Distill(epochs=1)
    cut = tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
                                    penalty_ratio=None, verbose=0)
    with pytest.raises(ValueError, match="Reconfigure must come before "
                       "Distill"):
        model.fit(model_zoo.random_input(model, batch_size=8),
                  np.arange(8) % 10, epochs=2, verbose=0,
                  callbacks=[distill, cut])
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
