"""Keras v1 `Adam` (and AMSGrad).

`weights` = `[iterations] + ms + vs + vhats`; without amsgrad each vhat is a `(1,)` zeros
placeholder that is never read or written (v2's `set_weights` drops them).

Where v1 differs from the shared Adam kernel (`ResourceApplyAdam`): the step size
`lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)` is built from separate float32 ops (same
"epsilon hat" formula, different rounding), with `t` read after the counter's increment.
`decay` also sees the incremented counter here, unlike v1 SGD/RMSprop/Adagrad/Adadelta: the
real graph reads it with no control dependency on the increment, a race that the
single-threaded executor (which wrote the fixtures) resolves after the increment.
"""

import tensorflow as tf

from .. import adam as algorithm
from .base import EPSILON, FLOATX, Optimizer, backend_sqrt


class Adam(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=None, decay=0.0, amsgrad=False, **kwargs):
        super().__init__(**kwargs)
        self.iterations = self._iterations_variable()
        self.lr = self._variable(lr, "lr")
        self.beta_1 = self._variable(beta_1, "beta_1")
        self.beta_2 = self._variable(beta_2, "beta_2")
        self.decay = self._variable(decay, "decay")
        self.epsilon = EPSILON if epsilon is None else epsilon
        self.initial_decay = decay
        self.amsgrad = amsgrad

    def _layout_config(self):
        return {"amsgrad": self.amsgrad}

    def _uses_iterations(self):
        return True

    def _apply(self, params, grads):
        self.iterations.assign_add(1)
        lr = self._decayed_lr()
        t = tf.cast(self.iterations, FLOATX)
        lr_t = lr * (backend_sqrt(1.0 - tf.pow(self.beta_2, t)) / (1.0 - tf.pow(self.beta_1, t)))
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v, vhat = (self._slot(s, i) for s in ("momentum", "velocity", "velocity_hat"))
            m_t = (self.beta_1 * m) + (1.0 - self.beta_1) * g
            v_t = (self.beta_2 * v) + (1.0 - self.beta_2) * tf.square(g)
            if self.amsgrad:
                vhat_t = tf.maximum(vhat, v_t)
                new_p = p - lr_t * m_t / (backend_sqrt(vhat_t) + self.epsilon)
                vhat.assign(vhat_t)
            else:
                new_p = p - lr_t * m_t / (backend_sqrt(v_t) + self.epsilon)
            m.assign(m_t)
            v.assign(v_t)
            self._assign(p, new_p)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), beta_1=self._float(self.beta_1),
                    beta_2=self._float(self.beta_2), decay=self._float(self.decay), epsilon=self.epsilon,
                    amsgrad=self.amsgrad)
