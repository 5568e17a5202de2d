"""The v1 generation, eager: Keras `optimizer_v1` classes and `TFOptimizer`.

`SGD`, `RMSprop`, `Adagrad`, `Adadelta`, `Adam`, `Adamax`, `Nadam` reproduce Keras'
graph-mode-only `optimizer_v1` classes (arguments, `weights` order, update arithmetic);
`TFOptimizer` wraps a `tf.compat.v1.train` optimizer as Keras did, and adds what Keras'
wrapper lacked: its state, in both TF1 checkpoint styles and as an `OptimizerState`.
"""

from ...errors import UnknownOptimizerError
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .base import Optimizer
from .nadam import Nadam
from .rmsprop import RMSprop
from .sgd import SGD
from .tfoptimizer import TFOptimizer

GENERATION = "v1"

# canonical algorithm -> Keras v1 class
CLASSES = {cls.SPEC.name: cls for cls in (SGD, RMSprop, Adagrad, Adadelta, Adam, Adamax, Nadam)}

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam", "TFOptimizer",
           "CLASSES", "from_state", "restore_state"]


def from_state(state, **overrides):
    """Our v1-generation optimizer for `state`: a `TFOptimizer` for TF1 state, else the Keras v1 class.

    The tensors are restored once the optimizer knows its variables (first step or `build`).
    """
    if state.generation == "tf1":
        return TFOptimizer.from_state(state, **overrides)
    cls = CLASSES.get(state.optimizer)
    if cls is None:
        raise UnknownOptimizerError(
            "Keras v1 has no %r optimizer; expected one of: %s" % (state.optimizer, ", ".join(sorted(CLASSES))))
    return cls.from_state(state, **overrides)


def restore_state(optimizer, state, var_list=None):
    """Put `state` into one of our v1 optimizers (see `Optimizer.restore_state`)."""
    return optimizer.restore_state(state, var_list=var_list)
