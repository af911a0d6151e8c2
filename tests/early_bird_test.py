"""`experimental.EarlyBird`: one cut when the channel mask stops moving."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain.models import resnet_cifar
from tf_prunetrain.experimental import EarlyBird

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _decisions(schedule, model, epochs, between=None):
    """`schedule`'s decision after each epoch (`between(epoch)` changes the
    weights after it), with a fresh context each time, as in `fit`."""
    schedule.start(pt.schedule_context(model, epochs=8))
    out = []
    for epoch in range(1, epochs + 1):
        out.append(schedule.decide(epoch, pt.schedule_context(model, 8)))
        if between is not None:
            between(epoch)
    return out


def _shuffle_c1(model):
    """Makes the other half of c1's channels the weakest each epoch."""
    layer = model.get_layer("c1")

    def shuffle(epoch):
        norms = np.ones(16, np.float32)
        norms[8 * (epoch % 2):8 * (epoch % 2) + 8] = 0.01
        kernel = np.ones(layer.kernel.shape, np.float32) * norms
        layer.kernel.assign(kernel)
    return shuffle


def test_draws_once_the_mask_is_settled_for_window_epochs():
    model = pt.two_convs(16, 16)
    decisions = _decisions(EarlyBird(0.5, window=2, gentle=False), model, 4)
    # Weights do not move: distances 0 after epochs 2 and 3; drawn after 3.
    assert decisions[:2] == [None, None]
    assert decisions[2] is not None and decisions[2].last
    assert decisions[2].plan.changes()
    flops = tf_prunetrain.budget.estimate_flops(decisions[2].plan.graph,
                                                decisions[2].plan.keep)
    assert flops == pytest.approx(0.5 * pt.forward_flops(model), rel=0.15)


def test_a_moving_mask_waits_for_the_deadline():
    model = pt.two_convs(16, 16)
    schedule = EarlyBird(0.5, window=1, gentle=False)  # deadline: 8 // 2
    decisions = _decisions(schedule, model, 4, between=_shuffle_c1(model))
    assert decisions[:3] == [None, None, None]
    assert decisions[3] is not None and decisions[3].last
    assert schedule.deadline == 4
    assert len(schedule.distances) == 3
    assert min(schedule.distances) > schedule.distance


def test_gentle_decides_as_abrupt_does_one_epoch_later():
    """Gentle, it is asked as each epoch begins (Reconfigure): not before
    the first has trained, and then it decides what abrupt decided at the
    end of the epoch before — its cut follows one epoch of fading."""
    def run(gentle):
        model = pt.two_convs(16, 16)
        out = _decisions(EarlyBird(0.5, window=1, deadline=6, gentle=gentle),
                         model, 4)
        return [None if d is None else d.plan.keep.tolist() for d in out]

    abrupt, gentle = run(False), run(True)
    assert abrupt[0] is None and abrupt[1] is not None  # settled after 2
    assert gentle[:2] == [None, None] and gentle[2] == abrupt[1]


def test_distance_is_the_share_of_removable_channel_sets_that_changed():
    model = pt.two_convs(16, 16)
    graph = tf_prunetrain.channel_groups(model)
    assert len(graph.prunable()) == 32  # c1's and c2's (fc's are outputs)
    schedule = EarlyBird(0.5, window=5, gentle=False)
    schedule.start(pt.schedule_context(model, epochs=8))
    shuffle, kept = _shuffle_c1(model), []
    for epoch in (1, 2, 3):
        plan = schedule.plan(0.5, pt.schedule_context(model, 8))
        outputs = plan.graph.layer_outputs()
        kept.append(np.concatenate([plan.mask(outputs["c1"]),
                                    plan.mask(outputs["c2"])]))
        schedule.decide(epoch, pt.schedule_context(model, 8))
        shuffle(epoch)
    changed = [int(np.sum(a != b)) for a, b in zip(kept, kept[1:])]
    assert changed[1] >= 8  # the other half of c1 is the weak one
    assert schedule.distances == [pytest.approx(c / 32) for c in changed]


