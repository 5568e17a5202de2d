"""Lion (2.13+ and Keras 3). One slot, `momentum` (the 2.11+ optimizer calls it `m`)."""

from ._lazy_tf import tf
from .spec import AlgorithmSpec, slot_major

SPEC = AlgorithmSpec(
    name="lion",
    slots=("momentum",),
    names={"experimental": {"momentum": "m"}, "keras3": {"momentum": "momentum"}},
    layouts={"experimental": lambda c: [slot_major("momentum")], "keras3": lambda c: [slot_major("momentum")]},
    update_rules={"experimental": "lion", "keras3": "lion"},
    class_names={"experimental": ("Lion",), "keras3": ("Lion",)},
    slot_init={"momentum": 0.0},
    # tf_keras Lion tracks `momentums` like SGD; Keras 3 Lion uses `_momentums`.
    tracked={"experimental": {"momentums": "momentum"}, "keras3": {"_momentums": "momentum"}},
)


# -- update math ------------------------------------------------------------------------

def update(var, m, grad, lr, beta_1, beta_2):
    """One Lion step: var -= lr * sign(beta_1 m + (1 - beta_1) g); m = beta_2 m + (1 - beta_2) g.

    Sparse gradients, as in tf_keras: m is decayed everywhere and the batch rows added, in two
    halves around the variable update.
    """
    beta_1 = tf.cast(beta_1, var.dtype)
    beta_2 = tf.cast(beta_2, var.dtype)
    if isinstance(grad, tf.IndexedSlices):
        m.assign(m * beta_1)
        m.scatter_add(tf.IndexedSlices(grad.values * (1.0 - beta_1), grad.indices))
        var.assign_sub(lr * tf.math.sign(m))
        m.assign(m * beta_2 / beta_1)
        m.scatter_add(tf.IndexedSlices(grad.values * (1.0 - beta_2 / beta_1), grad.indices))
    else:
        update_variable(var, m, grad, lr, beta_1)
        update_momentum(m, grad, beta_2)


def update_variable(var, m, grad, lr, beta_1):
    """The dense step's variable half (reads m before `update_momentum` moves it); betas cast."""
    var.assign_sub(lr * tf.math.sign(m * beta_1 + grad * (1.0 - beta_1)))


def update_momentum(m, grad, beta_2):
    """The dense step's momentum half."""
    m.assign(m * beta_2 + grad * (1.0 - beta_2))
