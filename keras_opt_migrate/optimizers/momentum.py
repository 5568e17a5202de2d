"""TF1 `MomentumOptimizer` (and the TF1-only slot-free optimizers).

Its accumulator follows `accum = momentum * accum + g; var -= lr * accum` (Nesterov:
`var -= lr * (g + momentum * accum)`), which is not Keras SGD's velocity
(`v = momentum * v - lr * g`): with a constant learning rate `v == -lr * accum`, which is
how migration derives one from the other. Name-based key `<var>/Momentum`.
"""

from .spec import AlgorithmSpec

SPEC = AlgorithmSpec(
    name="momentum",
    slots=("momentum",),
    names={"tf1": {"momentum": "momentum"}},
    layouts={"tf1": lambda c: []},
    class_names={"tf1": ("MomentumOptimizer",)},
    slot_init={"momentum": 0.0},
)

PROXIMAL_GRADIENT_DESCENT_SPEC = AlgorithmSpec(
    name="proximal_gradient_descent",
    slots=(),
    names={"tf1": {}},
    layouts={"tf1": lambda c: []},
    class_names={"tf1": ("ProximalGradientDescentOptimizer",)},
)
