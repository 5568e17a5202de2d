"""`restore_into`: put saved optimizer state into a live optimizer.

Dispatch is on the optimizer's type through `RESTORERS`, an ordered list of
(predicate, function); our own v2 and 2.11+ optimizers are handled here, and support for
real tf_keras / Keras 3 optimizers is one more entry (`register_restorer`).
"""

import os

from .errors import FormatError, KerasOptMigrateError, MappingError
from .schema import OptimizerState

RESTORERS = []


def register_restorer(predicate, restore, first=False, algorithm=None):
    """Handle optimizers for which `predicate(optimizer)` is true with `restore(opt, state, var_list, model)`.

    algorithm(optimizer) -> the registered algorithm name, the hint for files that cannot tell
    algorithms apart (a legacy Adam checkpoint reads as Adam, LazyAdam or Adamax).
    """
    entry = (predicate, restore, algorithm)
    RESTORERS.insert(0, entry) if first else RESTORERS.append(entry)


def load_for(source, algorithm=None, variables=None):
    """The state of `source` (a path or an `OptimizerState`) for an optimizer of `algorithm`.

    A file that cannot tell algorithms apart is read again with the target's algorithm as the
    hint; the file must still fit it (`load_state` checks), and the hint is recorded. A
    positional file that does not record which model variables its optimizer was built over (a
    `.weights.h5` of a model with BatchNormalization) is read once more with `variables` (the
    target model's trainable variables) as the hint, count and shapes checked.
    """
    if isinstance(source, OptimizerState):
        return _as_target(source, algorithm)
    if not isinstance(source, (str, os.PathLike)):
        raise KerasOptMigrateError("source must be a path or an OptimizerState; received %r" % type(source).__name__)
    from .api import load_state
    try:
        return _as_target(load_state(source), algorithm)
    except (MappingError, FormatError) as unhinted:  # e.g. a `.weights.h5` names no algorithm at all
        if not algorithm:
            raise
        try:
            try:
                state = load_state(source, optimizer=algorithm)
            except (MappingError, FormatError):
                if variables is None:
                    raise
                state = load_state(source, optimizer=algorithm, variables=variables)
        except MappingError as e:
            raise MappingError("%s (read without a hint: %s)" % (e, unhinted)) from e
        except FormatError as e:
            raise e from unhinted
        state.source["algorithm_from"] = "the target optimizer (%s)" % algorithm
        return state


def _as_target(state, algorithm):
    """A state that cannot tell its algorithm (`state.candidates`) read as the target's, when that is
    one of them (the same tensors under its slot names), else MappingError naming the candidates;
    any other state as it is."""
    if not (algorithm and state.ambiguous):
        return state
    from .candidates import as_candidate
    out = as_candidate(state, algorithm)
    out.source = dict(out.source, algorithm_from="the target optimizer (%s), one of the file's candidates %s"
                      % (algorithm, ", ".join(state.candidates)))
    return out


def _entry(optimizer):
    for entry in RESTORERS:
        if entry[0](optimizer):
            return entry
    raise KerasOptMigrateError("restore_into does not support %s optimizers yet; expected one of "
                               "keras_opt_migrate.optimizers.v1 / .v2 / .experimental, or a tf_keras / Keras 3 "
                               "optimizer" % type(optimizer).__name__)


def restore_into(optimizer, source, var_list=None, model=None):
    """Restore `source` (a path readable by `load_state`, or an `OptimizerState`) into `optimizer`.

    The state must be of the optimizer's algorithm; a file that cannot tell algorithms apart
    takes it from `optimizer`. With `var_list` (the model's trainable variables in build order)
    or `model` (its trainable variables, and its structure to prove the pairing where names do
    not) the slots are created and filled now; without either the state is held and attached
    when the optimizer creates its slots (the first `apply_gradients`). Variables are paired by
    `matching.match`; anything unproven raises `MappingError` naming what could not be told
    apart, and nothing is applied. Returns the `OptimizerState`.
    """
    _, restore, algorithm = _entry(optimizer)
    state = load_for(source, algorithm(optimizer) if algorithm else None,
                     list(model.trainable_variables) if model is not None else None)
    restore(optimizer, state, var_list, model)
    return state


def _ours(optimizer):
    from .optimizers.experimental.base import Optimizer
    from .optimizers.v2.base import OptimizerV2
    return isinstance(optimizer, (OptimizerV2, Optimizer))


def _restore_ours(optimizer, state, var_list, model=None):
    from .optimizers.state_io import check_algorithm
    check_algorithm(optimizer, state)
    optimizer._pending_state = state
    optimizer._attach_pending_state(var_list if var_list is not None or model is None
                                    else list(model.trainable_variables))


def _own_algorithm(optimizer):
    spec = getattr(optimizer, "SPEC", None)
    return getattr(spec, "name", None)


register_restorer(_ours, _restore_ours, algorithm=_own_algorithm)


# -- v1 generation (Keras optimizer_v1 classes, TFOptimizer): keras_opt_migrate.optimizers.v1 --
def _ours_v1(optimizer):
    return type(optimizer).__module__.startswith(__package__ + ".optimizers.v1.")


def _restore_ours_v1(optimizer, state, var_list, model=None):
    if var_list is None and model is not None:
        var_list = list(model.trainable_variables)
    optimizer.restore_state(state, var_list=var_list)


register_restorer(_ours_v1, _restore_ours_v1, algorithm=_own_algorithm)


# -- real tf_keras (legacy, 2.11+) and Keras 3 optimizers: keras_opt_migrate.restore_keras --
def _real_keras(optimizer):
    from .restore_keras import is_real_keras_optimizer
    return is_real_keras_optimizer(optimizer)


def _restore_real_keras(optimizer, state, var_list, model=None):
    from .restore_keras import restore
    restore(optimizer, state, var_list, model)


def _real_keras_algorithm(optimizer):
    from .restore_keras import algorithm
    return algorithm(optimizer)


register_restorer(_real_keras, _restore_real_keras, algorithm=_real_keras_algorithm)
