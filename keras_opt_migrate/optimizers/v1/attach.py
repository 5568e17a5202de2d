"""Which of the optimizer's variables an `OptimizerState`'s variables are.

Used by every v1-generation optimizer (Keras `optimizer_v1` classes and `TFOptimizer`) when
state is restored into it. Two ways, tried in this order:

* by name: every variable the optimizer updates has a unique name that the state also has;
* by build order: the state's variables, in the model's trainable order, are the optimizer's
  variables in the order it was built with; every shape must agree.

A mapping is refused (MappingError) when it would be a guess: only some names match (a
different model, or renamed layers), names are not unique, or the order is not proven by
shapes (two variables share a shape, so a permutation would also fit) and the caller did
not confirm the order by passing `var_list`.
"""

from ...errors import MappingError


def variable_name(var):
    """A model variable's name without the `:0` device suffix (Keras 3 variables: their path)."""
    name = getattr(var, "path", None) or getattr(var, "name", None) or ""
    head, sep, tail = str(name).rpartition(":")
    return head if sep and tail.isdigit() else str(name)


def _shape(var):
    return tuple(int(d) for d in var.shape)


def match_variables(state, params, confirmed=False):
    """For each of `params`, the name of the state variable it is. Returns (names, method).

    confirmed: the caller passed `params` explicitly as the model's trainable variables in the
    state's order, so build order need not be proven by shapes.
    """
    own = [variable_name(p) for p in params]
    theirs = state.variable_names
    shapes = {v.name: tuple(v.shape) for v in state.variables}
    unique = len(set(own)) == len(own) and len(set(theirs)) == len(theirs)
    matched = [n for n in own if n in shapes]
    if unique and own and len(matched) == len(own):
        problems = ["%s has shape %s, the state's %s" % (n, _shape(p), shapes[n])
                    for n, p in zip(own, params) if _shape(p) != shapes[n]]
        if problems:
            raise MappingError("the state's variables match the optimizer's by name but not by shape: %s"
                               % "; ".join(problems))
        return own, "by_name"
    if matched and not confirmed:
        missing = [n for n in own if n not in shapes]
        raise MappingError(
            "ambiguous mapping: %d of the optimizer's %d variables have a namesake in the state, %d do not "
            "(%s); pass var_list=[...] (the model's trainable variables in the state's order) to attach by "
            "build order" % (len(matched), len(own), len(missing), ", ".join(missing[:5])))
    if len(theirs) != len(own):
        raise MappingError(
            "the state holds %d variables (%s), the optimizer updates %d (%s); cannot attach by build order"
            % (len(theirs), ", ".join(theirs[:5]), len(own), ", ".join(own[:5])))
    problems = ["position %d: the state's %s has shape %s, the optimizer's %s %s"
                % (i, t, shapes[t], o, _shape(p)) for i, (t, o, p) in enumerate(zip(theirs, own, params))
                if shapes[t] != _shape(p)]
    if problems:
        raise MappingError("the state's variables do not fit the optimizer's in build order: %s"
                           % "; ".join(problems[:3]))
    own_shapes = [_shape(p) for p in params]
    if not confirmed and len(set(own_shapes)) != len(own_shapes):
        dup = sorted({s for s in own_shapes if own_shapes.count(s) > 1})
        raise MappingError(
            "ambiguous mapping: the names differ (state %s..., optimizer %s...) and several variables share "
            "a shape (%s), so build order is not proven; pass var_list=[...] in the state's order to confirm"
            % (theirs[0], own[0], ", ".join(str(s) for s in dup)))
    return list(theirs), "build_order"