def test_its_config_and_state_survive_a_checkpoint():
    model = pt.two_convs(16, 16)
    context = lambda: pt.schedule_context(model, epochs=8)  # noqa: E731
    schedule = EarlyBird(0.5, window=2, deadline=6, gentle=False)
    schedule.start(context())
    assert schedule.decide(1, context()) is None
    assert schedule.decide(2, context()) is None  # one distance: not yet
    resumed = EarlyBird.from_config(json.loads(json.dumps(
        schedule.get_config())))
    resumed.set_state(json.loads(json.dumps(schedule.get_state())))
    resumed.start(dataclasses.replace(context(), resumed=True))
    assert resumed.deadline == 6 and resumed.distances == [0.0]
    assert resumed.decide(3, context()).last


def test_resumes_from_its_state_as_if_uninterrupted():
    def run(interrupt):
        model = pt.two_convs(16, 16)
        shuffle = _shuffle_c1(model)
        schedule = EarlyBird(0.5, window=3, gentle=False)
        schedule.start(pt.schedule_context(model, epochs=8))
        out = []
        for epoch in range(1, 5):
            if epoch == interrupt:  # a new process: config and state only
                config = json.loads(json.dumps(schedule.get_config()))
                state = json.loads(json.dumps(schedule.get_state()))
                schedule = EarlyBird.from_config(config)
                schedule.set_state(state)
            decision = schedule.decide(epoch, pt.schedule_context(model, 8))
            out.append(None if decision is None
                       else decision.plan.keep.tolist())
            if epoch < 2:
                shuffle(epoch)
        return out, schedule.distances, schedule.deadline

    whole, resumed = run(None), run(3)
    assert whole == resumed
    assert whole[1][0] > 0.1 and whole[1][1:] == [0.0, 0.0]
    assert whole[0][:3] == [None, None, None] and whole[0][3] is not None


def _fit(strategy, epochs=5):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tf_prunetrain.add_group_lasso(resnet_cifar(
            8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0),
            strength=0.05, proximal=True, scales=True)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    rng = np.random.default_rng(0)
    x = rng.random((128, 12, 12, 1), np.float32)
    y = np.arange(128) % 10
    # distance 1: settled at the first distance (after epoch 2), whatever
    # the weights do; gentle, it is asked as epoch 3 begins: epoch 3 fades
    # its channels, and the cut follows it.
    schedule = EarlyBird(0.4, distance=1.0, window=1, deadline=4)
    callback = tf_prunetrain.Reconfigure(schedule, penalty_ratio=None,
                                         round_to=1, verbose=0)
    outputs = pt.OutputsAroundCuts(x[:16])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False,
              callbacks=[outputs, callback])
    return model, callback, outputs


@pytest.mark.parametrize("mirrored", [False, True])
def test_in_fit_one_gentle_cut_agreed_by_every_replica(mirrored):
    strategy = tf_prunetrain.distribute.make_strategy("mirrored") \
        if mirrored else tf.distribute.get_strategy()
    model, callback, outputs = _fit(strategy)
    cuts = [r for r in callback.reconfigurations if r.changes]
    assert [r.epoch for r in cuts] == [3] and callback.finished == 3
    assert len(callback.schedule.distances) == 1  # masks after 1 and 2
    assert cuts[0].removed_norm == pytest.approx(0.0, abs=1e-6)
    # The faded channels were zeros: the cut left the function as it was.
    [(before, after)] = outputs.pairs
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)
    assert cuts[0].flops_after == pytest.approx(0.4 * cuts[0].flops_before,
                                                rel=0.1)
    if mirrored:  # every replica's copy of every weight is the same (the
        # BatchNorm statistics are each replica's own: not synchronized)
        for variable in model.trainable_weights:
            copies = [np.asarray(v) for v in variable.value.values]
            assert len(copies) == 2
            np.testing.assert_array_equal(copies[0], copies[1],
                                          err_msg=variable.path)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="EarlyBird: distance must be in "
                       r"\[0, 1\]"):
        EarlyBird(0.5, distance=1.5)
    with pytest.raises(ValueError, match="EarlyBird: window must be an "
                       "integer >= 1"):
        EarlyBird(0.5, window=0)
    with pytest.raises(ValueError, match="EarlyBird: deadline must be an "
                       "integer >= 1"):
        EarlyBird(0.5, deadline=0)
    with pytest.raises(ValueError, match="EarlyBird: target must be"):
        EarlyBird(1.5)
    model = pt.two_convs(16, 16)
    with pytest.raises(ValueError, match="EarlyBird: deadline=9 is past "
                       r"fit's last epoch \(8\)"):
        EarlyBird(0.5, deadline=9).start(pt.schedule_context(model, 8))
