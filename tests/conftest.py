import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The DTensor test needs the CPU split into 2 logical devices, which TensorFlow allows only before it
# initialises its devices. This root conftest is imported before any test module, so the split always
# happens first (a later attempt, e.g. in tests/optimizers, would find TF initialised by an earlier module).
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
