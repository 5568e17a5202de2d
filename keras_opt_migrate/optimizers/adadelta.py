"""Adadelta.

Slots `accumulated_grad` (running mean of squared gradients) and `accumulated_delta_var`
(running mean of squared updates). v2: `accum_grad`, `accum_var`, slot-major; 2.11+ and
Keras 3: `accumulated_grad`, `accumulated_delta_var`, interleaved; Keras v1:
`accumulators` then `delta_accumulators`, no iterations; TF1: `accum`, `accum_update`
(name-based `<var>/Adadelta`, `<var>/Adadelta_1`).
"""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="adadelta",
    slots=("accumulated_grad", "accumulated_delta_var"),
    names={"v1": {"accumulated_grad": "accumulators", "accumulated_delta_var": "delta_accumulators"},
           "v2": {"accumulated_grad": "accum_grad", "accumulated_delta_var": "accum_var"},
           "experimental": {"accumulated_grad": "accumulated_grad", "accumulated_delta_var": "accumulated_delta_var"},
           "keras3": {"accumulated_grad": "accumulated_grad", "accumulated_delta_var": "accumulated_delta_var"},
           "tf1": {"accumulated_grad": "accum", "accumulated_delta_var": "accum_update"}},
    layouts={
        "v1": lambda c: [slot_major("accumulated_grad", "accumulated_delta_var")],
        "v2": lambda c: [slot_major("accumulated_grad", "accumulated_delta_var")],
        "experimental": lambda c: [interleaved("accumulated_grad", "accumulated_delta_var")],
        "keras3": lambda c: [interleaved("accumulated_grad", "accumulated_delta_var")],
        "tf1": lambda c: [],
    },
    update_rules={g: "adadelta" for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    class_names={"v1": ("Adadelta",), "v2": ("Adadelta",), "experimental": ("Adadelta",), "keras3": ("Adadelta",),
                 "tf1": ("AdadeltaOptimizer",)},
    slot_init={"accumulated_grad": 0.0, "accumulated_delta_var": 0.0},
    nonnegative=("accumulated_grad", "accumulated_delta_var"),
    tf1_suffix=lambda c: ("accumulated_grad", "accumulated_delta_var"),
    tracked={g: {"_accumulated_grads": "accumulated_grad", "_accumulated_delta_vars": "accumulated_delta_var"}
             for g in ("experimental", "keras3")},
)


# -- update math ------------------------------------------------------------------------
# v2 calls TF's fused Adadelta kernels; the 2.11+ optimizer writes the same rule in TF ops
# and densifies the update of a sparse gradient.

def v2_apply(var, accum_grad, accum_var, grad, lr, rho, epsilon, indices=None, use_locking=True):
    """v2: `ResourceApplyAdadelta` / `ResourceSparseApplyAdadelta`."""
    args = dict(var=var.handle, accum=accum_grad.handle, accum_update=accum_var.handle, lr=lr, rho=rho,
                epsilon=epsilon, grad=grad, use_locking=use_locking)
    if indices is None:
        return tf.raw_ops.ResourceApplyAdadelta(**args)
    return tf.raw_ops.ResourceSparseApplyAdadelta(indices=indices, **args)


def update(var, accumulated_grad, accumulated_delta_var, grad, lr, rho, epsilon):
    """2.11+ Adadelta step; `rho`, `epsilon` are Python numbers."""
    def rms(x):
        return tf.sqrt(x + epsilon)

    if isinstance(grad, tf.IndexedSlices):
        accumulated_grad.assign_add((rho - 1) * accumulated_grad)
        accumulated_grad.scatter_add(tf.IndexedSlices((1 - rho) * tf.square(grad.values), grad.indices))
        grad = tf.convert_to_tensor(grad)
    else:
        accumulated_grad.assign(rho * accumulated_grad + (1 - rho) * grad * grad)
    delta_var = -rms(accumulated_delta_var) * grad / rms(accumulated_grad)
    accumulated_delta_var.assign(rho * accumulated_delta_var + (1 - rho) * delta_var * delta_var)
    var.assign_add(lr * delta_var)
