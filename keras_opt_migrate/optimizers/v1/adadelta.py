"""Keras v1 `Adadelta`.

`weights` = accumulators + delta_accumulators (no iterations). The update uses the new
gradient accumulator and the *old* delta accumulator:
`u = g * sqrt(d + eps) / sqrt(a' + eps); p -= lr * u; d' = rho * d + (1 - rho) * u^2`.
`rho` is a Python float here (not a backend variable as in the other v1 classes), so
`1 - rho` is rounded from double precision; kept that way for bit-level parity.
"""

import tensorflow as tf

from .. import adadelta as algorithm
from .base import EPSILON, Optimizer, backend_sqrt


class Adadelta(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=1.0, rho=0.95, epsilon=None, decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lr = self._variable(lr, "lr")
        self.decay = self._variable(decay, "decay")
        self.iterations = self._iterations_variable()
        self.rho = rho
        self.epsilon = EPSILON if epsilon is None else epsilon
        self.initial_decay = decay

    def _uses_iterations(self):
        return self.initial_decay > 0

    def _apply(self, params, grads):
        lr = self._decayed_lr()
        self.iterations.assign_add(1)
        for i, (p, g) in enumerate(zip(params, grads)):
            a, d_a = self._slot("accumulated_grad", i), self._slot("accumulated_delta_var", i)
            new_a = self.rho * a + (1.0 - self.rho) * tf.square(g)
            update = g * backend_sqrt(d_a + self.epsilon) / backend_sqrt(new_a + self.epsilon)
            new_p = p - lr * update
            new_d_a = self.rho * d_a + (1 - self.rho) * tf.square(update)
            a.assign(new_a)
            self._assign(p, new_p)
            d_a.assign(new_d_a)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), rho=self.rho, decay=self._float(self.decay),
                    epsilon=self.epsilon)
