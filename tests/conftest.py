"""Pytest set-up: quiet TensorFlow, make `tests/` helpers importable, and
split the CPU into two logical devices so that `tf.distribute` tests can
mirror across them (it must happen before TensorFlow initializes; ops still
run on /cpu:0 unless a strategy places them)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

import pytest  # noqa: E402

from tf_prunetrain import latency  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "measured_device: round_to='auto' and rank='time' measure "
        "this machine (not pinned)")


_MEASURED = {"channel_multiple": latency.channel_multiple,
             "roofline": latency.roofline}
# A roofline near this 2-core CPU's (a byte of traffic costs 20 FLOPs).
PINNED_ROOFLINE = latency.Roofline("CPU:0", "float32", seconds_per_flop=1e-11,
                                   seconds_per_byte=2e-10)


@pytest.fixture(autouse=True, scope="session")
def _pinned_device():
    """`Reconfigure`'s defaults round_to="auto" and rank="time" measure the
    machine, so the widths a test sees would depend on where it runs: tests
    pin the measured multiple to 1 (no rounding) and the roofline to
    `PINNED_ROOFLINE`, for the whole session so that module fixtures see
    them too, unless marked `measured_device` (tests/latency_test.py
    measures for real; subprocess tests measure)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latency, "channel_multiple", lambda *args, **kwargs: 1)
        patch.setattr(latency, "roofline",
                      lambda *args, **kwargs: PINNED_ROOFLINE)
        yield


@pytest.fixture(autouse=True)
def _measured_device(request, monkeypatch):
    if request.node.get_closest_marker("measured_device") is not None:
        for name, measured in _MEASURED.items():
            monkeypatch.setattr(latency, name, measured)
