"""Adam (with AMSGrad), and the algorithms that share its state: AdamW, LazyAdam, Lamb.

Slots: `momentum` (first moment), `velocity` (second moment), `velocity_hat` (running max
of the second moment, AMSGrad only).

Layout per generation: v2 is slot-major (all m, all v, all vhat); the 2.11+ optimizer and
Keras 3 interleave m and v per variable and append all vhat after; Keras v1 keeps
`[iterations] + ms + vs + vhats` where each vhat is a `(1,)` placeholder unless amsgrad;
TF1 name-based keys are `<var>/Adam` (m) and `<var>/Adam_1` (v), with the non-slot
`beta1_power` / `beta2_power` (= beta ** (t + 1) after t steps).
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, Extra, interleaved, slot_major


def _amsgrad(config):
    return bool(config.get("amsgrad"))


def _shape(slot, var_shape, config, generation):
    if generation == "v1" and slot == "velocity_hat" and not _amsgrad(config):
        return (1,)
    return tuple(var_shape)


NAMES = {
    "v1": {"momentum": "ms", "velocity": "vs", "velocity_hat": "vhats"},
    "v2": {"momentum": "m", "velocity": "v", "velocity_hat": "vhat"},
    "experimental": {"momentum": "m", "velocity": "v", "velocity_hat": "vhat"},
    "keras3": {"momentum": "momentum", "velocity": "velocity", "velocity_hat": "velocity_hat"},
    "tf1": {"momentum": "m", "velocity": "v"},
}

LAYOUTS = {
    "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum", "velocity", "velocity_hat")],
    "v2": lambda c: [slot_major("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "experimental": lambda c: [interleaved("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "keras3": lambda c: [interleaved("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "tf1": lambda c: [],
}

SPEC = AlgorithmSpec(
    name="adam",
    slots=("momentum", "velocity", "velocity_hat"),
    names=NAMES,
    layouts=LAYOUTS,
    # Every generation applies the "epsilon hat" form: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    update_rules={g: "adam" for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    class_names={"v1": ("Adam",), "v2": ("Adam",), "experimental": ("Adam",), "keras3": ("Adam",),
                 "tf1": ("AdamOptimizer",)},
    extras={"tf1": {"beta1_power": "beta1_power", "beta2_power": "beta2_power"}},
    shape_rule=_shape,
    slot_init={"momentum": 0.0, "velocity": 0.0, "velocity_hat": 0.0},
    nonnegative=("velocity", "velocity_hat"),
    tf1_suffix=lambda c: ("momentum", "velocity"),
    tracked={g: {"_momentums": "momentum", "_velocities": "velocity", "_velocity_hats": "velocity_hat"}
             for g in ("experimental", "keras3")},
)

ADAMW_SPEC = AlgorithmSpec(
    name="adamw",
    slots=SPEC.slots,
    names={g: NAMES[g] for g in ("experimental", "keras3")},
    layouts={g: LAYOUTS[g] for g in ("experimental", "keras3")},
    update_rules={"experimental": "adamw", "keras3": "adamw"},
    class_names={"experimental": ("AdamW",), "keras3": ("AdamW",)},
    slot_init=SPEC.slot_init,
    nonnegative=SPEC.nonnegative,
    tracked=SPEC.tracked,
)

LAZYADAM_SPEC = AlgorithmSpec(
    name="lazyadam",
    slots=("momentum", "velocity"),
    names={"v2": {"momentum": "m", "velocity": "v"}},
    layouts={"v2": lambda c: [slot_major("momentum", "velocity")]},
    update_rules={"v2": "lazy-adam"},
    class_names={"v2": ("LazyAdam", "Addons>LazyAdam")},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
)

LAMB_SPEC = AlgorithmSpec(
    name="lamb",
    slots=("momentum", "velocity"),
    names={"keras3": {"momentum": "momentum", "velocity": "velocity"}},
    layouts={"keras3": lambda c: [interleaved("momentum", "velocity")]},
    update_rules={"keras3": "lamb"},
    class_names={"keras3": ("Lamb",)},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
    tracked={"keras3": {"_momentums": "momentum", "_velocities": "velocity"}},
)


# -- update math ------------------------------------------------------------------------
# Both generations use Kingma & Ba's "epsilon hat" form: the bias correction is folded into
# the step size, var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon).
# v2 runs it in TF's fused kernel (dense) or as decay-then-scatter ops (sparse); the 2.11+
# optimizer writes it in TF ops, decaying m and v as `m += (g - m) * (1 - beta_1)`.
# LazyAdam (tfa, v2) differs only on sparse gradients: rows not in the batch keep m and v.

def bias_corrected_lr(lr, beta_1_power, beta_2_power):
    return lr * (tf.sqrt(1 - beta_2_power) / (1 - beta_1_power))


def v2_coefficients(lr_t, beta_1, beta_2, epsilon, iterations, dtype):
    """The per-step constants of legacy Adam's `_prepare_local`."""
    local_step = tf.cast(iterations + 1, dtype)
    beta_1_t = tf.identity(beta_1)
    beta_2_t = tf.identity(beta_2)
    beta_1_power = tf.pow(beta_1_t, local_step)
    beta_2_power = tf.pow(beta_2_t, local_step)
    return dict(lr=bias_corrected_lr(lr_t, beta_1_power, beta_2_power),
                epsilon=tf.convert_to_tensor(epsilon, dtype), beta_1_t=beta_1_t, beta_1_power=beta_1_power,
                one_minus_beta_1_t=1 - beta_1_t, beta_2_t=beta_2_t, beta_2_power=beta_2_power,
                one_minus_beta_2_t=1 - beta_2_t)


