"""`restore_into` for the REAL optimizers: tf_keras legacy (OptimizerV2), tf_keras 2.11+ and Keras 3.

The kind is told by the class's module (`tf_keras...legacy`, `tf_keras...`, `keras...`); neither
tf_keras nor keras is imported here. The state is first converted to the optimizer's generation
(`migrate`), then every slot is found through the optimizer's own API:
  legacy:   `optimizer.get_slot(var, "<slot>")` after `_create_all_weights(var_list)`;
  2.11+:    the per-slot list (`_momentums`, ...) at `_index_dict[_var_key(var)]` after `build`;
  Keras 3:  the per-slot list at `_get_variable_index(var)` after `build`.
Model variables are paired with the state's by `matching.match`: names normalised across
generations, the model's structure when `model=` is given, build order only where shapes prove
it; anything unproven is refused, naming the variables it could not tell apart, unless
`var_list` is a dict {state variable name: variable}.
Everything is checked before anything is assigned. An optimizer that is not built yet keeps the
state and receives it when it builds (its first `apply_gradients`, or Keras 3 `fit`'s build), so
`model.compile(...); restore_into(model.optimizer, path); model.fit(...)` resumes.
"""

import numpy as np

from . import matching
from .errors import KerasOptMigrateError, MappingError
from .optimizers.registry import get_spec, spec_for_class
from .schema import materialize

KINDS = ("v2", "experimental", "keras3")


def optimizer_kind(optimizer):
    """'v2', 'experimental' or 'keras3' for a real tf_keras / Keras 3 optimizer, else None."""
    for klass in type(optimizer).__mro__:
        module = klass.__module__ or ""
        if module.startswith("tf_keras") or module.startswith("keras.") and "legacy" in module:
            if ".legacy" in module or klass.__name__ == "OptimizerV2":
                return "v2"
        if module.startswith("tf_keras") and klass.__name__ == "Optimizer" and "legacy" not in module:
            return "experimental"
        if module.startswith("keras.") and klass.__name__ == "BaseOptimizer":
            return "keras3"
    return None


def is_real_keras_optimizer(optimizer):
    return optimizer_kind(optimizer) is not None


def _spec(optimizer, kind):
    spec = spec_for_class(type(optimizer).__name__, kind)
    if spec is None:
        raise KerasOptMigrateError("%s.%s has no registered %s algorithm spec; restore_into cannot lay out its state"
                                   % (type(optimizer).__module__, type(optimizer).__name__, kind))
    return spec


def match(state, var_list, model=None):
    """[(model variable, state variable name)], or MappingError when it cannot be proven (`matching`)."""
    if isinstance(var_list, dict):
        missing = [n for n in var_list if n not in {v.name for v in state.variables}]
        if missing:
            raise MappingError("mapping names %s, which the state does not have (it has %s)"
                               % (missing[:3], state.variable_names[:6]))
        pairs = [(var, name) for name, var in var_list.items()]
        bad = ["%s %s vs %s %s" % (n, tuple(state.variable(n).shape), matching.variable_name(v), tuple(v.shape))
               for v, n in pairs if tuple(state.variable(n).shape) != tuple(v.shape)]
        if bad:
            raise MappingError("%d variables do not fit their state: %s" % (len(bad), "; ".join(bad[:4])))
        return pairs
    var_list = list(var_list)
    found = matching.match(matching.sources(state.variables), matching.targets(var_list, model),
                           what=("the state", "the optimizer"))
    state.source["mapping_to_target"] = found.method
    return [(var_list[t], state.variables[s].name) for s, t in found.pairs]


def _slot_variable(optimizer, kind, spec, var, canonical):
    if kind == "v2":
        try:
            return optimizer.get_slot(var, spec.names["v2"][canonical])
        except (KeyError, ValueError):
            return None
    attr = {c: a for a, c in spec.tracked.get(kind, {}).items()}.get(canonical)
    if attr is None:
        return None
    items = getattr(optimizer, attr, None)
    if not items:
        return None
    index = (optimizer._index_dict[optimizer._var_key(var)] if kind == "experimental"
             else optimizer._get_variable_index(var))
    return items[index] if index < len(items) else None


def _extra_variable(optimizer, kind, spec, canonical):
    if canonical == "u_product":
        if kind == "v2":
            for w in optimizer.weights:
                if "momentum_cache" in w.name:
                    return w
            return None
        return getattr(optimizer, "_u_product", None)
    if canonical == "learning_rate" and kind == "keras3":
        lr = getattr(optimizer, "_learning_rate", None)
        return lr if hasattr(lr, "assign") else None
    return None


