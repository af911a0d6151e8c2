"""`rank="time"`: the measured roofline (`latency.roofline`), budget cuts
ranked per second (`budget.plan_to_flops(roofline=...)`), the predicted
step time and the slower-step report of `Reconfigure`."""

import json
import os

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from conftest import PINNED_ROOFLINE
from tf_prunetrain import budget
from tf_prunetrain import latency
from tf_prunetrain import runlog
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _roofline(per_flop=1e-11, per_byte=0.0, layers=None):
    return latency.Roofline("CPU:0", "float32", per_flop, per_byte,
                            dict(layers or {}))


def _resnet():
    return resnet_cifar(8, input_shape=(16, 16, 1), widths=(16, 16, 32),
                        seed=0)


# -- the cost model ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet_basic", "mobilenetv2_like",
                                  "plain_cnn"])
def test_flop_rates_alone_give_the_flops_ranking(name):
    """With no byte cost and one FLOP rate, seconds are 3 × FLOPs × rate:
    the time ranking is the FLOPs ranking, channel for channel."""
    model = model_zoo.ALL_BUILDERS[name]()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.forward_flops(model)
    roofline = _roofline()
    by_flops = budget.plan_to_flops(graph, 0.5 * start)
    by_time = budget.plan_to_flops(graph, 0.5 * start, roofline=roofline)
    np.testing.assert_array_equal(by_flops.keep, by_time.keep)
    for keep in (np.ones(len(graph.root), bool), by_time.keep):
        assert budget.estimate_seconds(graph, keep, roofline) == \
            pytest.approx(3e-11 * budget.estimate_flops(graph, keep))


def test_estimated_seconds_fall_as_channels_go():
    model = _resnet()
    graph = tf_prunetrain.channel_groups(model)
    roofline = _roofline(per_byte=2e-10)
    keep = np.ones(len(graph.root), bool)
    seconds = [budget.estimate_seconds(graph, keep, roofline)]
    plan = budget.plan_to_flops(graph, 0.0)  # the smallest reachable model
    for root in np.random.default_rng(0).permutation(
            np.flatnonzero(~plan.keep))[:40]:
        keep[root] = False
        seconds.append(budget.estimate_seconds(graph, keep, roofline))
    assert all(b <= a for a, b in zip(seconds, seconds[1:]))
    assert seconds[-1] < seconds[0]


def test_costly_memory_traffic_moves_the_cut_where_it_saves_time():
    """The same FLOPs goal: ranked per second with traffic expensive, the
    cut saves more estimated time and more memory traffic than ranked per
    FLOP."""
    model = _resnet()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.forward_flops(model)
    roofline = _roofline(per_byte=1e-8)  # a byte costs 1000 FLOPs
    plans = {rank: budget.plan_to_flops(graph, 0.6 * start, roofline=r)
             for rank, r in (("flops", None), ("time", roofline))}
    for plan in plans.values():
        assert budget.estimate_flops(graph, plan.keep) <= 0.6 * start * 1.001
    seconds = {rank: budget.estimate_seconds(graph, plan.keep, roofline)
               for rank, plan in plans.items()}
    assert seconds["time"] < seconds["flops"]
    traffic = {rank: tf_prunetrain.training_cost(plan.apply())
               .memory_traffic_bytes for rank, plan in plans.items()}
    assert traffic["time"] < traffic["flops"]


def test_a_costly_layer_is_cut_first():
    model = _resnet()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.forward_flops(model)
    slow = "stage3_block1_conv1"
    plans = {rank: budget.plan_to_flops(graph, 0.8 * start, roofline=r)
             for rank, r in (("flops", None),
                             ("time", _roofline(layers={slow: 1e-8})))}
    kept = {rank: plan.apply().get_layer(slow).filters
            for rank, plan in plans.items()}
    assert kept["time"] < kept["flops"]


def test_dead_channels_still_go_first_and_the_outputs_stay():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    pt.zero_random_groups(model, 0.5, seed=2)
    graph = tf_prunetrain.channel_groups(model)
    dead_only = tf_prunetrain.plan_pruning(graph, remove_blocks=False)
    goal = (budget.estimate_flops(graph, dead_only.keep)
            + tf_prunetrain.forward_flops(model)) / 2
    plan = budget.plan_to_flops(graph, goal, floor=goal,
                                roofline=_roofline(per_byte=1e-9))
    removed = ~plan.keep
    assert removed.any() and not np.any(removed & dead_only.keep)
    x = model_zoo.random_input(model, batch_size=8)
    assert pt.relative_error(model.predict(x, verbose=0),
                             plan.apply().predict(x, verbose=0)) < 1e-5


