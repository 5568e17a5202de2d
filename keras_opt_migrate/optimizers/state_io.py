"""Our optimizers <-> `OptimizerState`: export by canonical slot name, attach by name or order.

Each of our optimizers exposes `slot_variables()` -> [(model variable, {canonical slot:
slot variable})] and `extra_variables()` -> {canonical extra: variable}; everything here
is generation-independent.
"""

import numpy as np

from .. import matching
from ..errors import MappingError
from ..schema import OptimizerState, VariableSpec, materialize

# Algorithms whose state is interchangeable (same slots, same meaning).
COMPATIBLE = {frozenset({"adam", "lazyadam"})}


variable_name = matching.variable_name


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def export_state(optimizer):
    """The optimizer's complete state as an `OptimizerState` (numpy tensors, canonical names)."""
    variables, slots, seen = [], {}, {}
    for var, per_slot in optimizer.slot_variables():
        name = variable_name(var)
        if name in seen:  # two model variables with one name: keep both, distinguishably
            seen[name] += 1
            name = "%s_%d" % (name, seen[name])
        seen.setdefault(name, 0)
        variables.append(VariableSpec(name, tuple(var.shape), var.dtype.base_dtype.name))
        slots[name] = {canonical: np.asarray(slot.numpy()) for canonical, slot in per_slot.items()}
    extra = {k: np.asarray(v.numpy()) for k, v in optimizer.extra_variables().items()}
    return OptimizerState(
        optimizer=optimizer.SPEC.name, generation=optimizer.GENERATION, config=_plain(optimizer.get_config()),
        iterations=int(optimizer.iterations.numpy()), variables=variables, slots=slots, extra=extra,
        source={"format": "keras_opt_migrate", "class_name": type(optimizer).__name__})


def check_algorithm(optimizer, state):
    ours, theirs = optimizer.SPEC.name, state.optimizer
    if ours != theirs and frozenset({ours, theirs}) not in COMPATIBLE:
        raise MappingError("cannot restore %s state into %s (%s); expected state of the same algorithm"
                           % (theirs, type(optimizer).__name__, ours))


def match_variables(state, var_list):
    """[(model variable, state variable name)], how: paired by `matching.match`; `var_list` is taken
    to be in the state's build order (it is what the optimizer is built over), so equal shapes in
    an order that fits are accepted; anything else unproven is refused."""
    var_list = list(var_list)
    found = matching.match(matching.sources(state.variables), matching.targets(var_list), confirmed=True,
                           what=("the state", "the optimizer"))
    how = "order" if found.method == "build order" else "name"
    return [(var_list[t], state.variables[s].name) for s, t in found.pairs], how


def apply_state(optimizer, state, var_list):
    """Assign `state` to the optimizer's existing slots; all checks first, nothing half-applied."""
    check_algorithm(optimizer, state)
    pairs, how = match_variables(state, var_list)
    slots_of = {id(var): per for var, per in optimizer.slot_variables()}
    problems, assignments = [], []
    for var, name in pairs:
        ours = slots_of.get(id(var))
        if ours is None:
            ours = {c: s for v, per in optimizer.slot_variables() if v is var for c, s in per.items()}
        for canonical, value in state.slots.get(name, {}).items():
            target = ours.get(canonical)
            if target is None and _not_kept(optimizer, canonical, var):
                continue  # a placeholder our generation does not keep (Keras 3 Adafactor's scalar r/c)
            if target is None:
                problems.append("%s: no slot %r in %s" % (name, canonical, type(optimizer).__name__))
                continue
            value = materialize(value)
            if tuple(value.shape) != tuple(target.shape):
                problems.append("%s/%s: shape %s != %s" % (name, canonical, tuple(value.shape), tuple(target.shape)))
                continue
            assignments.append((target, value))
    extras = optimizer.extra_variables()
    for key, value in state.extra.items():
        if key in extras:
            assignments.append((extras[key], materialize(value)))
    if problems:
        raise MappingError("%d of %d slots could not be attached: %s" % (
            len(problems), len(problems) + len(assignments), "; ".join(problems[:8])))
    for target, value in assignments:
        target.assign(np.asarray(value, dtype=target.dtype.as_numpy_dtype))
    if state.iterations is not None:
        optimizer.iterations.assign(int(state.iterations))
    if hasattr(optimizer, "_after_state_restored"):
        optimizer._after_state_restored()
    state.source["mapping"] = how
    return how


def _not_kept(optimizer, canonical, var):
    spec = optimizer.SPEC
    if canonical not in spec.slots:
        return False
    return spec.shape_rule(canonical, tuple(var.shape), {}, optimizer.GENERATION) is None


def apply_pending_state(optimizer, var_list):
    state, optimizer._pending_state = optimizer._pending_state, None
    apply_state(optimizer, state, var_list)
