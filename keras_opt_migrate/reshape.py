"""`reshape_weights`: move a `get_weights()`-style list between generations' orders.

A weight list is positional: Keras v1 `weights`, OptimizerV2 `get_weights()`, the 2.11+
optimizer's and Keras 3's `variables` each order (and pad) the same state differently.
The list is read into the schema by replaying the source generation's build order over
the model variables' shapes, converted with `migrate`, and laid out again in the target's
order, so `target_optimizer.set_weights(reshape_weights(source_optimizer.get_weights(), ...))`
works across versions.
"""

import numpy as np

from .errors import MappingError
from .formats.mapping import attach_positional, canonical_config
from .migrate import ReportItem, migrate
from .optimizers.registry import get_spec
from .optimizers.spec import LAYOUT_FLAGS, flag_configs, positional_layout
from .schema import OptimizerState, VariableSpec, materialize


def reshape_weights(weights, *, optimizer, source, target, var_shapes, config=None, partial=False,
                    return_report=False):
    """Convert a weight list from generation `source` to generation `target`.

    weights: the source optimizer's list (`get_weights()` / `[v.numpy() for v in variables]`).
    optimizer: the algorithm (`"adam"`, ...); var_shapes: the model's trainable variable shapes
    in build order; config: hyperparameters that decide either layout (use_ema, a schedule ...).
    The layout switches the list itself proves (amsgrad, momentum > 0, centered, ClippyAdagrad's
    exported clipping factors) need not be given: where exactly one of their combinations lays
    the source out with the list's count and shapes, that one is used and the report says so;
    where several do, MappingError names them. Raises MappingError when the list does not fit
    the source layout or when state would be lost (unless `partial=True`). With
    `return_report=True` returns (list, ConversionReport).
    """
    spec = get_spec(optimizer)
    variables = [VariableSpec("variable_%d" % i, tuple(shape)) for i, shape in enumerate(var_shapes)]
    config = canonical_config(config)
    shapes = [tuple(np.shape(w)) for w in weights]
    inferred = infer_layout_flags(spec, source, config, [tuple(s) for s in var_shapes], shapes)
    state = OptimizerState(spec.name, source, dict(config, **{k: v for k, (v, _) in inferred.items()}), None,
                           variables)
    tensors = [("weights[%d]" % i, np.asarray(w)) for i, w in enumerate(weights)]
    attach_positional(state, spec, source, tensors, origin="weights", what="weights")
    converted, report = migrate(state, target, partial=partial)
    for i, (flag, (value, why)) in enumerate(sorted(inferred.items())):
        report.items.insert(i, ReportItem("derived", "config", flag, detail="%r: %s" % (value, why)))
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


def _describe(flags):
    return ", ".join("%s%s" % (k, ">0" if k == "momentum" and v else "=%r" % (0 if k == "momentum" else v))
                     for k, v in sorted(flags.items()))


def infer_layout_flags(spec, generation, config, var_shapes, shapes):
    """{flag: (value, why)} for the layout switches (`LAYOUT_FLAGS`) `config` leaves open and a list
    of `shapes` decides: the one combination whose replayed build order has the list's count and
    shapes. Only switches that change this algorithm's layout are returned. A numeric switch
    (momentum) is proven > 0 but not its value: a stand-in keeps the layout, and the report says the
    value is not output. MappingError when several layouts fit; {} when none does (the caller's
    shape check then reports the mismatch against the given config).
    """
    fixed = {k: config[k] for k in LAYOUT_FLAGS if k in config}
    fits = {}
    for flags in flag_configs(fixed):
        entries = tuple(positional_layout(spec, generation, dict(config, **flags), var_shapes))
        if [tuple(e.shape) for e in entries] == list(shapes):
            fits.setdefault(entries, flags)
    if not fits:
        return {}
    if len(fits) > 1:
        options = []
        for entries, flags in fits.items():
            decisive = {k: v for k, v in flags.items() if k not in fixed and _decides(spec, generation, config,
                                                                                        flags, k, var_shapes)}
            slots = list(dict.fromkeys(e.name for e in entries if e.kind == "slot"))
            options.append("%s (%s)" % (_describe(decisive) or "the given config", ", ".join(slots) or "no slots"))
        raise MappingError(
            "weights: %d layouts of the %s %s list have its %d entries of these shapes: %s; pass config= with the "
            "values of %s" % (len(fits), generation, spec.name, len(shapes), "; ".join(options),
                              ", ".join(sorted(k for k in LAYOUT_FLAGS if k not in fixed))))
    (entries, flags), = fits.items()
    out = {}
    for key, value in flags.items():
        if key in fixed or not _decides(spec, generation, config, flags, key, var_shapes):
            continue
        why = ("only the %s layout of the %s %s list has its %d entries of these shapes"
               % (_describe({key: value}), generation, spec.name, len(shapes)))
        if key == "momentum" and value:
            why += ("; the list proves momentum > 0, not its value: %r stands in and is not output "
                    "(pass config={'momentum': ...} for a report with the real value)" % value)
        out[key] = (value, why)
    return out


def _decides(spec, generation, config, flags, key, var_shapes):
    """Whether switching `key` (the rest of `flags` kept) changes the layout."""
    flipped = dict(flags, **{key: (0.0 if key == "momentum" else False) if flags[key] else LAYOUT_FLAGS[key]})
    return (positional_layout(spec, generation, dict(config, **flags), var_shapes)
            != positional_layout(spec, generation, dict(config, **flipped), var_shapes))
