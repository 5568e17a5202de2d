"""RMSprop (plain, with momentum, centered).

Slots `velocity` (mean square), `momentum` (only when momentum > 0), `average_gradient`
(only when centered). Slot-major in every Keras generation. v2 names them `rms`,
`momentum`, `mg`; Keras v1 keeps only `accumulators` (velocity) and no iterations, even
with `decay`, where its learning rate depends on the lost counter.
TF1 `RMSPropOptimizer` initialises `rms` to ONES (Keras: zeros), always keeps `momentum`,
and names per variable `<var>/RMSProp` (rms), then `mg` if centered, then `momentum`.
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, slot_major


def _momentum(config):
    return (config.get("momentum") or 0) > 0


def _centered(config):
    return bool(config.get("centered"))


SPEC = AlgorithmSpec(
    name="rmsprop",
    slots=("velocity", "momentum", "average_gradient"),
    names={"v1": {"velocity": "accumulators"},
           "v2": {"velocity": "rms", "momentum": "momentum", "average_gradient": "mg"},
           "experimental": {"velocity": "velocity", "momentum": "momentum", "average_gradient": "average_gradient"},
           "keras3": {"velocity": "velocity", "momentum": "momentum", "average_gradient": "average_gradient"},
           "tf1": {"velocity": "rms", "momentum": "momentum", "average_gradient": "mg"}},
    layouts={
        "v1": lambda c: [slot_major("velocity")],
        "v2": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                         slot_major("average_gradient", when=_centered)],
        "experimental": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                                   slot_major("average_gradient", when=_centered)],
        "keras3": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                             slot_major("average_gradient", when=_centered)],
        "tf1": lambda c: [],
    },
    # v2 runs ResourceApplyRMSProp (epsilon inside the sqrt) only with momentum or centered, and
    # otherwise divides by sqrt(ms) + eps, as Keras v1 does; 2.11+, Keras 3 and TF1 (which always
    # uses the momentum kernel) put epsilon inside.
    update_rules={"v1": "eps-outside",
                  "v2": lambda c: "eps-inside" if (_momentum(c) or _centered(c)) else "eps-outside",
                  "experimental": "eps-inside", "keras3": "eps-inside", "tf1": "eps-inside"},
    rule_notes={"eps-outside": "divides by sqrt(mean square) + epsilon",
                "eps-inside": "divides by sqrt(mean square + epsilon)"},
    class_names={"v1": ("RMSprop",), "v2": ("RMSprop",), "experimental": ("RMSprop",), "keras3": ("RMSprop",),
                 "tf1": ("RMSPropOptimizer",)},
    slot_init={"velocity": 0.0, "momentum": 0.0, "average_gradient": 0.0},
    unread={"momentum": lambda generation, c: "momentum 0: TF1 RMSProp keeps this slot but overwrites it before "
            "reading it" if generation == "tf1" and not _momentum(c) else None},
    nonnegative=("velocity",),
    tf1_suffix=lambda c: ("velocity", "average_gradient", "momentum") if _centered(c) else ("velocity", "momentum"),
    tracked={g: {"_velocities": "velocity", "_momentums": "momentum", "_average_gradients": "average_gradient"}
             for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------
# v2 uses TF's fused (Centered)RMSProp kernels when momentum > 0 and TF ops otherwise,
# dividing by sqrt(ms) + epsilon; the 2.11+ optimizer multiplies by rsqrt(ms + epsilon)
# (epsilon inside the root), and keeps momentum as `mom = momentum * mom + increment`.

def v2_apply_fused(var, ms, mom, grad, c, mg=None, indices=None, use_locking=True):
    """v2 with momentum: `Resource[Sparse]Apply[Centered]RMSProp`."""
    args = dict(var=var.handle, ms=ms.handle, mom=mom.handle, lr=c["lr_t"], rho=c["rho"],
                momentum=c["momentum"], epsilon=c["epsilon"], grad=grad, use_locking=use_locking)
    if indices is not None:
        args["indices"] = indices
    if mg is None:
        op = tf.raw_ops.ResourceApplyRMSProp if indices is None else tf.raw_ops.ResourceSparseApplyRMSProp
        return op(**args)
    op = tf.raw_ops.ResourceApplyCenteredRMSProp if indices is None else tf.raw_ops.ResourceSparseApplyCenteredRMSProp
    return op(mg=mg.handle, **args)


def v2_apply_dense(var, ms, grad, c, mg=None, use_locking=True):
    """v2 without momentum, dense."""
    rms_t = tf.compat.v1.assign(ms, c["rho"] * ms + c["one_minus_rho"] * tf.square(grad), use_locking=use_locking)
    denom_t = rms_t
    if mg is not None:
        mg_t = tf.compat.v1.assign(mg, c["rho"] * mg + c["one_minus_rho"] * grad, use_locking=use_locking)
        denom_t = rms_t - tf.square(mg_t)
    var_t = var - c["lr_t"] * grad / (tf.sqrt(denom_t) + c["epsilon"])
    return tf.compat.v1.assign(var, var_t, use_locking=use_locking).op


def _scatter_add(x, indices, updates):
    with tf.control_dependencies([tf.raw_ops.ResourceScatterAdd(resource=x.handle, indices=indices,
                                                                updates=updates)]):
        return x.value()


def v2_apply_sparse(var, ms, grad, indices, c, mg=None, use_locking=True):
    """v2 without momentum, sparse (unique indices)."""
    rms_t = tf.compat.v1.assign(ms, ms * c["rho"], use_locking=use_locking)
    with tf.control_dependencies([rms_t]):
        rms_t = _scatter_add(ms, indices, (grad * grad) * c["one_minus_rho"])
        denom_slice = tf.gather(rms_t, indices)
    ops = [rms_t]
    if mg is not None:
        mg_t = tf.compat.v1.assign(mg, mg * c["rho"], use_locking=use_locking)
        with tf.control_dependencies([mg_t]):
            mg_t = _scatter_add(mg, indices, grad * c["one_minus_rho"])
            denom_slice = denom_slice - tf.square(tf.gather(mg_t, indices))
        ops.append(mg_t)
    var_update = _scatter_add(var, indices, c["neg_lr_t"] * grad / (tf.sqrt(denom_slice) + c["epsilon"]))
    return tf.group(var_update, *ops)


def update(var, velocity, grad, lr, rho, epsilon, momentum=0.0, mom=None, average_grad=None):
    """2.11+ RMSprop step; `rho`, `epsilon`, `momentum` are Python numbers."""
    if isinstance(grad, tf.IndexedSlices):
        velocity.assign(rho * velocity)
        velocity.scatter_add(tf.IndexedSlices(tf.square(grad.values) * (1 - rho), grad.indices))
        if average_grad is not None:
            average_grad.assign(rho * average_grad)
            average_grad.scatter_add(tf.IndexedSlices(grad.values * (1 - rho), grad.indices))
            denominator = velocity - tf.square(average_grad) + epsilon
        else:
            denominator = velocity + epsilon
        increment = tf.IndexedSlices(lr * grad.values * tf.math.rsqrt(tf.gather(denominator, grad.indices)),
                                     grad.indices)
        if mom is not None:
            mom.assign(momentum * mom)
            mom.scatter_add(increment)
            var.assign_add(-mom)
        else:
            var.scatter_add(-increment)
        return
    velocity.assign(rho * velocity + (1 - rho) * tf.square(grad))
    if average_grad is not None:
        average_grad.assign(rho * average_grad + (1 - rho) * grad)
        denominator = velocity - tf.square(average_grad) + epsilon
    else:
        denominator = velocity + epsilon
    increment = lr * grad * tf.math.rsqrt(denominator)
    if mom is not None:
        mom.assign(momentum * mom + increment)
        var.assign_add(-mom)
    else:
        var.assign_add(-increment)
