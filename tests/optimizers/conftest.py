"""Split the CPU into 2 logical devices for the DTensor test; must run before TF initialises."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

try:
    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier test module: the DTensor test skips
    pass
