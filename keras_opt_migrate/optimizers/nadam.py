"""Nadam: Adam with Nesterov momentum and a momentum schedule.

Slots `momentum`, `velocity`. The schedule's running product mu_1 * ... * mu_t is state
too, kept by every generation under its own name and place (canonical extra `u_product`):
Keras v1 `m_schedule` (position 1 of `weights`), v2 `momentum_cache` (position 1 of
`get_weights()`), the 2.11+ optimizer `_u_product` (TF checkpoints only, not in
`variables`, so its h5/.keras files lose it), Keras 3 `u_product` (last of `variables`).
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, Extra, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="nadam",
    slots=("momentum", "velocity"),
    names={"v1": {"momentum": "ms", "velocity": "vs"}, "v2": {"momentum": "m", "velocity": "v"},
           "experimental": {"momentum": "m", "velocity": "v"},
           "keras3": {"momentum": "momentum", "velocity": "velocity"}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), Extra("u_product"), slot_major("momentum", "velocity")],
        "v2": lambda c: [Extra("u_product"), slot_major("momentum", "velocity")],
        "experimental": lambda c: [interleaved("momentum", "velocity")],
        "keras3": lambda c: [interleaved("momentum", "velocity"), Extra("u_product")],
    },
    # Keras v1 and v2 use the momentum schedule mu_t = beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t))
    # (v2 also decays the learning rate by its `decay`, 0.004 by default); the 2.11+ optimizer and
    # Keras 3 use mu_t = beta_1 * (1 - 0.5 * 0.96 ** t).
    # The tf_keras 2.11+ Nadam advances its running product under a Python-side counter, so in
    # a compiled train step it multiplies once per variable, not once per step: its trajectory
    # is its own, not Keras 3's.
    update_rules={"v1": "schedule-0.004", "v2": "schedule-0.004", "experimental": "schedule-0.96-per-variable",
                  "keras3": "schedule-0.96"},
    rule_notes={"schedule-0.004": "momentum schedule beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t))",
                "schedule-0.96": "momentum schedule beta_1 * (1 - 0.5 * 0.96 ** t), product advanced once per step",
                "schedule-0.96-per-variable": "momentum schedule beta_1 * (1 - 0.5 * 0.96 ** t), product advanced "
                                              "once per variable in compiled steps (tf_keras 2.11+)"},
    class_names={"v1": ("Nadam",), "v2": ("Nadam",), "experimental": ("Nadam",), "keras3": ("Nadam",)},
    extras={"v1": {"m_schedule": "u_product"}, "v2": {"momentum_cache": "u_product"},
            "experimental": {"_u_product": "u_product"},
            # Keras 3 creates it unnamed: its path is `nadam/variable` (h5 `weight_names`).
            "keras3": {"u_product": "u_product", "variable": "u_product"}},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
    tracked={g: {"_momentums": "momentum", "_velocities": "velocity"} for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------
# The momentum schedule is where the generations really differ:
#   v2:    mu_t = beta_1 * (1 - 0.5 * 0.96 ** (decay * t)), `decay` = schedule_decay (0.004);
#          the product is the `momentum_cache` weight, advanced once per step in `_prepare`.
#   2.11+: mu_t = beta_1 * (1 - 0.5 * 0.96 ** t) (no decay factor); the product `_u_product`
#          is advanced by the first variable of a step, guarded by a Python counter. Inside a
#          tf.function that counter is frozen at trace time, so from the second call on the
#          product advances once per variable: tf_keras does this, and so do we, to resume
#          its runs exactly (eager execution advances it once per step).

def v2_coefficients(lr_t, beta_1_t, beta_2_t, epsilon, iterations, decay, m_cache, m_cache_read, dtype,
                    use_locking=True):
    local_step = tf.cast(iterations + 1, dtype)
    next_step = tf.cast(iterations + 2, dtype)
    decay_base = tf.cast(0.96, dtype)
    m_t = beta_1_t * (1.0 - 0.5 * (tf.pow(decay_base, decay * local_step)))
    m_t_1 = beta_1_t * (1.0 - 0.5 * (tf.pow(decay_base, decay * next_step)))
    m_schedule_new = tf.cast(m_cache_read, dtype) * m_t
    if dtype is m_cache.dtype:
        m_schedule_new = tf.identity(tf.compat.v1.assign(m_cache, m_schedule_new, use_locking=use_locking))
    m_schedule_next = m_schedule_new * m_t_1
    return dict(lr_t=lr_t, neg_lr_t=-lr_t, epsilon=tf.convert_to_tensor(epsilon, dtype), beta_1_t=beta_1_t,
                beta_2_t=beta_2_t, m_t=m_t, m_t_1=m_t_1, one_minus_beta_1_t=1 - beta_1_t,
                one_minus_beta_2_t=1 - beta_2_t, one_minus_m_t=1.0 - m_t,
                one_minus_m_schedule_new=1.0 - m_schedule_new, one_minus_m_schedule_next=1.0 - m_schedule_next,
                v_t_prime_denominator=1.0 - tf.pow(beta_2_t, local_step))


def v2_apply_dense(var, m, v, grad, c, use_locking=True):
    g_prime = grad / c["one_minus_m_schedule_new"]
    m_t = tf.compat.v1.assign(m, c["beta_1_t"] * m + c["one_minus_beta_1_t"] * grad, use_locking=use_locking)
    m_t_prime = m_t / c["one_minus_m_schedule_next"]
    v_t = tf.compat.v1.assign(v, c["beta_2_t"] * v + c["one_minus_beta_2_t"] * tf.square(grad),
                              use_locking=use_locking)
    v_t_prime = v_t / c["v_t_prime_denominator"]
    m_t_bar = c["one_minus_m_t"] * g_prime + c["m_t_1"] * m_t_prime
    var_t = var - c["lr_t"] * m_t_bar / (tf.sqrt(v_t_prime) + c["epsilon"])
    return tf.compat.v1.assign(var, var_t, use_locking=use_locking).op


def _scatter_add(x, indices, updates):
    with tf.control_dependencies([tf.raw_ops.ResourceScatterAdd(resource=x.handle, indices=indices,
                                                                updates=updates)]):
        return x.value()


def v2_apply_sparse(var, m, v, grad, indices, c, use_locking=True):
    g_prime = grad / c["one_minus_m_schedule_new"]
    m_t = tf.compat.v1.assign(m, m * c["beta_1_t"], use_locking=use_locking)
    with tf.control_dependencies([m_t]):
        m_t = _scatter_add(m, indices, grad * c["one_minus_beta_1_t"])
        m_t_slice = tf.gather(m_t, indices)
    m_t_bar = c["one_minus_m_t"] * g_prime + c["m_t_1"] * (m_t_slice / c["one_minus_m_schedule_next"])
    v_t = tf.compat.v1.assign(v, v * c["beta_2_t"], use_locking=use_locking)
    with tf.control_dependencies([v_t]):
        v_t = _scatter_add(v, indices, (grad * grad) * c["one_minus_beta_2_t"])
        v_t_slice = tf.gather(v_t, indices)
    v_prime_sqrt_plus_eps = tf.sqrt(v_t_slice / c["v_t_prime_denominator"]) + c["epsilon"]
    var_update = _scatter_add(var, indices, c["neg_lr_t"] * m_t_bar / v_prime_sqrt_plus_eps)
    return tf.group(var_update, m_t_bar, v_t)


def schedule(iterations, beta_1, beta_2, dtype):
    """The 2.11+ step's (u_t, u_t_1, beta_1, beta_2, beta_2_power), beta_1 / beta_2 cast to `dtype`."""
    local_step = tf.cast(iterations + 1, dtype)
    next_step = tf.cast(iterations + 2, dtype)
    decay = tf.cast(0.96, dtype)
    beta_1 = tf.cast(beta_1, dtype)
    beta_2 = tf.cast(beta_2, dtype)
    u_t = beta_1 * (1.0 - 0.5 * (tf.pow(decay, local_step)))
    u_t_1 = beta_1 * (1.0 - 0.5 * (tf.pow(decay, next_step)))
    return u_t, u_t_1, beta_1, beta_2, tf.pow(beta_2, local_step)


