"""Pieces of the default (fast) update path of the 2.11+ optimizers.

By default a 2.11+ optimizer here does not replay tf_keras' op sequence: each algorithm
applies the same update rule with fewer passes over memory, either through one of
TensorFlow's fused training kernels (where the kernel's formula is the 2.11+ rule) or
through its own op sequence compiled with XLA (`jit`). Results then differ from tf_keras'
in the last bits (tests/optimizers/test_experimental_parity.py: model variables within 1e-6
over 20 steps); `reference_ops=True` replays tf_keras' exact op sequence instead.

Functions compiled with `jit` take every variable they touch as an argument (nothing is
captured), so one trace and one XLA compilation serve every variable of the same shape and
dtype. Each optimizer keeps its own compiled functions: a traced function remembers the
variables it was traced with, and refuses to run once they are deleted.
"""

import platform

import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops

FLOAT_DTYPES = (tf.float32, tf.float64)

# Variables smaller than this take the uncompiled op sequence: below ~4K elements XLA is not
# faster per step on CPU, and each new shape costs a compilation (~0.1 s); at 64K elements
# the compiled step saves ~50 us (measured on a 2-core x86 CPU).
XLA_MIN_ELEMENTS = 1 << 16

_XLA = None


def xla_available():
    """Whether XLA can compile on this platform (the conditions tf_keras' `can_jit_compile` uses)."""
    global _XLA
    if _XLA is None:
        _XLA = not (platform.system() == "Darwin" and "arm" in platform.processor().lower())
        try:
            from tensorflow.python import pywrap_tfe
            if pywrap_tfe.TF_ListPluggablePhysicalDevices():
                _XLA = False
        except (ImportError, AttributeError):
            pass
    return _XLA


def jit(fn):
    """`fn` as an XLA-compiled tf.function."""
    return tf.function(fn, jit_compile=True, autograph=False)


def is_plain_variable(variable):
    """A single-device float resource variable whose handle the fused kernels can update in place
    (not a distributed, DTensor-packed or autocast wrapper)."""
    return (isinstance(variable, resource_variable_ops.BaseResourceVariable)
            and not hasattr(variable, "_distributed_container") and variable.dtype in FLOAT_DTYPES)


def densify(grad, variable):
    """A sparse gradient of `variable` (indices already unique) as the dense tensor it stands for."""
    rows = variable.shape[0] if variable.shape.rank and variable.shape[0] is not None else grad.dense_shape[0]
    dense = tf.math.unsorted_segment_sum(grad.values, grad.indices, rows)
    return tf.ensure_shape(dense, variable.shape) if not tf.executing_eagerly() else dense


def decay(variable, weight_decay, lr):
    """The decoupled weight decay var -= var * (wd * lr) in two passes (`weight_decay` None:
    nothing); for the fused-kernel paths."""
    if weight_decay is not None:
        variable.assign_sub(variable * (weight_decay * lr))


def decay_in_graph(variable, weight_decay, lr):
    """The same as tf_keras writes it, (var * wd) * lr: for the bodies compiled by XLA, which
    fuses it anyway, and which run uncompiled (bit-identical to tf_keras) on small variables."""
    if weight_decay is not None:
        variable.assign_sub(variable * weight_decay * lr)
