"""Keras v1 `Adamax`: `m = b1 m + (1 - b1) g; u = max(b2 u, |g|); p -= lr / (1 - b1^t) * m / (u + eps)`.

`weights` = `[iterations] + ms + us`. `t` and `decay` both see the counter after its increment,
as in v1 Adam (see there).
"""

import tensorflow as tf

from .. import adamax as algorithm
from .base import EPSILON, FLOATX, Optimizer


class Adamax(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.iterations = self._iterations_variable()
        self.lr = self._variable(lr, "lr")
        self.beta_1 = self._variable(beta_1, "beta_1")
        self.beta_2 = self._variable(beta_2, "beta_2")
        self.decay = self._variable(decay, "decay")
        self.epsilon = EPSILON if epsilon is None else epsilon
        self.initial_decay = decay

    def _uses_iterations(self):
        return True

    def _apply(self, params, grads):
        self.iterations.assign_add(1)
        lr = self._decayed_lr()
        t = tf.cast(self.iterations, FLOATX)
        lr_t = lr / (1.0 - tf.pow(self.beta_1, t))
        for i, (p, g) in enumerate(zip(params, grads)):
            m, u = self._slot("momentum", i), self._slot("norm", i)
            m_t = (self.beta_1 * m) + (1.0 - self.beta_1) * g
            u_t = tf.maximum(self.beta_2 * u, tf.abs(g))
            new_p = p - lr_t * m_t / (u_t + self.epsilon)
            m.assign(m_t)
            u.assign(u_t)
            self._assign(p, new_p)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), beta_1=self._float(self.beta_1),
                    beta_2=self._float(self.beta_2), decay=self._float(self.decay), epsilon=self.epsilon)
