"""FTRL-proximal.

Slots `accumulator` (initialised to `initial_accumulator_value`) and `linear`, per
variable in every generation (v2 creates both for one variable before the next, unlike
its other optimizers). TF1 names them `accum` / `linear` (`<var>/Ftrl`, `<var>/Ftrl_1`).
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, interleaved

SPEC = AlgorithmSpec(
    name="ftrl",
    slots=("accumulator", "linear"),
    names={"v2": {"accumulator": "accumulator", "linear": "linear"},
           "experimental": {"accumulator": "accumulator", "linear": "linear"},
           "keras3": {"accumulator": "accumulator", "linear": "linear"},
           "tf1": {"accumulator": "accum", "linear": "linear"}},
    layouts={g: (lambda c: [interleaved("accumulator", "linear")]) for g in ("v2", "experimental", "keras3")}
    | {"tf1": lambda c: []},
    update_rules={g: "ftrl" for g in ("v2", "experimental", "keras3", "tf1")},
    class_names={"v2": ("Ftrl",), "experimental": ("Ftrl",), "keras3": ("Ftrl",), "tf1": ("FtrlOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value", "linear": 0.0},
    nonnegative=("accumulator",),
    tf1_suffix=lambda c: ("accumulator", "linear"),
    tracked={g: {"_accumulators": "accumulator", "_linears": "linear"} for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------
# Both generations fold `beta` into the L2 strength as l2 + beta / (2 lr). v2 calls TF's
# fused `ResourceApplyFtrl` (V2 with l2 shrinkage) kernels, dense or sparse; the 2.11+
# optimizer writes the rule in TF ops and densifies sparse gradients.

def adjusted_l2(l2, beta, lr):
    return l2 + beta / (2.0 * lr)


def v2_apply(var, accum, linear, grad, lr, l1, l2, lr_power, l2_shrinkage=None, indices=None, use_locking=True):
    """v2: `Resource[Sparse]ApplyFtrl[V2]` (V2 when l2_shrinkage is given)."""
    args = dict(var=var.handle, accum=accum.handle, linear=linear.handle, grad=grad, lr=lr, l1=l1, l2=l2,
                lr_power=lr_power, use_locking=use_locking)
    if indices is not None:
        args["indices"] = indices
    if l2_shrinkage is None:
        return (tf.raw_ops.ResourceApplyFtrl if indices is None else tf.raw_ops.ResourceSparseApplyFtrl)(**args)
    return (tf.raw_ops.ResourceApplyFtrlV2 if indices is None else tf.raw_ops.ResourceSparseApplyFtrlV2)(
        l2_shrinkage=l2_shrinkage, **args)


def update(var, accum, linear, grad, lr, learning_rate_power, l1, l2, l2_shrinkage, beta):
    """2.11+ FTRL step; hyperparameters are Python numbers, `lr` a tensor."""
    if isinstance(grad, tf.IndexedSlices):
        grad = tf.convert_to_tensor(grad)
    l2_reg = adjusted_l2(l2, beta, lr)
    grad_to_use = grad + 2 * l2_shrinkage * var
    new_accum = accum + tf.pow(grad, 2)
    linear.assign_add(grad_to_use - (tf.pow(new_accum, -learning_rate_power)
                                     - tf.pow(accum, -learning_rate_power)) / lr * var)
    quadratic = tf.pow(new_accum, (-learning_rate_power)) / lr + 2 * l2_reg
    linear_clipped = tf.clip_by_value(linear, -l1, l1)
    var.assign((linear_clipped - linear) / quadratic)
    accum.assign(new_accum)