def v2_apply_dense(var, m, v, grad, c, vhat=None, use_locking=True):
    """v2 dense: `ResourceApplyAdam` (or `...WithAmsgrad`), the kernels legacy Adam calls."""
    args = dict(var=var.handle, m=m.handle, v=v.handle, beta1_power=c["beta_1_power"],
                beta2_power=c["beta_2_power"], lr=c["lr_t"], beta1=c["beta_1_t"], beta2=c["beta_2_t"],
                epsilon=c["epsilon"], grad=grad, use_locking=use_locking)
    if vhat is None:
        return tf.raw_ops.ResourceApplyAdam(**args)
    return tf.raw_ops.ResourceApplyAdamWithAmsgrad(vhat=vhat.handle, **args)


def _scatter_add(x, indices, updates):
    with tf.control_dependencies([tf.raw_ops.ResourceScatterAdd(resource=x.handle, indices=indices,
                                                                updates=updates)]):
        return x.value()


def v2_apply_sparse(var, m, v, grad, indices, c, vhat=None, use_locking=True):
    """v2 sparse (unique indices): decay all of m, v, then add the batch rows."""
    m_t = tf.compat.v1.assign(m, m * c["beta_1_t"], use_locking=use_locking)
    with tf.control_dependencies([m_t]):
        m_t = _scatter_add(m, indices, grad * c["one_minus_beta_1_t"])
    v_t = tf.compat.v1.assign(v, v * c["beta_2_t"], use_locking=use_locking)
    with tf.control_dependencies([v_t]):
        v_t = _scatter_add(v, indices, (grad * grad) * c["one_minus_beta_2_t"])
    if vhat is None:
        var_update = tf.compat.v1.assign_sub(var, c["lr"] * m_t / (tf.sqrt(v_t) + c["epsilon"]),
                                             use_locking=use_locking)
        return tf.group(var_update, m_t, v_t)
    v_hat_t = tf.maximum(vhat, v_t)
    with tf.control_dependencies([v_hat_t]):
        v_hat_t = tf.compat.v1.assign(vhat, v_hat_t, use_locking=use_locking)
    var_update = tf.compat.v1.assign_sub(var, c["lr"] * m_t / (tf.sqrt(v_hat_t) + c["epsilon"]),
                                         use_locking=use_locking)
    return tf.group(var_update, m_t, v_t, v_hat_t)


def lazy_apply_sparse(var, m, v, grad, indices, lr_t, beta_1_t, beta_2_t, epsilon, iterations):
    """LazyAdam (tfa) sparse step: only the rows in `indices` (unique) of m, v and var move."""
    dtype = var.dtype.base_dtype
    local_step = tf.cast(iterations + 1, dtype)
    lr = lr_t * tf.sqrt(1 - tf.pow(beta_2_t, local_step)) / (1 - tf.pow(beta_1_t, local_step))
    epsilon_t = tf.convert_to_tensor(epsilon, dtype)
    m_t_slice = beta_1_t * tf.gather(m, indices) + (1 - beta_1_t) * grad
    m_op = tf.raw_ops.ResourceScatterUpdate(resource=m.handle, indices=indices, updates=m_t_slice)
    v_t_slice = beta_2_t * tf.gather(v, indices) + (1 - beta_2_t) * tf.square(grad)
    v_op = tf.raw_ops.ResourceScatterUpdate(resource=v.handle, indices=indices, updates=v_t_slice)
    var_slice = lr * m_t_slice / (tf.sqrt(v_t_slice) + epsilon_t)
    var_op = tf.raw_ops.ResourceScatterSub(resource=var.handle, indices=indices, updates=var_slice)
    return tf.group(var_op, m_op, v_op)


def update(var, m, v, grad, lr, iterations, beta_1, beta_2, epsilon, vhat=None, adaptive_epsilon=False):
    """2.11+ Adam / AdamW step (AdamW's decoupled decay is applied by the base before this).

    `beta_1`, `beta_2`, `epsilon` are the Python numbers the reference mixes in directly.
    """
    dtype = var.dtype
    local_step = tf.cast(iterations + 1, dtype)
    beta_1_power = tf.pow(tf.cast(beta_1, dtype), local_step)
    beta_2_power = tf.pow(tf.cast(beta_2, dtype), local_step)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    epsilon_hat = epsilon * tf.sqrt(1 - beta_2_power) if adaptive_epsilon else epsilon
    if isinstance(grad, tf.IndexedSlices):
        m.assign_add(-m * (1 - beta_1))
        m.scatter_add(tf.IndexedSlices(grad.values * (1 - beta_1), grad.indices))
        v.assign_add(-v * (1 - beta_2))
        v.scatter_add(tf.IndexedSlices(tf.square(grad.values) * (1 - beta_2), grad.indices))
    else:
        m.assign_add((grad - m) * (1 - beta_1))
        v.assign_add((tf.square(grad) - v) * (1 - beta_2))
    if vhat is not None:
        vhat.assign(tf.maximum(vhat, v))
        v = vhat
    var.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon_hat))
