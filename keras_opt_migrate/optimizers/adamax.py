"""Adamax: Adam with the infinity norm.

Slots `momentum` and `norm` (the exponentially weighted infinity norm). v2 calls them
`m`, `v` (slot-major); the 2.11+ optimizer `m`, `u` (interleaved); Keras 3 `momentum`,
`norm` (interleaved); Keras v1 `ms`, `us` after iterations.
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, Extra, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="adamax",
    slots=("momentum", "norm"),
    names={"v1": {"momentum": "ms", "norm": "us"}, "v2": {"momentum": "m", "norm": "v"},
           "experimental": {"momentum": "m", "norm": "u"}, "keras3": {"momentum": "momentum", "norm": "norm"}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum", "norm")],
        "v2": lambda c: [slot_major("momentum", "norm")],
        "experimental": lambda c: [interleaved("momentum", "norm")],
        "keras3": lambda c: [interleaved("momentum", "norm")],
    },
    update_rules={g: "adamax" for g in ("v1", "v2", "experimental", "keras3")},
    class_names={"v1": ("Adamax",), "v2": ("Adamax",), "experimental": ("Adamax",), "keras3": ("Adamax",)},
    slot_init={"momentum": 0.0, "norm": 0.0},
    nonnegative=("norm",),
    tracked={g: {"_m": "momentum", "_u": "norm"} for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------
# v2 dense calls TF's fused `ResourceApplyAdaMax`; v2 sparse updates only the batch rows
# of m and v (gather, update, scatter); the 2.11+ optimizer decays all of m and u on a
# sparse step and divides by (1 - beta_1^t) * (u + epsilon).

def v2_apply_dense(var, m, v, grad, c, use_locking=True):
    return tf.raw_ops.ResourceApplyAdaMax(var=var.handle, m=m.handle, v=v.handle, beta1_power=c["beta_1_power"],
                                          lr=c["lr_t"], beta1=c["beta_1_t"], beta2=c["beta_2_t"],
                                          epsilon=c["epsilon"], grad=grad, use_locking=use_locking)


def v2_apply_sparse(var, m, v, grad, indices, c):
    m_t_slice = tf.gather(m, indices, axis=c["zero"]) * c["beta_1_t"] + grad * c["one_minus_beta_1_t"]
    with tf.control_dependencies([m_t_slice]):
        m_t = tf.raw_ops.ResourceScatterUpdate(resource=m.handle, indices=indices, updates=m_t_slice)
    v_t_slice = tf.maximum(tf.gather(v, indices, axis=c["zero"]) * c["beta_2_t"], tf.abs(grad))
    with tf.control_dependencies([v_t_slice]):
        v_t = tf.raw_ops.ResourceScatterUpdate(resource=v.handle, indices=indices, updates=v_t_slice)
    var_slice = c["neg_scaled_lr"] * (m_t_slice / (v_t_slice + c["epsilon"]))
    with tf.control_dependencies([var_slice]):
        var_update = tf.raw_ops.ResourceScatterAdd(resource=var.handle, indices=indices, updates=var_slice)
    return tf.group(var_update, m_t, v_t)


def update(var, m, u, grad, lr, iterations, beta_1, beta_2, epsilon):
    """2.11+ Adamax step; `beta_1`, `beta_2`, `epsilon` are Python numbers."""
    local_step = tf.cast(iterations + 1, var.dtype)
    beta_1_power = tf.pow(tf.cast(beta_1, var.dtype), local_step)
    if isinstance(grad, tf.IndexedSlices):
        m.assign_add(-m * (1 - beta_1))
        m.scatter_add(tf.IndexedSlices(grad.values * (1 - beta_1), grad.indices))
        u.assign(u * beta_2)
        u_slice = tf.gather(u, grad.indices)
        u.scatter_add(tf.IndexedSlices(tf.maximum(u_slice, tf.abs(grad.values)) - u_slice, grad.indices))
    else:
        m.assign_add((grad - m) * (1 - beta_1))
        u.assign(tf.maximum(beta_2 * u, tf.abs(grad)))
    var.assign_sub((lr * m) / ((1 - beta_1_power) * (u + epsilon)))


def fused_update(var, m, u, grad, lr, iterations, beta_1, beta_2, epsilon):
    """The 2.11+ Adamax step of `update` (dense gradient) in one pass of TF's fused
    `ResourceApplyAdaMax` (the same rule: var -= lr / (1 - beta_1^t) * m / (u + epsilon));
    only the rounding differs."""
    dtype = var.dtype
    beta_1_t = tf.cast(beta_1, dtype)
    beta_1_power = tf.pow(beta_1_t, tf.cast(iterations + 1, dtype))
    return tf.raw_ops.ResourceApplyAdaMax(var=var.handle, m=m.handle, v=u.handle, beta1_power=beta_1_power, lr=lr,
                                          beta1=beta_1_t, beta2=tf.cast(beta_2, dtype),
                                          epsilon=tf.cast(epsilon, dtype), grad=grad)
