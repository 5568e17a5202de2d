"""`OptimizerState` <-> the v1 generation's live optimizers.

Canonical slot names come from each algorithm's `AlgorithmSpec`; the mapping of the state's
variables to the optimizer's is in `attach.py`. Everything is checked before anything is
assigned: a state that does not fit is refused with one report, never half-applied.
"""

import inspect
import logging
import math

import numpy as np

from ...errors import KerasOptMigrateError, MappingError
from ...schema import OptimizerState, VariableSpec, materialize
from .attach import match_variables, variable_name

log = logging.getLogger("keras_opt_migrate")

# Other generations' spellings of the v1 constructor arguments.
V1_ALIASES = {"learning_rate": "lr", "beta1": "beta_1", "beta2": "beta_2"}


def check_algorithm(opt, state):
    if not isinstance(state, OptimizerState):
        raise KerasOptMigrateError("expected an OptimizerState; received %r" % type(state).__name__)
    if state.optimizer != opt.SPEC.name:
        raise KerasOptMigrateError(
            "cannot restore %s state into %s (algorithm %r): the algorithms differ; convert the state first"
            % (state.optimizer, type(opt).__name__, opt.SPEC.name))


def rule_warning(spec, state, own_generation, own_config):
    """A warning when the state's generation continues a trajectory differently, else None."""
    theirs = spec.update_rule(state.generation, state.config)
    ours = spec.update_rule(own_generation, own_config)
    if theirs is None or ours is None or theirs == ours:
        return None
    note = spec.rule_notes.get(ours, ours)
    return ("the state was written by the %s generation, whose %s update differs from this optimizer's "
            "(%s): the continuation will not reproduce the original run exactly"
            % (state.generation, spec.name, note))


def derive_iterations(state):
    """(iterations, how) from the counter, `global_step`, or the TF1 beta powers; (None, None) if unknown.

    TF1 Adam keeps `beta_power = beta ** (t + 1)` after t steps and no counter of its own.
    """
    if state.iterations is not None:
        return int(state.iterations), "iterations"
    if "global_step" in state.extra:
        return int(materialize(state.extra["global_step"])), "global_step"
    estimates = []
    for power, keys in (("beta1_power", ("beta1", "beta_1")), ("beta2_power", ("beta2", "beta_2"))):
        beta = next((state.config[k] for k in keys if state.config.get(k) is not None), None)
        if power not in state.extra or not isinstance(beta, (int, float)) or not 0 < beta < 1:
            continue
        value = float(materialize(state.extra[power]))
        if value > 0:  # float32 underflows to 0 after enough steps
            estimates.append(math.log(value) / math.log(beta) - 1)
    if not estimates:
        return None, None
    t = int(round(estimates[0]))
    if any(abs(e - t) > 0.25 for e in estimates):
        raise MappingError("the beta powers do not determine the step count: estimates %s; pass the step count "
                           "explicitly (state.iterations)" % ", ".join("%.3f" % e for e in estimates))
    return t, "beta_power"


def _unique_names(params):
    names, seen, renamed = [], {}, False
    for p in params:
        name = variable_name(p)
        if name in seen:
            seen[name] += 1
            name, renamed = "%s_%d" % (name, seen[name]), True
        else:
            seen[name] = 0
        names.append(name)
    return names, renamed


def variable_specs(params):
    """(VariableSpec list, warnings) for live variables; duplicate names get a `_<k>` suffix."""
    names, renamed = _unique_names(params)
    specs = [VariableSpec(n, tuple(int(d) for d in p.shape), p.dtype.name) for n, p in zip(names, params)]
    warnings = ["some variables share a name; the repeats were renamed with a _<k> suffix"] if renamed else []
    return specs, warnings


# -- Keras v1 ----------------------------------------------------------------------------

