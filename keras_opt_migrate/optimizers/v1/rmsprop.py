"""Keras v1 `RMSprop`: `a = rho * a + (1 - rho) * g^2; p -= lr * g / (sqrt(a) + epsilon)`.

`weights` = accumulators only. The `iterations` counter exists (it drives `decay`) but is
not in `weights`, so no v1 file records it; restore it from elsewhere when `decay > 0`.
"""

import tensorflow as tf

from .. import rmsprop as algorithm
from .base import EPSILON, Optimizer, backend_sqrt


class RMSprop(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=0.001, rho=0.9, epsilon=None, decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lr = self._variable(lr, "lr")
        self.rho = self._variable(rho, "rho")
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
            a = self._slot("velocity", i)
            new_a = self.rho * a + (1.0 - self.rho) * tf.square(g)
            new_p = p - lr * g / (backend_sqrt(new_a) + self.epsilon)
            a.assign(new_a)
            self._assign(p, new_p)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), rho=self._float(self.rho),
                    decay=self._float(self.decay), epsilon=self.epsilon)
