"""Keras v1 `SGD`: momentum and Nesterov momentum, inverse-time `decay` of `lr`.

`weights` = `[iterations] + moments` (a `moments` slot for every variable, even with
momentum 0). The slot is Keras' velocity `v = momentum * v - lr * g`, like v2's `momentum`.
"""

from .. import sgd as algorithm
from .base import Optimizer


class SGD(Optimizer):
    SPEC = algorithm.SPEC

    def __init__(self, lr=0.01, momentum=0.0, decay=0.0, nesterov=False, **kwargs):
        super().__init__(**kwargs)
        self.iterations = self._iterations_variable()
        self.lr = self._variable(lr, "lr")
        self.momentum = self._variable(momentum, "momentum")
        self.decay = self._variable(decay, "decay")
        self.initial_decay = decay
        self.nesterov = nesterov

    def _uses_iterations(self):
        return self.initial_decay > 0

    def _apply(self, params, grads):
        lr = self._decayed_lr()
        self.iterations.assign_add(1)
        for i, (p, g) in enumerate(zip(params, grads)):
            m = self._slot("momentum", i)
            v = self.momentum * m - lr * g
            new_p = p + self.momentum * v - lr * g if self.nesterov else p + v
            m.assign(v)
            self._assign(p, new_p)

    def get_config(self):
        return dict(super().get_config(), lr=self._float(self.lr), momentum=self._float(self.momentum),
                    decay=self._float(self.decay), nesterov=self.nesterov)
