"""Hardware-aware widths: the latency table, the multiple it picks, and
`Reconfigure(round_to="auto")`."""

import json
import os

import keras
import numpy as np
import pytest

import tf_prunetrain
from tf_prunetrain import latency
from tf_prunetrain.models import resnet_cifar

WIDTHS = range(8, 65)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _table(time_of):
    return latency.LatencyTable("CPU:0", "float32",
                                {c: float(time_of(c)) for c in WIDTHS})


@pytest.mark.parametrize("time_of, tolerance, expected", [
    (lambda c: -(-c // 16), 0.0, 16),   # blocks of 16 channels (oneDNN fp32)
    (lambda c: -(-c // 8), 0.0, 8),     # blocks of 8 (Tensor Cores, fp16)
    (lambda c: c, 0.0, 1),              # every channel costs: never round
    (lambda c: c, 0.03, 2),             # ... unless within the tolerance
    (lambda c: c * (1.5 if c % 2 else 1.0), 0.0, 2),  # odd widths are slow
])
def test_the_multiple_follows_the_measured_staircase(time_of, tolerance,
                                                     expected):
    assert _table(time_of).multiple(tolerance=tolerance) == expected


def test_round_up_cost_is_the_mean_time_ratio():
    table = _table(lambda c: -(-c // 16))
    assert table.round_up_cost(1, [9, 17]) == 1.0
    assert table.round_up_cost(16, [9, 17]) == 1.0
    # 9 -> 32 costs 2x (one block to two), 17 -> 32 nothing: geometric mean.
    assert table.round_up_cost(32, [9, 17]) == pytest.approx(2 ** 0.5)


def test_a_table_too_narrow_for_the_candidates_is_refused():
    table = latency.LatencyTable("CPU:0", "float32", {8: 1.0, 9: 1.0})
    with pytest.raises(ValueError, match="twice the largest candidate"):
        table.multiple(candidates=(16,))


@pytest.mark.measured_device
def test_measured_once_per_process_on_this_device():
    first = latency.latency_table(range(4, 13), rounds=2)
    assert first is latency.latency_table(range(4, 13), rounds=2)
    assert sorted(first.seconds) == list(range(4, 13))
    assert all(t > 0 for t in first.seconds.values())
    assert first.dtype == "float32" and "CPU" in first.device
    assert first.multiple(candidates=(1, 2, 4)) in (1, 2, 4)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        latency.latency_table(range(4, 8), rounds=0)


def _fit(round_to, log_dir=None, epochs=4):
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(
        resnet_cifar(8, input_shape=(12, 12, 1), widths=(16, 32, 32), seed=0),
        strength=0.05, proximal=True, scales=True)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    full = {layer.name: layer.filters for layer in model.layers
            if hasattr(layer, "filters")}
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1), np.float32)
    callback = tf_prunetrain.Reconfigure(
        flops_target=0.4, penalty_ratio=None, verbose=0, batch_size=32,
        round_to=round_to, log_dir=log_dir)
    model.fit(x, np.arange(64) % 10, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[callback])
    return model, callback, full


def test_auto_rounding_keeps_widths_multiples_of_the_measured_value(
        monkeypatch, tmp_path):
    monkeypatch.setattr(latency, "channel_multiple", lambda dtype: 8)
    model, callback, full = _fit("auto", log_dir=str(tmp_path))
    assert callback.round_to == 8 and callback.target_reached is not None
    widths = {layer.name: layer.filters for layer in model.layers
              if hasattr(layer, "filters")}
    assert widths != full  # it pruned
    for name, width in widths.items():
        assert width % 8 == 0 or width == full[name], (name, width)
    with open(os.path.join(tmp_path, tf_prunetrain.runlog.LOG_FILE)) as f:
        events = [json.loads(line) for line in f]
    rounding = [e for e in events if e["event"] == "round_to"]
    assert len(rounding) == 1 and rounding[0]["multiple"] == 8
    assert rounding[0]["dtype"] == "float32"

    # A resumed run keeps the resolved multiple (every worker and a restart
    # round alike, whatever a new measurement would say).
    resumed = tf_prunetrain.Reconfigure(flops_target=0.4, round_to="auto")
    resumed.restore(callback.state())
    assert resumed.round_to == 8 and resumed.state()["round_to"] == 8


@pytest.mark.measured_device
def test_auto_rounding_with_the_real_measurement():
    model, callback, full = _fit("auto", epochs=2)
    assert callback.round_to in latency.CANDIDATES
    for layer in model.layers:
        if hasattr(layer, "filters"):
            assert (layer.filters % callback.round_to == 0
                    or layer.filters == full[layer.name]), layer.name


def test_auto_falls_back_to_a_multiple_that_reaches_the_target(
        monkeypatch, tmp_path):
    # Widths 16/32/32 rounded to multiples of 32 cannot go below 0.657 of
    # the FLOPs: "auto" must take a finer multiple, not refuse the target.
    monkeypatch.setattr(latency, "channel_multiple", lambda dtype: 32)
    model, callback, full = _fit("auto", log_dir=str(tmp_path), epochs=2)
    assert callback.round_to in (2, 4, 8, 16)
    for layer in model.layers:
        if hasattr(layer, "filters"):
            assert (layer.filters % callback.round_to == 0
                    or layer.filters == full[layer.name]), layer.name
    with open(os.path.join(tmp_path, tf_prunetrain.runlog.LOG_FILE)) as f:
        rounding = [e for e in map(json.loads, f) if e["event"] == "round_to"]
    assert rounding[0]["measured"] == 32
    assert rounding[0]["multiple"] == callback.round_to
    # A fixed round_to is the user's word: refused, not changed.
    with pytest.raises(ValueError, match="flops_target=0.4 is below"):
        _fit(32, epochs=2)


def test_round_to_must_be_a_positive_integer_or_auto():
    for bad in ("fast", 0, 2.5, True):
        with pytest.raises(ValueError, match="round_to must be an integer "
                                             ">= 1 or 'auto'"):
            tf_prunetrain.Reconfigure(round_to=bad)