def v1_constructor_args(cls, state, overrides):
    """Constructor arguments of a v1 class from a state's config (any generation's spelling)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} | {"clipnorm", "clipvalue"}
    aliases = dict(V1_ALIASES, **getattr(cls, "STATE_ALIASES", {}))
    args, dropped = {}, []
    for key, value in state.config.items():
        own = aliases.get(key, key)
        if own in accepted and own not in args:
            args[own] = value
        elif own not in accepted and key not in ("name", "is_legacy_optimizer") and value not in (None, False, 0, 0.0):
            dropped.append(key)
    if isinstance(args.get("lr"), dict) or callable(args.get("lr")):
        raise KerasOptMigrateError(
            "%s takes a constant lr; the state's learning rate is a schedule (%s); pass lr=... to from_state"
            % (cls.__name__, args["lr"].get("class_name", "callable") if isinstance(args["lr"], dict) else "callable"))
    args.update(overrides)
    if dropped:
        log.warning("%s.from_state: the state's %s have no v1 counterpart and are ignored", cls.__name__, dropped)
    return args


def export_v1(opt):
    """The live v1 optimizer's state; `iterations` included even where the v1 weight list lacks it."""
    params = opt._params or []
    variables, warnings = variable_specs(params)
    own_names = opt.SPEC.names[opt.GENERATION]
    slots, keys = {}, {}
    for canonical, per_var in opt._slots.items():
        for i, (spec, slot) in enumerate(zip(variables, per_var)):
            if slot is not None:
                slots.setdefault(spec.name, {})[canonical] = slot.numpy()
                keys["slots/%s/%s" % (spec.name, canonical)] = "%s[%d]" % (own_names[canonical], i)
    extra = {}
    for name, attr in opt._EXTRA_ATTRIBUTES.items():
        if name != "iterations" and hasattr(opt, attr):
            extra[name] = getattr(opt, attr).numpy()
    config = dict(opt.get_config())
    config["learning_rate"] = config.pop("lr")
    return OptimizerState(
        optimizer=opt.SPEC.name, generation=opt.GENERATION, config=config,
        iterations=int(opt.iterations.numpy()), variables=variables, slots=slots, extra=extra,
        source={"format": "live", "class": "keras_opt_migrate.optimizers.v1.%s" % type(opt).__name__,
                "keys": keys}, warnings=warnings).validate()


def _is_placeholder(slot, param):
    """v1 Adam's `(1,)` vhat dummies (amsgrad off): never read, never updated."""
    return tuple(slot.shape) != tuple(param.shape)


def attach_to_v1(opt, state, params, confirmed):
    """Assign `state`'s tensors to `opt`'s (built) slots. Returns the report dict."""
    names, method = match_variables(state, params, confirmed)
    problems, plan, warnings = [], [], []
    for canonical, per_var in opt._slots.items():
        for i, slot in enumerate(per_var):
            if slot is None:
                continue
            value = state.slots.get(names[i], {}).get(canonical)
            placeholder = _is_placeholder(slot, params[i])
            if value is None:
                if not placeholder:
                    problems.append("no %s for %s" % (canonical, names[i]))
                continue
            if tuple(np.shape(value)) != tuple(slot.shape):
                problems.append("%s of %s has shape %s, this optimizer's %s"
                                % (canonical, names[i], tuple(np.shape(value)), tuple(slot.shape)))
                continue
            plan.append((slot, value))
    layout = ", ".join("%s=%s" % kv for kv in opt._layout_config().items())
    for i, name in enumerate(names):
        for canonical, value in state.slots.get(name, {}).items():
            slot = opt._slots.get(canonical, [None] * len(names))[i]
            if slot is None or (_is_placeholder(slot, params[i]) and tuple(np.shape(value)) != (1,)):
                problems.append("the state's %s of %s (shape %s) has no place in %s(%s)"
                                % (canonical, name, tuple(np.shape(value)), type(opt).__name__, layout))
    iterations, how = derive_iterations(state)
    for extra_name, attr in opt._EXTRA_ATTRIBUTES.items():
        if extra_name == "iterations" or not hasattr(opt, attr):
            continue
        if extra_name in state.extra:
            plan.append((getattr(opt, attr), state.extra[extra_name]))
        elif iterations is not None and hasattr(opt, "_recompute_extra"):
            plan.append((getattr(opt, attr), opt._recompute_extra(extra_name, iterations)))
            warnings.append("%s was not in the state; recomputed from iterations=%d" % (extra_name, iterations))
        else:
            problems.append("no %s in the state and no step count to recompute it from" % extra_name)
    if problems:
        raise MappingError("%d problem(s) restoring %s state (%s, %d variables) into %s: %s" % (
            len(problems), state.optimizer, state.generation, len(state.variables), type(opt).__name__,
            "; ".join(problems[:6]) + (" (and %d more)" % (len(problems) - 6) if len(problems) > 6 else "")))
    if iterations is None:
        warnings.append("the state records no step count; iterations stays %d" % int(opt.iterations.numpy())
                        + (" although this optimizer's step depends on it" if opt._uses_iterations() else ""))
    rule = rule_warning(opt.SPEC, state, opt.GENERATION, opt.get_config())
    if rule:
        warnings.append(rule)
    if len(names) < len(state.variables):
        warnings.append("%d of the state's variables are not updated by this optimizer and were skipped"
                        % (len(state.variables) - len(names)))
    for var, value in plan:
        var.assign(np.asarray(materialize(value), dtype=var.dtype.as_numpy_dtype))
    if iterations is not None:
        opt.iterations.assign(iterations)
    for w in warnings:
        log.warning("%s.restore_state: %s", type(opt).__name__, w)
    return {"method": method, "assigned": len(plan), "iterations": iterations, "iterations_from": how,
            "variables": dict(zip([variable_name(p) for p in params], names)), "warnings": warnings}
