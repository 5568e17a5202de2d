"""Which of the optimizer's variables an `OptimizerState`'s variables are.

Used by every v1-generation optimizer (Keras `optimizer_v1` classes and `TFOptimizer`) when
state is restored into it. The pairing is `keras_opt_migrate.matching.match`'s:

* by name (normalised across generations): every variable the optimizer updates has one
  counterpart in the state;
* by build order: the state's variables, in the model's trainable order, are the optimizer's
  variables in the order it was built with; every shape must agree.

A mapping is refused (MappingError) when it would be a guess: only some names match (a
different model, or renamed layers), names are not unique, or the order is not proven by
shapes (two variables share a shape, so a permutation would also fit) and the caller did
not confirm the order by passing `var_list`.
"""

from ... import matching

variable_name = matching.variable_name


def match_variables(state, params, confirmed=False):
    """For each of `params`, the name of the state variable it is. Returns (names, method).

    confirmed: the caller passed `params` explicitly as the model's trainable variables in the
    state's order, so build order need not be proven by shapes. The state may hold variables
    the optimizer does not update (skipped); every one of `params` must be paired.
    """
    params = list(params)
    found = matching.match(matching.sources(state.variables), matching.targets(params), confirmed=confirmed,
                           require_all_targets=True, allow_unmatched_sources=True,
                           what=("the state", "the optimizer"))
    names = [None] * len(params)
    for s, t in found.pairs:
        names[t] = state.variables[s].name
    return names, "build_order" if found.method == "build order" else "by_name"
