"""Keras v1 `Nadam` (Dozat's Nesterov Adam with a warming momentum schedule).

`weights` = `[iterations, m_schedule] + ms + vs`; `m_schedule` (canonical extra `u_product`)
is the running product of the momentum schedule `mu_t = beta_1 * (1 - 0.5 * 0.96^(t * sd))`,
`sd` = `schedule_decay`. v1 differs from the later generations in that schedule (the 2.11+
optimizer and Keras 3 drop `sd`) and in having no `decay` of `lr`. Since `m_schedule` is a
function of the step count alone, it can be recomputed when a state lacks it.
"""

import numpy as np
import tensorflow as tf

from .. import nadam as algorithm
from .base import EPSILON, FLOATX, Optimizer, backend_sqrt


class Nadam(Optimizer):
    SPEC = algorithm.SPEC
    # v2 Nadam's `decay` (default 0.004) is the schedule's `schedule_decay`.
    STATE_ALIASES = {"decay": "schedule_decay"}

    def __init__(self, lr=0.002, beta_1=0.9, beta_2=0.999, epsilon=None, schedule_decay=0.004, **kwargs):
        super().__init__(**kwargs)
        self.iterations = self._iterations_variable()
        self.m_schedule = self._variable(1.0, "m_schedule")
        self.lr = self._variable(lr, "lr")
        self.beta_1 = self._variable(beta_1, "beta_1")
        self.beta_2 = self._variable(beta_2, "beta_2")
        self.epsilon = EPSILON if epsilon is None else epsilon
        self.schedule_decay = schedule_decay

    def _uses_iterations(self):
        return True

    def _momentum_cache(self, t):
        return self.beta_1 * (1.0 - 0.5 * tf.pow(np.float32(0.96), t * self.schedule_decay))

    def _recompute_extra(self, name, iterations):
        """`m_schedule` after `iterations` steps, multiplied out in float32 as the steps did."""
        value = tf.constant(1.0, FLOATX)
        for step in range(1, iterations + 1):
            value = value * self._momentum_cache(tf.constant(float(step), FLOATX))
        return value.numpy()

    def _apply(self, params, grads):
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, FLOATX)
        momentum_cache_t = self._momentum_cache(t)
        momentum_cache_t_1 = self._momentum_cache(t + 1)
        m_schedule_new = self.m_schedule * momentum_cache_t
        m_schedule_next = self.m_schedule * momentum_cache_t * momentum_cache_t_1
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = self._slot("momentum", i), self._slot("velocity", i)
            g_prime = g / (1.0 - m_schedule_new)
            m_t = self.beta_1 * m + (1.0 - self.beta_1) * g
            m_t_prime = m_t / (1.0 - m_schedule_next)
            v_t = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g)
            v_t_prime = v_t / (1.0 - tf.pow(self.beta_2, t))
            m_t_bar = (1.0 - momentum_cache_t) * g_prime + momentum_cache_t_1 * m_t_prime
            m.assign(m_t)
            v.assign(v_t)
            self._assign(p, p - self.lr * m_t_bar / (backend_sqrt(v_t_prime) + self.epsilon))
        self.m_schedule.assign(m_schedule_new)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), beta_1=self._float(self.beta_1),
                    beta_2=self._float(self.beta_2), epsilon=self.epsilon, schedule_decay=self.schedule_decay)
