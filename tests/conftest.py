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
        "markers", "measured_multiple: round_to='auto' measures this machine "
        "(not pinned to 1)")


_MEASURED = latency.channel_multiple


@pytest.fixture(autouse=True, scope="session")
def _pinned_channel_multiple():
    """`Reconfigure`'s default round_to="auto" measures the machine, so the
    widths a test sees would depend on where it runs: tests pin the measured
    multiple to 1 (no rounding), for the whole session so that module
    fixtures see it too, unless marked `measured_multiple`
    (tests/latency_test.py measures for real; subprocess tests measure)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latency, "channel_multiple", lambda *args, **kwargs: 1)
        yield


@pytest.fixture(autouse=True)
def _measured_channel_multiple(request, monkeypatch):
    if request.node.get_closest_marker("measured_multiple") is not None:
        monkeypatch.setattr(latency, "channel_multiple", _MEASURED)
