"""`reshape_weights`: move a `get_weights()`-style list between generations' orders.

A weight list is positional: Keras v1 `weights`, OptimizerV2 `get_weights()`, the 2.11+
optimizer's and Keras 3's `variables` each order (and pad) the same state differently.
The list is read into the schema by replaying the source generation's build order over
the model variables' shapes, converted with `migrate`, and laid out again in the target's
order, so `target_optimizer.set_weights(reshape_weights(source_optimizer.get_weights(), ...))`
works across versions.
"""

import numpy as np

from .formats.mapping import attach_positional, canonical_config
from .migrate import migrate
from .optimizers.registry import get_spec
from .optimizers.spec import positional_layout
from .schema import OptimizerState, VariableSpec, materialize


def reshape_weights(weights, *, optimizer, source, target, var_shapes, config=None, partial=False,
                    return_report=False):
    """Convert a weight list from generation `source` to generation `target`.

    weights: the source optimizer's list (`get_weights()` / `[v.numpy() for v in variables]`).
    optimizer: the algorithm (`"adam"`, ...); var_shapes: the model's trainable variable shapes
    in build order; config: the hyperparameters that decide either layout (amsgrad, momentum,
    centered, use_ema, a schedule ...). Raises MappingError when the list does not fit the source
    layout or when state would be lost (unless `partial=True`). With `return_report=True`
    returns (list, ConversionReport).
    """
    spec = get_spec(optimizer)
    variables = [VariableSpec("variable_%d" % i, tuple(shape)) for i, shape in enumerate(var_shapes)]
    state = OptimizerState(spec.name, source, canonical_config(config), None, variables)
    tensors = [("weights[%d]" % i, np.asarray(w)) for i, w in enumerate(weights)]
    attach_positional(state, spec, source, tensors, origin="weights", what="weights")
    converted, report = migrate(state, target, partial=partial)
    out = []
    target_spec = get_spec(converted.optimizer)
    for entry in positional_layout(target_spec, target, converted.config, var_shapes):
        if entry.kind == "slot":
            value = materialize(converted.slots[variables[entry.var_index].name][entry.name])
        elif entry.name == "iterations":
            value = np.asarray(converted.iterations or 0, dtype=np.int64)
        elif entry.name in converted.extra:
            value = materialize(converted.extra[entry.name])
        else:
            value = np.asarray(converted.config.get(entry.name, 0.0), dtype=entry.dtype)
        out.append(np.asarray(value).reshape(entry.shape).astype(value.dtype, copy=False))
    return (out, report) if return_report else out
