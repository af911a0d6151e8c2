"""Hardware-aware widths: the latency table, the multiple it picks, and
`Reconfigure(round_to=...)`, a fixed multiple (default 8); and the timing
primitive the table and the tools share (`time_calls`, `round_robin`)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def test_time_calls_times_each_call_on_the_clock():
    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 6.0])
    calls = []
    seconds = latency.time_calls(lambda: calls.append(len(calls)), 3,
                                 clock=lambda: next(ticks))
    assert seconds == [1.0, 2.0, 3.0] and calls == [0, 1, 2]
    assert latency.time_calls(lambda: None, 0) == []


def test_round_robin_reverses_every_other_round_and_reports_each():
    calls, said = [], []
    runners = {k: (lambda k=k: calls.append(k) or [float(len(calls))])
               for k in "abc"}
    ticks = itertools.count(0.0, 2.0)  # each round: one reading, 2 s later
    times = latency.round_robin(runners, rounds=3,
                                progress=lambda r, s: said.append((r, s)),
                                clock=lambda: next(ticks))
    assert calls == list("abccbaabc")
    # In call order: a ran 1st, 6th and 7th; c 3rd, 4th and 9th.
    assert times == {"a": [1.0, 6.0, 7.0], "b": [2.0, 5.0, 8.0],
                     "c": [3.0, 4.0, 9.0]}
    assert said == [(1, 2.0), (2, 2.0), (3, 2.0)]
    # A runner returns any number of seconds per round: all are kept.
    assert latency.round_robin({"x": lambda: [0.1, 0.2]}, 2) == {
        "x": [0.1, 0.2, 0.1, 0.2]}
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="round_robin: rounds must be "
                                             "an integer >= 1"):
            latency.round_robin(runners, rounds=bad)


def test_the_table_is_timed_in_round_robin_rounds(monkeypatch):
    """`latency_table` times its widths with `round_robin`: every width
    once per round, two warm calls each before."""
    seen = {}

    def recorded(runners, rounds, progress=None, clock=None):
        seen["keys"], seen["rounds"] = list(runners), rounds
        return {key: [float(key + 1)] * rounds for key in runners}

    monkeypatch.setattr(latency, "round_robin", recorded)
    seconds = latency._median_seconds(
        [(latency._conv_step, (tf.ones((1, 4, 4, c)),
                               tf.ones((3, 3, c, c)))) for c in (1, 2)],
        rounds=4)
    assert seen == {"keys": [0, 1], "rounds": 4} and seconds == [1.0, 2.0]


def test_measured_once_per_process_on_this_device():
    first = latency.latency_table(range(4, 13), rounds=2)
    assert first is latency.latency_table(range(4, 13), rounds=2)
    assert sorted(first.seconds) == list(range(4, 13))
    assert all(t > 0 for t in first.seconds.values())
    assert first.dtype == "float32" and "CPU" in first.device
    assert first.multiple(candidates=(1, 2, 4)) in (1, 2, 4)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        latency.latency_table(range(4, 8), rounds=0)


def test_channel_multiple_reads_the_candidate_table(monkeypatch):
    widths = {}

    def fake_table(widths_asked, dtype=None):
        widths["asked"] = tuple(widths_asked)
        return _table(lambda c: -(-c // 8))

    monkeypatch.setattr(latency, "latency_table", fake_table)
    assert latency.channel_multiple(candidates=(1, 2, 4, 8, 16)) == 8
    # From a quarter of the largest candidate to twice it.
    assert widths["asked"] == tuple(range(4, 33))


def _fit(round_to, epochs=4, target=0.4):
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
        tf_prunetrain.FlopsBudget(target), penalty_ratio=None, verbose=0,
        **({} if round_to is None else {"round_to": round_to}))
    model.fit(x, np.arange(64) % 10, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[callback])
    return model, callback, full


@pytest.mark.parametrize("round_to, expected, target", [
    (None, 8, 0.4),  # the default
    (16, 16, 0.7),   # multiples of 16 reach 0.657 of the FLOPs at best
])
def test_widths_stay_multiples_of_round_to(round_to, expected, target):
    model, callback, full = _fit(round_to, target=target)
    assert callback.round_to == expected and callback.finished is not None
    widths = {layer.name: layer.filters for layer in model.layers
              if hasattr(layer, "filters")}
    assert widths != full  # it pruned, to the target
    assert tf_prunetrain.cost.forward_flops(model) <= \
        target * callback.initial_flops * 1.002
    for name, width in widths.items():
        assert width % expected == 0 or width == full[name], (name, width)


def test_a_target_the_multiple_cannot_reach_is_refused():
    # Widths 16/32/32 rounded to multiples of 32 cannot go below 0.657 of
    # the FLOPs: a fixed round_to is the user's word, refused, not changed.
    with pytest.raises(ValueError, match="target=0.4 is below.*round_to=32"):
        _fit(32, epochs=2)


def test_round_to_must_be_a_positive_integer():
    for bad in ("auto", "fast", 0, 2.5, True):
        with pytest.raises(ValueError, match="Reconfigure: round_to must be "
                                             "an integer >= 1, got"):
            tf_prunetrain.Reconfigure(tf_prunetrain.FlopsBudget(0.5),
                                      round_to=bad)
