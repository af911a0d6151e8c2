"""Pytest set-up: quiet TensorFlow, make `tests/` helpers and the
repository's `tools` and `recipes` packages importable (from any working
directory), and split the CPU into two logical devices so that
`tf.distribute` tests can mirror across them (it must happen before
TensorFlow initializes; ops still run on /cpu:0 unless a strategy places
them)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)
