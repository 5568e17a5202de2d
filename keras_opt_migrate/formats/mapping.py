"""Attaching tensors read from a file to (model variable, canonical slot) names.

Two ways, used by every adapter:
  * `attach_positional`: the file has a positional list (2.11+ `_variables/N`, `.keras`
    `optimizer/vars/N`, a v1 weight list). The generation's build order is replayed over the
    model's variables (`spec.positional_layout`) and every shape is checked. Whether the
    shapes *prove* the order (no two variables share a shape, so a permutation would show)
    is recorded; an unproven order is a warning, a contradiction an error.
  * `attach_named`: the file names each slot's variable (legacy h5 names, slot edges,
    TF1 `<var>/Adam_1` keys); the caller resolves names, this checks shapes.
"""

import numpy as np

from .. import matching
from ..errors import MappingError
from ..optimizers.spec import positional_layout
from ..schema import VariableSpec, materialize
from .base import counter_value


# Spellings of other generations -> the Keras names the schema uses (Keras v1 `lr`; TF1's
# `beta1` / `beta2` (AdamOptimizer) and `use_nesterov` (MomentumOptimizer)).
CONFIG_SPELLINGS = {"lr": "learning_rate", "beta1": "beta_1", "beta2": "beta_2", "use_nesterov": "nesterov"}


def canonical_config(config):
    """Keras config with the v1 spelling `lr` and TF1's `beta1` / `beta2` turned into Keras names."""
    config = dict(config or {})
    for own, keras in CONFIG_SPELLINGS.items():
        if own in config and keras not in config:
            config[keras] = config.pop(own)
    return config


strip_device_suffix = matching.strip_suffix  # `hidden/kernel:0` -> `hidden/kernel`


def shapes_prove_order(variables):
    """True when no two variables share a shape, so any mis-ordering would change a shape."""
    shapes = [tuple(v.shape) for v in variables]
    return len(set(shapes)) == len(shapes)


def attach_positional(state, spec, generation, tensors, origin, prefix=True, what="optimizer variables"):
    """Fill `state.slots` / `state.extra` from a positional list of (key, tensor).

    `state.variables` and `state.config` must already be set. Raises MappingError with the
    first disagreement when the count or a shape contradicts the replayed build order.
    """
    variables = state.variables
    layout = positional_layout(spec, generation, state.config, [v.shape for v in variables],
                               [v.dtype for v in variables], prefix=prefix)
    if len(layout) != len(tensors):
        fewer = [k for k in range(1, len(variables))
                 if len(positional_layout(spec, generation, state.config, [v.shape for v in variables[:k]],
                                          [v.dtype for v in variables[:k]], prefix=prefix)) == len(tensors)]
        subset = (" (the count fits %d of the %d variables: the optimizer was built over a subset, e.g. the "
                  "trainable ones, and nothing in the file proves which)" % (fewer[0], len(variables))) if fewer else ""
        raise MappingError(
            "%s: %s %s over %d model variables should have %d %s, the file has %d%s; "
            "pass the model's trainable variables (variables=..., CLI --variables) or the optimizer's config"
            % (origin, generation, spec.name, len(variables), len(layout), what, len(tensors), subset))
    problems = []
    for i, (entry, (key, tensor)) in enumerate(zip(layout, tensors)):
        shape = tuple(tensor.shape)
        if shape != tuple(entry.shape):
            where = ("%s of %s" % (entry.name, variables[entry.var_index].name)
                     if entry.kind == "slot" else entry.name)
            problems.append("position %d (%s) should be %s with shape %s, found %s"
                            % (i, key, where, tuple(entry.shape), shape))
    if problems:
        raise MappingError("%s: the %s build order of %s does not fit the file: %s%s"
                           % (origin, generation, spec.name, "; ".join(problems[:3]),
                              " (and %d more)" % (len(problems) - 3) if len(problems) > 3 else ""))
    keys = state.source.setdefault("keys", {})
    for entry, (key, tensor) in zip(layout, tensors):
        if entry.kind == "slot":
            var = variables[entry.var_index].name
            state.slots.setdefault(var, {})[entry.name] = tensor
            keys["slots/%s/%s" % (var, entry.name)] = key
        elif entry.name == "iterations":
            state.iterations = counter_value(materialize(tensor), origin, what=key)
            keys["iterations"] = key
        else:
            state.extra[entry.name] = tensor
            keys["extra/%s" % entry.name] = key
    proven = shapes_prove_order(variables)
    state.source["mapping"] = {"method": "build_order", "proven_by_shapes": proven}
    if not proven:
        state.warnings.append(
            "slots were attached by %s build order; some model variables share a shape, so the file "
            "cannot prove the order: check that the variables are in the model's trainable order" % generation)
    return state


def attach_named(state, entries, origin):
    """Fill slots from (variable name, canonical slot, key, tensor) with shape checks.

    A slot whose shape differs from its variable's is kept (so `audit` can report it) and
    recorded in `source["shape_mismatches"]`.
    """
    by_name = {v.name: v for v in state.variables}
    keys = state.source.setdefault("keys", {})
    for var_name, slot, key, tensor in entries:
        if var_name not in by_name:
            raise MappingError("%s: %s is a slot of %r, which is not a model variable in the file"
                               % (origin, key, var_name))
        if slot in state.slots.get(var_name, {}):
            raise MappingError("%s: two tensors claim slot %r of %r (%s and %s)"
                               % (origin, slot, var_name, keys.get("slots/%s/%s" % (var_name, slot)), key))
        _check_slot_dtype(by_name[var_name], slot, key, tensor, origin)
        state.slots.setdefault(var_name, {})[slot] = tensor
        keys["slots/%s/%s" % (var_name, slot)] = key
    state.source.setdefault("mapping", {"method": "by_name", "proven_by_shapes": True})
    return state


def check_same_slots(state, origin):
    """For optimizers that build the same slots for every variable (TF1's): a variable lacking one is corrupt.

    (Not for every optimizer: Adafactor factors only variables of rank 2 and more.)
    """
    kinds = {frozenset(per) for per in state.slots.values() if per}
    if len(kinds) > 1:
        full = max(kinds, key=len)
        short = sorted((v, sorted(full - set(per))) for v, per in state.slots.items() if per and set(per) != full)
        raise MappingError("%s: the variables keep different slots: %s lacks %s, which %d other variable(s) keep"
                           % (origin, short[0][0], ", ".join(short[0][1]) or "nothing",
                              sum(1 for per in state.slots.values() if set(per) == full)))


def _check_slot_dtype(variable, slot, key, tensor, origin):
    """A floating-point variable's slot holds floating-point values (an int32 moment is corrupt)."""
    try:
        want, got = np.dtype(variable.dtype), np.dtype(tensor.dtype)
    except TypeError:
        return  # dtypes numpy does not know (bfloat16 names): nothing to compare
    if want.kind == "f" and got.kind not in "fV":
        raise MappingError("%s: slot %r of %s (%s) holds %s values; the variable is %s"
                           % (origin, slot, variable.name, key, got, want))


def variables_from(pairs):
    """[VariableSpec] from (name, shape, dtype) triples."""
    return [VariableSpec(name, tuple(shape), dtype) for name, shape, dtype in pairs]
