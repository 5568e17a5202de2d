"""Adafactor: factored second moments.

For a variable of rank >= 2 the state is `r` (row statistics, shape[:-1]), `c` (column
statistics, shape[:-2] + shape[-1:]) and `velocity` (full shape); for rank < 2 only
`velocity` is real. The 2.11+ optimizer keeps scalar placeholders for `r`/`c` of rank < 2
variables outside `variables` (checkpointed as `optimizer/_r/<i>`); Keras 3 puts them in
`variables` as scalars, with non-unique paths. The 2.11+ optimizer calls `velocity` `v`.
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, interleaved


def _shape(slot, var_shape, config, generation):
    var_shape = tuple(var_shape)
    if slot == "velocity":
        return var_shape
    if len(var_shape) < 2:
        return () if generation == "keras3" else None
    return var_shape[:-1] if slot == "r" else var_shape[:-2] + var_shape[-1:]


SPEC = AlgorithmSpec(
    name="adafactor",
    slots=("r", "c", "velocity"),
    names={"experimental": {"r": "r", "c": "c", "velocity": "v"},
           "keras3": {"r": "r", "c": "c", "velocity": "velocity"}},
    layouts={"experimental": lambda c: [interleaved("r", "c", "velocity")],
             "keras3": lambda c: [interleaved("r", "c", "velocity")]},
    update_rules={"experimental": "adafactor", "keras3": "adafactor"},
    class_names={"experimental": ("Adafactor",), "keras3": ("Adafactor",)},
    shape_rule=_shape,
    slot_init={"r": 0.0, "c": 0.0, "velocity": 0.0},
    nonnegative=("r", "c", "velocity"),
    tracked={g: {"_r": "r", "_c": "c", "_v": "velocity"} for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------

def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def update(var, r, c, v, grad, lr, iterations, beta_2_decay, epsilon_1, epsilon_2, clip_threshold, relative_step):
    """One Adafactor step (tf_keras 2.11+ form); sparse gradients are densified.

    relative_step: cap the learning rate at 1/sqrt(t) (tf_keras does this only when the
    learning rate is not a schedule).
    """
    dtype = var.dtype
    local_step = tf.cast(iterations + 1, dtype)
    if relative_step:
        lr = tf.minimum(lr, tf.math.rsqrt(local_step))
    rho_t = tf.minimum(lr, tf.math.rsqrt(local_step))
    alpha_t = tf.maximum(tf.cast(epsilon_2, dtype), _rms(var)) * rho_t
    regulated_grad_square = tf.square(grad) + epsilon_1
    beta_2_t = 1 - tf.pow(local_step, beta_2_decay)
    if len(var.shape) >= 2:
        r.assign(beta_2_t * r + (1 - beta_2_t) * tf.reduce_mean(regulated_grad_square, axis=-1))
        c.assign(beta_2_t * c + (1 - beta_2_t) * tf.reduce_mean(regulated_grad_square, axis=-2))
        v.assign(tf.expand_dims(r / tf.reduce_mean(r, axis=-1, keepdims=True), axis=-1) * tf.expand_dims(c, -2))
    else:
        v.assign(beta_2_t * v + (1 - beta_2_t) * regulated_grad_square)
    u_t = tf.convert_to_tensor(grad) * tf.math.rsqrt(v)
    u_t_hat = u_t / tf.maximum(tf.cast(1.0, dtype), (_rms(u_t) / clip_threshold))
    var.assign_add(-alpha_t * u_t_hat)


def _column_mean(x):
    """mean over axis -2 as a product with a row of ones (TF's column reduction is several
    times slower on CPU than a matrix-vector product)."""
    rows = x.shape[-2]
    return tf.squeeze(tf.matmul(tf.ones([1, rows], x.dtype), x), axis=-2) / tf.cast(rows, x.dtype)


def fast_update(var, r, c, v, grad, lr, iterations, beta_2_decay, epsilon_1, epsilon_2, clip_threshold,
                relative_step):
    """The rule of `update` (dense gradient) in fewer passes over the variable: root mean
    squares as Euclidean norms, epsilon_1 added to the row / column means instead of to every
    squared element, the column mean as a matrix product, and the clipped step applied by one
    fused `ResourceApplyGradientDescent` (var -= alpha_t / max(1, rms(u) / clip) * u).
    Algebraically the same; rounding differs in the last bits."""
    dtype = var.dtype
    local_step = tf.cast(iterations + 1, dtype)
    if relative_step:
        lr = tf.minimum(lr, tf.math.rsqrt(local_step))
    rho_t = tf.minimum(lr, tf.math.rsqrt(local_step))
    size_rsqrt = tf.math.rsqrt(tf.cast(tf.size(var), dtype))
    alpha_t = tf.maximum(tf.cast(epsilon_2, dtype), tf.math.reduce_euclidean_norm(var) * size_rsqrt) * rho_t
    beta_2_t = 1 - tf.pow(local_step, beta_2_decay)
    if len(var.shape) >= 2:
        grad_square = tf.square(grad)
        r.assign(beta_2_t * r + (1 - beta_2_t) * (tf.reduce_mean(grad_square, axis=-1) + epsilon_1))
        c.assign(beta_2_t * c + (1 - beta_2_t) * (_column_mean(grad_square) + epsilon_1))
        v.assign(tf.expand_dims(r / tf.reduce_mean(r, axis=-1, keepdims=True), axis=-1) * tf.expand_dims(c, -2))
    else:
        v.assign(beta_2_t * v + (1 - beta_2_t) * (tf.square(grad) + epsilon_1))
    u_t = grad * tf.math.rsqrt(v)
    u_rms = tf.math.reduce_euclidean_norm(u_t) * size_rsqrt
    step = alpha_t / tf.maximum(tf.cast(1.0, dtype), u_rms / clip_threshold)
    return tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=step, delta=u_t)