def apply(optimizer, state, var_list, model=None):
    """Assign `state` (already in the optimizer's generation) to its built variables; all checks first."""
    import tensorflow as tf
    kind = optimizer_kind(optimizer)
    spec = _spec(optimizer, kind)
    pairs = match(state, var_list, model)
    assignments, problems = [], []
    for var, name in pairs:
        for canonical, value in state.slots.get(name, {}).items():
            target = _slot_variable(optimizer, kind, spec, var, canonical)
            if target is None:
                if tuple(np.shape(value)) == ():
                    continue  # a scalar placeholder (Adafactor r/c of a vector) the optimizer does not list
                problems.append("%s: no %r slot in %s" % (name, canonical, type(optimizer).__name__))
                continue
            if tuple(target.shape) != tuple(np.shape(value)):
                problems.append("%s/%s: shape %s, the optimizer's %s" % (name, canonical, np.shape(value),
                                                                       tuple(target.shape)))
                continue
            assignments.append((target, value))
    for canonical, value in state.extra.items():
        target = _extra_variable(optimizer, kind, spec, canonical)
        if target is not None:
            assignments.append((target, value))
    if problems:
        raise MappingError("%d slots could not be attached (nothing was restored): %s"
                           % (len(problems), "; ".join(problems[:6])))
    with tf.init_scope():
        for target, value in assignments:
            dtype = target.dtype.as_numpy_dtype if hasattr(target.dtype, "as_numpy_dtype") else target.dtype
            target.assign(np.asarray(materialize(value), dtype=dtype))
        if state.iterations is not None:
            optimizer.iterations.assign(int(state.iterations))


def _built(optimizer, kind):
    if kind == "v2":
        return bool(getattr(optimizer, "_slots", None))
    return bool(getattr(optimizer, "built", False) or getattr(optimizer, "_built", False))


def _defer(optimizer, kind, state, var_list, model=None):
    """Keep `state` on the optimizer and apply it right after it creates its variables."""
    method = "_create_all_weights" if kind == "v2" else "build"
    original = getattr(optimizer, method)

    def build_then_restore(variables, *args, **kwargs):
        result = original(variables, *args, **kwargs)
        pending = optimizer.__dict__.pop("_kom_pending_state", None)
        if pending is not None:
            setattr(optimizer, method, original)  # restore the class method first: nothing runs twice
            apply(optimizer, pending, var_list if var_list is not None else list(variables), model)
        return result

    optimizer.__dict__["_kom_pending_state"] = state
    object.__setattr__(optimizer, method, build_then_restore)


def algorithm(optimizer):
    """The registered algorithm name of a real tf_keras / Keras 3 optimizer (the `load_state` hint)."""
    return _spec(optimizer, optimizer_kind(optimizer)).name


def restore(optimizer, state, var_list=None, model=None):
    """Restore `state` into a real tf_keras / Keras 3 optimizer (see the module docstring).

    model: the model the optimizer trains; its structure proves the pairing where names do not
    (and, without var_list, its trainable variables are the ones the optimizer is built over).
    """
    from .migrate import migrate, unstored_hyperparameters
    kind = optimizer_kind(optimizer)
    spec = _spec(optimizer, kind)
    if var_list is None and model is not None:
        var_list = list(model.trainable_variables)
    if state.generation != kind or state.optimizer != spec.name:
        # what the file does not store (epsilon, a schedule, ...), the optimizer restored into knows
        known = unstored_hyperparameters(state, spec.name, kind, _own_config(optimizer))
        state, report = migrate(state, kind, optimizer=spec.name if get_spec(state.optimizer) is not spec else None,
                                config=known or None)
        state.source["conversion"] = report.to_json()
    if _built(optimizer, kind):
        apply(optimizer, state, var_list if var_list is not None else _built_variables(optimizer, kind), model)
    elif var_list is not None:
        match(state, var_list, model)  # refuse before the optimizer creates its variables
        variables = list(var_list.values()) if isinstance(var_list, dict) else list(var_list)
        if kind == "v2":
            optimizer._create_all_weights(variables)
        else:
            optimizer.build(variables)
        apply(optimizer, state, var_list, model)
    else:
        _defer(optimizer, kind, state, var_list, model)
    return state


def _own_config(optimizer):
    try:
        return dict(optimizer.get_config())
    except (TypeError, ValueError, NotImplementedError, AttributeError):
        return {}


def _built_variables(optimizer, kind):
    if kind == "keras3":
        return list(optimizer._trainable_variables)
    raise MappingError("the %s optimizer is already built and does not list its model variables; pass var_list "
                       "(the model's trainable variables)" % kind)
