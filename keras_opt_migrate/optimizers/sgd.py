"""SGD with optional (Nesterov) momentum.

One slot, `momentum`: v2 calls it `momentum` and creates it only when momentum != 0; the
2.11+ optimizer calls it `m` and (tf_keras 2.21 `SGD.build`) creates it for every variable
even when momentum is 0; Keras 3 creates `momentum` only when momentum != 0; Keras v1
keeps an anonymous `moments` list, always. TF1 `GradientDescentOptimizer` keeps no slot.
"""

from ._lazy_tf import tf

from .spec import AlgorithmSpec, Extra, slot_major


def _has_momentum(config):
    return bool(config.get("momentum"))


SPEC = AlgorithmSpec(
    name="sgd",
    slots=("momentum",),
    names={"v1": {"momentum": "moments"}, "v2": {"momentum": "momentum"},
           "experimental": {"momentum": "m"}, "keras3": {"momentum": "momentum"}, "tf1": {}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum")],
        "v2": lambda c: [slot_major("momentum", when=_has_momentum)],
        "experimental": lambda c: [slot_major("momentum")],
        "keras3": lambda c: [slot_major("momentum", when=_has_momentum)],
        "tf1": lambda c: [],
    },
    update_rules={g: "momentum-velocity" for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    class_names={"v1": ("SGD",), "v2": ("SGD",), "experimental": ("SGD",), "keras3": ("SGD",),
                 "tf1": ("GradientDescentOptimizer",)},
    slot_init={"momentum": 0.0},
    unread={"momentum": lambda generation, c: None if _has_momentum(c) else
            "momentum 0: the 2.11+ SGD keeps this slot but never reads it"},
    tracked={"experimental": {"momentums": "momentum"}, "keras3": {"momentums": "momentum"}},
)


# -- update math ------------------------------------------------------------------------
# v2 calls TF's fused Keras-momentum kernels; the 2.11+ optimizer writes the same rule out
# in TF ops (`m = momentum * m - lr * g; var += m`, Nesterov `var += momentum * m - lr * g`),
# and always keeps `m`, so with momentum 0 it still multiplies and adds.

def apply_fused(var, grad, lr, momentum=None, accum=None, nesterov=False, indices=None, use_locking=True):
    """v2: `ResourceApplyKerasMomentum` / `ResourceApplyGradientDescent` (sparse: their sparse forms)."""
    if accum is None:
        if indices is None:
            return tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad,
                                                           use_locking=use_locking)
        return tf.raw_ops.ResourceScatterAdd(resource=var.handle, indices=indices, updates=-grad * lr)
    if indices is None:
        return tf.raw_ops.ResourceApplyKerasMomentum(var=var.handle, accum=accum.handle, lr=lr, grad=grad,
                                                     momentum=momentum, use_locking=use_locking,
                                                     use_nesterov=nesterov)
    return tf.raw_ops.ResourceSparseApplyKerasMomentum(var=var.handle, accum=accum.handle, lr=lr, grad=grad,
                                                       indices=indices, momentum=momentum,
                                                       use_locking=use_locking, use_nesterov=nesterov)


def update(var, m, grad, lr, momentum, nesterov):
    """2.11+: one step; `lr`, `momentum` already cast to the variable's dtype."""
    if isinstance(grad, tf.IndexedSlices):
        add_value = tf.IndexedSlices(-grad.values * lr, grad.indices)
        m.assign(m * momentum)
        m.scatter_add(add_value)
        if nesterov:
            var.scatter_add(add_value)
            var.assign_add(m * momentum)
        else:
            var.assign_add(m)
    else:
        m.assign(-grad * lr + m * momentum)
        if nesterov:
            var.assign_add(-grad * lr + m * momentum)
        else:
            var.assign_add(m)