def apply_step(var, m, v, grad, lr, beta_1, beta_2, epsilon, u_t, u_t_1, u_product_t, beta_2_power):
    """The 2.11+ Nadam slot and variable update, given the step's schedule values."""
    u_product_t_1 = u_product_t * u_t_1
    if isinstance(grad, tf.IndexedSlices):
        m.assign_add(-m * (1 - beta_1))
        m.scatter_add(tf.IndexedSlices(grad.values * (1 - beta_1), grad.indices))
        v.assign_add(-v * (1 - beta_2))
        v.scatter_add(tf.IndexedSlices(tf.square(grad.values) * (1 - beta_2), grad.indices))
    else:
        m.assign_add((grad - m) * (1 - beta_1))
        v.assign_add((tf.square(grad) - v) * (1 - beta_2))
    m_hat = u_t_1 * m / (1 - u_product_t_1) + (1 - u_t) * grad / (1 - u_product_t)
    v_hat = v / (1 - beta_2_power)
    var.assign_sub((m_hat * lr) / (tf.sqrt(v_hat) + epsilon))


def update(var, m, v, grad, lr, iterations, beta_1, beta_2, epsilon, u_product_t):
    """2.11+ Nadam step, given the function that advances the schedule product (see the
    2.11+ `Nadam._u_product_for_step`)."""
    u_t, u_t_1, beta_1, beta_2, beta_2_power = schedule(iterations, beta_1, beta_2, var.dtype)
    apply_step(var, m, v, grad, lr, beta_1, beta_2, epsilon, u_t, u_t_1, u_product_t(u_t), beta_2_power)
