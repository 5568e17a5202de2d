"""Adagrad, and ProximalAdagrad (TF1), and tfrs ClippyAdagrad (2.11+ generation).

Slot `accumulator`, initialised to `initial_accumulator_value` (Keras default 0.1, TF1
default 0.1). Keras v1 keeps only the accumulators: no iterations counter at all.
TF1 name-based key: `<var>/Adagrad` (`<var>/ProximalAdagrad`).
ClippyAdagrad adds a scalar `clipping_factor` per variable when `export_clipping_factors`.
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="adagrad",
    slots=("accumulator",),
    names={"v1": {"accumulator": "accumulators"}, "v2": {"accumulator": "accumulator"},
           "experimental": {"accumulator": "accumulator"}, "keras3": {"accumulator": "accumulator"},
           "tf1": {"accumulator": "accumulator"}},
    layouts={g: (lambda c: [slot_major("accumulator")]) for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    # Keras v1 and v2 (ResourceApplyAdagradV2) divide by sqrt(acc) + eps; the 2.11+ optimizer and
    # Keras 3 by sqrt(acc + eps); TF1 AdagradOptimizer has no epsilon at all.
    update_rules={"v1": "eps-outside", "v2": "eps-outside", "experimental": "eps-inside",
                  "keras3": "eps-inside", "tf1": "no-eps"},
    rule_notes={"eps-outside": "divides by sqrt(accumulator) + epsilon",
                "eps-inside": "divides by sqrt(accumulator + epsilon)",
                "no-eps": "divides by sqrt(accumulator), without epsilon"},
    class_names={"v1": ("Adagrad",), "v2": ("Adagrad",), "experimental": ("Adagrad",), "keras3": ("Adagrad",),
                 "tf1": ("AdagradOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value"},
    nonnegative=("accumulator",),
    tracked={g: {"_accumulators": "accumulator"} for g in ("experimental", "keras3")},
)

PROXIMAL_ADAGRAD_SPEC = AlgorithmSpec(
    name="proximal_adagrad",
    slots=("accumulator",),
    names={"tf1": {"accumulator": "accumulator"}},
    layouts={"tf1": lambda c: []},
    class_names={"tf1": ("ProximalAdagradOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value"},
    nonnegative=("accumulator",),
)


def _clipping_shape(slot, var_shape, config, generation):
    return () if slot == "clipping_factor" else tuple(var_shape)


def _exports(config):
    return bool(config.get("export_clipping_factors"))


# tensorflow-recommenders ClippyAdagrad (0.7.3). Its `get_config` leaves out
# `use_standard_accumulator_update`, so no .h5 / .keras file it writes can say a run used it: read
# alone, such a file continues with the default (False), which differs from the run (4.5e-3 over 47
# steps in tests/optimizers/test_clippyadagrad_tfrs.py); the conversion report lists it as
# assumed-default and `--config '{"use_standard_accumulator_update": true}'` makes the continuation
# exact. With everything stored, sparse and dense continue within float rounding of tfrs.
CLIPPYADAGRAD_SPEC = AlgorithmSpec(
    name="clippyadagrad",
    slots=("accumulator", "clipping_factor"),
    names={"experimental": {"accumulator": "accumulator", "clipping_factor": "clipping_factor"}},
    layouts={"experimental": lambda c: [interleaved("accumulator", "clipping_factor")] if _exports(c)
             else [slot_major("accumulator")]},
    class_names={"experimental": ("ClippyAdagrad", "Custom>ClippyAdagrad")},
    shape_rule=_clipping_shape,
    slot_init={"accumulator": "initial_accumulator_value", "clipping_factor": 1.0},
    nonnegative=("accumulator", "clipping_factor"),
    tracked={"experimental": {"_accumulators": "accumulator", "clipping_factors": "clipping_factor"}},
)


# -- update math ------------------------------------------------------------------------
# Generations differ in where epsilon goes: v2's fused `ResourceApplyAdagradV2` divides by
# sqrt(accumulator) + epsilon; the 2.11+ optimizer by sqrt(accumulator + epsilon).

def v2_apply(var, accum, grad, lr, epsilon, indices=None, use_locking=True):
    """v2: `ResourceApplyAdagradV2` / `ResourceSparseApplyAdagradV2`."""
    if indices is None:
        return tf.raw_ops.ResourceApplyAdagradV2(var=var.handle, accum=accum.handle, lr=lr, epsilon=epsilon,
                                                 grad=grad, use_locking=use_locking)
    return tf.raw_ops.ResourceSparseApplyAdagradV2(var=var.handle, accum=accum.handle, lr=lr, epsilon=epsilon,
                                                   grad=grad, indices=indices, use_locking=use_locking)


def update(var, accum, grad, lr, epsilon):
    """2.11+ Adagrad step."""
    if isinstance(grad, tf.IndexedSlices):
        accum.scatter_add(tf.IndexedSlices(grad.values * grad.values, grad.indices))
        denominator = tf.sqrt(tf.gather(accum, indices=grad.indices) + epsilon)
        var.scatter_add(tf.IndexedSlices(-lr * grad.values / denominator, grad.indices))
    else:
        accum.assign_add(grad * grad)
        var.assign_sub(lr * grad / tf.sqrt(accum + epsilon))


def shrink_by_references(delta, references, relative_factors, absolute_factor):
    """ClippyAdagrad's clipping: scale `delta` so |delta| <= absolute + sum(relative * |reference|).

    One scalar scale for the whole tensor (elements with delta == 0 do not constrain it);
    returns (scaled delta, scale).
    """
    if any(f < 0 for f in relative_factors) or absolute_factor < 0:
        raise ValueError("relative_factors and absolute_factor must all be non-negative. Received: %r, %r"
                         % (relative_factors, absolute_factor))
    max_delta = sum((tf.math.abs(r) * f for r, f in zip(references, relative_factors)), start=absolute_factor)
    per_element = tf.where(delta == 0., 1., tf.math.divide_no_nan(max_delta, tf.math.abs(delta)))
    scale = tf.minimum(1., tf.reduce_min(per_element))
    return delta * scale, scale


def clippy_update(var, accum, grad, lr, epsilon, variable_relative_threshold, accumulator_relative_threshold,
                  absolute_threshold, clip_accumulator_update, use_standard_accumulator_update,
                  clipping_factor=None):
    """ClippyAdagrad (tfrs) step: Adagrad whose update is clipped relative to the variable."""
    sparse = isinstance(grad, tf.IndexedSlices)
    if use_standard_accumulator_update:
        if sparse:
            accum.scatter_add(tf.IndexedSlices(tf.math.square(grad.values), grad.indices))
        else:
            accum.assign_add(tf.math.square(grad))
    if sparse:
        grad_values = grad.values
        accum_values = tf.gather(accum, indices=grad.indices)
        var_values = tf.gather(var, indices=grad.indices)
    else:
        grad_values, accum_values, var_values = grad, accum, var
    precondition = tf.math.rsqrt(accum_values + epsilon)
    delta = lr * grad_values * precondition
    clipped_delta, factor = shrink_by_references(
        delta, references=[var_values, precondition],
        relative_factors=[variable_relative_threshold, accumulator_relative_threshold],
        absolute_factor=absolute_threshold)
    if clipping_factor is not None:
        clipping_factor.assign(factor)
    if not use_standard_accumulator_update:
        accum_update = grad_values * factor if clip_accumulator_update else grad_values
        if sparse:
            accum.scatter_add(tf.IndexedSlices(tf.math.square(accum_update), grad.indices))
        else:
            accum.assign_add(tf.math.square(accum_update))
    if sparse:
        var.scatter_sub(tf.IndexedSlices(clipped_delta, grad.indices))
    else:
        var.assign_sub(clipped_delta)
