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


def from_state(state, generation=None, **overrides):
    """Our v1-generation optimizer for `state`, holding it until its slots exist (first step or `build`).

    generation: "v1" for the Keras optimizer_v1 class of the algorithm, "tf1" for a `TFOptimizer`
    around the TF1 optimizer; default: "tf1" for TF1 state, else "v1".
    overrides: constructor arguments that replace the state's.
    """
    generation = generation or ("tf1" if state.generation == "tf1" else "v1")
    if generation == "tf1":
        return TFOptimizer.from_state(state, **overrides)
    if generation != "v1":
        raise UnknownOptimizerError("optimizers.v1 builds generation 'v1' or 'tf1', not %r" % (generation,))
    cls = CLASSES.get(state.optimizer)
    if cls is None:
        raise UnknownOptimizerError(
            "Keras v1 has no %r optimizer; expected one of: %s" % (state.optimizer, ", ".join(sorted(CLASSES))))
    return cls.from_state(state, **overrides)


def is_v1_optimizer(optimizer):
    return isinstance(optimizer, (Optimizer, TFOptimizer))


def restore_state(optimizer, state, var_list=None):
    """Put `state` into one of our v1 optimizers (see `Optimizer.restore_state`)."""
    return optimizer.restore_state(state, var_list=var_list)
