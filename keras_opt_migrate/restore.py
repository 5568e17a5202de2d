"""`restore_into`: put saved optimizer state into a live optimizer.

Dispatch is on the optimizer's type through `RESTORERS`, an ordered list of
(predicate, function); our own v2 and 2.11+ optimizers are handled here, and support for
real tf_keras / Keras 3 optimizers is one more entry (`register_restorer`).
"""

import os

from .errors import KerasOptMigrateError
from .schema import OptimizerState

RESTORERS = []


def register_restorer(predicate, restore, first=False):
    """Handle optimizers for which `predicate(optimizer)` is true with `restore(opt, state, var_list)`."""
    entry = (predicate, restore)
    RESTORERS.insert(0, entry) if first else RESTORERS.append(entry)


def _as_state(source):
    if isinstance(source, OptimizerState):
        return source
    if isinstance(source, (str, os.PathLike)):
        from .api import load_state
        return load_state(source)
    raise KerasOptMigrateError("source must be a path or an OptimizerState; received %r" % type(source).__name__)


def restore_into(optimizer, source, var_list=None):
    """Restore `source` (a path readable by `load_state`, or an `OptimizerState`) into `optimizer`.

    The state must be of the optimizer's algorithm. With `var_list` (the model's trainable
    variables in build order) the slots are created and filled now; without it the state is
    held and attached when the optimizer creates its slots (the first `apply_gradients`).
    Slots attach by variable name, or by build order when the shapes agree; anything
    ambiguous raises `MappingError` and nothing is applied. Returns the `OptimizerState`.
    """
    state = _as_state(source)
    for predicate, restore in RESTORERS:
        if predicate(optimizer):
            restore(optimizer, state, var_list)
            return state
    raise KerasOptMigrateError("restore_into does not support %s optimizers yet; expected one of "
                               "keras_opt_migrate.optimizers.v2 / .experimental" % type(optimizer).__name__)


def _ours(optimizer):
    from .optimizers.experimental.base import Optimizer
    from .optimizers.v2.base import OptimizerV2
    return isinstance(optimizer, (OptimizerV2, Optimizer))


def _restore_ours(optimizer, state, var_list):
    from .optimizers.state_io import check_algorithm
    check_algorithm(optimizer, state)
    optimizer._pending_state = state
    optimizer._attach_pending_state(var_list)


register_restorer(_ours, _restore_ours)


# -- v1 generation (Keras optimizer_v1 classes, TFOptimizer): keras_opt_migrate.optimizers.v1 --
def _ours_v1(optimizer):
    return type(optimizer).__module__.startswith(__package__ + ".optimizers.v1.")


def _restore_ours_v1(optimizer, state, var_list):
    optimizer.restore_state(state, var_list=var_list)


register_restorer(_ours_v1, _restore_ours_v1)


# -- real tf_keras (legacy, 2.11+) and Keras 3 optimizers: keras_opt_migrate.restore_keras --
def _real_keras(optimizer):
    from .restore_keras import is_real_keras_optimizer
    return is_real_keras_optimizer(optimizer)


def _restore_real_keras(optimizer, state, var_list):
    from .restore_keras import restore
    restore(optimizer, state, var_list)


register_restorer(_real_keras, _restore_real_keras)
