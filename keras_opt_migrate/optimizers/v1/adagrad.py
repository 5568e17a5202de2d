"""Keras v1 `Adagrad`: `a += g^2; p -= lr * g / (sqrt(a) + epsilon)`.

`weights` = accumulators only (initialised to zeros: v1 has no `initial_accumulator_value`);
`iterations` exists for `decay` but is not in `weights`.
"""

import tensorflow as tf

from .. import adagrad as algorithm
from .base import EPSILON, Optimizer, backend_sqrt


class Adagrad(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=0.01, epsilon=None, decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lr = self._variable(lr, "lr")
        self.decay = self._variable(decay, "decay")
        self.iterations = self._iterations_variable()
        self.epsilon = EPSILON if epsilon is None else epsilon
        self.initial_decay = decay

    def _uses_iterations(self):
        return self.initial_decay > 0

    def _apply(self, params, grads):
        lr = self._decayed_lr()
        self.iterations.assign_add(1)
        for i, (p, g) in enumerate(zip(params, grads)):
            a = self._slot("accumulator", i)
            new_a = a + tf.square(g)
            new_p = p - lr * g / (backend_sqrt(new_a) + self.epsilon)
            a.assign(new_a)
            self._assign(p, new_p)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), decay=self._float(self.decay),
                    epsilon=self.epsilon)