# -- the measurement ---------------------------------------------------------------
def test_a_difference_lost_in_the_noise_is_floored():
    # A reduced step measured slower than the full one: a twentieth of the
    # full step's average rate, not a negative rate.
    assert latency._rate(1.0, 1.2, 0.5, 10.0) == pytest.approx(0.005)
    assert latency._rate(1.0, 0.5, 0.5, 1.0) == pytest.approx(1.0)


@pytest.mark.measured_device
def test_measured_rates_per_layer_path_shared_by_identical_layers():
    model = _resnet()
    graph = tf_prunetrain.channel_groups(model)
    roofline = budget.measure_roofline(graph, batch_size=8)
    assert roofline.seconds_per_flop > 0 and roofline.seconds_per_byte > 0
    convs = [layer.name for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D)]
    assert set(convs) <= set(roofline.layer_seconds_per_flop)
    assert all(r > 0 for r in roofline.layer_seconds_per_flop.values())
    # Same config and input shape: one measurement, one rate.
    rates = roofline.layer_seconds_per_flop
    twin = _resnet()  # other layer objects, same configs and shapes
    twin_rates = budget.measure_roofline(
        tf_prunetrain.channel_groups(twin), batch_size=8
    ).layer_seconds_per_flop
    assert twin_rates == rates
    again = budget.measure_roofline(graph, batch_size=8)
    assert again.layer_seconds_per_flop == rates
    assert roofline.seconds(1.0, 0.0, "no such layer") == \
        roofline.seconds_per_flop


# -- Reconfigure(rank="time") ------------------------------------------------------
def test_fit_with_time_rank_meets_the_target_and_logs_the_prediction(
        tmp_path):
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(_resnet(), strength=0.05,
                                          proximal=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    rng = np.random.default_rng(0)
    callback = tf_prunetrain.Reconfigure(
        flops_target=0.5, target_epoch=2, rank="time", penalty_ratio=None,
        verbose=0, batch_size=32, log_dir=str(tmp_path))
    model.fit(rng.random((128, 16, 16, 1), np.float32), np.arange(128) % 10,
              epochs=3, batch_size=32, verbose=0, callbacks=[callback])
    assert callback.roofline == PINNED_ROOFLINE
    assert callback.target_reached == 2
    assert callback.cost.inference_flops \
        <= 0.5 * callback.initial_cost.inference_flops * 1.001
    cuts = [r for r in callback.reconfigurations if r.changes]
    assert cuts and all(0 < r.step_seconds_predicted < r.step_seconds_before
                        for r in cuts)
    with open(os.path.join(tmp_path, runlog.LOG_FILE), encoding="utf-8") as f:
        events = [json.loads(line) for line in f]
    roofline = [e for e in events if e["event"] == "roofline"]
    assert roofline[0]["seconds_per_byte"] == PINNED_ROOFLINE.seconds_per_byte
    assert any(e["event"] == "step_time" and e["predicted"] for e in events)
    resumed = tf_prunetrain.Reconfigure(flops_target=0.5, rank="time")
    resumed.restore(json.loads(json.dumps(callback.state())))
    assert resumed.roofline == callback.roofline


def test_a_slower_reconfiguration_is_reported(monkeypatch, tmp_path, capsys):
    """On a fake clock: the step after a cut is slower than before it."""
    cb, step = pt.on_fake_clock(monkeypatch, verbose=1, batch_size=8,
                                log_dir=str(tmp_path))
    cb.on_train_begin()
    for seconds in (5.0, 1.0, 1.0, 1.0):
        step(seconds)
    cb.reconfigure(1)
    for seconds in (4.0, 1.5, 1.5, 1.5, 1.5, 1.5):
        step(seconds)
    assert "WARNING: the train step got 1.50x slower" in capsys.readouterr().out
    with open(os.path.join(tmp_path, runlog.LOG_FILE), encoding="utf-8") as f:
        slower = [json.loads(line) for line in f
                  if '"slower_step"' in line]
    assert slower and slower[0]["ratio"] == pytest.approx(1.5)


def test_a_bad_rank_is_named():
    with pytest.raises(ValueError, match=r"rank must be one of \('flops', "
                                         r"'time'\).*got 'seconds'"):
        tf_prunetrain.Reconfigure(flops_target=0.5, rank="seconds")
