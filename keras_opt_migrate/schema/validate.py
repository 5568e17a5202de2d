"""One validation of an `OptimizerState`, whatever read it.

Every reader's result (`api.load_state`) and the native file (`formats/native.py`) go
through `check_state`: a value of the wrong type or range would otherwise reach code that
assumes the right one (an int64 writer given 2**64 - 1, arithmetic given a learning rate
stored as bytes). The rules:

  optimizer    a registered algorithm, under its canonical name
  generation   one of `GENERATIONS`
  iterations   None, or an integer in [0, 2**63 - 1] (what an int64 counter holds)
  config       a JSON object (str keys); each hyperparameter the algorithm's class takes is of
               the type of its default: a finite number (not a bool) where the default is a
               number, a bool where it is a bool; a learning rate may also be a schedule (dict)
  variables    unique non-empty names, shapes of non-negative integers
  slots        only for listed variables, each of the shape the algorithm gives that slot
               for its variable (the variable's own, unless its `shape_rule` says otherwise)

A violation raises `SchemaError("<file>: invalid optimizer state: <field>: <problem>")`.
"""

import math
import numbers

import numpy as np

from ..errors import KerasOptMigrateError, SchemaError, printable
from .state import GENERATIONS, tensor_shape

INT64_MAX = 2 ** 63 - 1
MAX_PROBLEMS = 3
# keys of the optimizer base classes (not per algorithm): their types
BASE_NUMBERS = ("clipnorm", "clipvalue", "global_clipnorm", "ema_momentum", "decay", "weight_decay",
                "loss_scale_factor")
BASE_BOOLS = ("use_ema", "jit_compile", "is_legacy_optimizer")
SCHEDULE_KEYS = ("learning_rate", "lr")


def is_integer(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value):
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def _describe(value):
    text = repr(value)
    return "%s (%s)" % (text if len(text) <= 60 else text[:57] + "...", type(value).__name__)


def iterations_problem(value):
    """Why `value` is no step counter, or None."""
    if value is None:
        return None
    if not is_integer(value):
        return "expected a non-negative integer, received %s" % _describe(value)
    if not 0 <= int(value) <= INT64_MAX:
        return "expected an integer in [0, 2**63 - 1] (an int64 counter), received %d" % int(value)
    return None


def hyperparameter_problem(key, value, default):
    """Why `value` cannot be hyperparameter `key` whose class default is `default`, or None."""
    if value is None:
        return None
    if isinstance(default, bool) or key in BASE_BOOLS:
        if not isinstance(value, (bool, np.bool_)):
            return "expected true or false, received %s" % _describe(value)
        return None
    if is_number(default) or default == "required" or key in BASE_NUMBERS:
        if key in SCHEDULE_KEYS and isinstance(value, dict):
            return None  # a serialized schedule
        if not is_number(value):
            return "expected a number, received %s" % _describe(value)
        if not math.isfinite(float(value)):
            return "expected a finite number, received %r" % float(value)
    return None


def config_problems(config, algorithm, generation, field="config"):
    """[(field, problem)] of a config for `generation`'s `algorithm` (empty when it is sound)."""
    if not isinstance(config, dict):
        return [(field, "expected a JSON object of hyperparameters, received %s" % type(config).__name__)]
    from ..migrate import HYPERPARAMETER_DEFAULTS, hyperparameter_defaults  # migrate imports the adapters
    try:
        defaults = hyperparameter_defaults(algorithm, generation)
    except KerasOptMigrateError:
        defaults = {}
    # a generation whose default is None (Keras v1's epsilon: the backend's) takes the Keras type
    keras = HYPERPARAMETER_DEFAULTS.get(algorithm, {})
    defaults = {k: keras.get(k) if v is None else v for k, v in defaults.items()}
    out = []
    for key, value in config.items():
        if not isinstance(key, str):
            out.append((field, "keys must be strings, received %s" % _describe(key)))
            continue
        default = defaults.get(key, defaults.get("learning_rate") if key == "lr" else None)
        problem = hyperparameter_problem(key, value, default)
        if problem:
            out.append(("%s.%s" % (field, key), problem))
    return out


def _spec(name):
    from ..optimizers.registry import get_spec
    return get_spec(name)


def state_problems(state):
    """[(field, problem)] of every rule `state` breaks (see the module doc)."""
    out = []
    spec = None
    if not isinstance(state.optimizer, str) or not state.optimizer:
        out.append(("optimizer", "expected an algorithm name, received %s" % _describe(state.optimizer)))
    else:
        try:
            spec = _spec(state.optimizer)
        except KerasOptMigrateError as e:
            out.append(("optimizer", str(e)))
    if state.generation not in GENERATIONS:
        out.append(("generation", "expected one of %s, received %s" % (", ".join(GENERATIONS),
                                                                      _describe(state.generation))))
    problem = iterations_problem(state.iterations)
    if problem:
        out.append(("iterations", problem))
    for i, name in enumerate(getattr(state, "candidates", None) or []):
        try:
            _spec(name)
        except KerasOptMigrateError as e:
            out.append(("candidates[%d]" % i, str(e)))
    out += config_problems(state.config, spec.name if spec else None, state.generation)
    shapes = {}
    for i, var in enumerate(state.variables):
        name = getattr(var, "name", None)
        if not isinstance(name, str) or not name:
            out.append(("variables[%d].name" % i, "expected a non-empty name, received %s" % _describe(name)))
            continue
        if name in shapes:
            out.append(("variables[%d].name" % i, "%r is listed twice" % name))
        shape = tuple(getattr(var, "shape", ()))
        if not all(is_integer(d) and d >= 0 for d in shape):
            out.append(("variables[%d].shape" % i, "expected non-negative integer dimensions, received %s"
                        % (list(shape),)))
        shapes[name] = shape
    if not isinstance(state.slots, dict):
        return out + [("slots", "expected {variable: {slot: tensor}}, received %s" % type(state.slots).__name__)]
    config = state.config if isinstance(state.config, dict) else {}
    for var_name, per_var in state.slots.items():
        if var_name not in shapes:
            out.append(("slots[%r]" % (var_name,), "a slot for a variable that is not listed"))
            continue
        if not isinstance(per_var, dict):
            out.append(("slots[%r]" % var_name, "expected {slot: tensor}, received %s" % type(per_var).__name__))
            continue
        for slot, tensor in per_var.items():
            if spec is None or slot not in spec.slots or state.generation not in GENERATIONS:
                continue
            try:
                expected = spec.shape_rule(slot, shapes[var_name], config, state.generation)
            except Exception:  # noqa: BLE001 - a rule given a damaged config; the config problem is reported
                continue
            got = tuple(tensor_shape(tensor))
            if expected is not None and got != tuple(expected):
                out.append(("slots[%r][%r]" % (var_name, slot), "expected shape %s (for a variable of shape %s), "
                            "received %s" % (tuple(expected), shapes[var_name], got)))
    return out


def check_state(state, path):
    """Raise SchemaError naming `path` and the first fields when `state` breaks a rule; else return it."""
    problems = state_problems(state)
    if problems:
        raise SchemaError("%s: invalid optimizer state: %s%s" % (
            printable(path), "; ".join("%s: %s" % p for p in problems[:MAX_PROBLEMS]),
            " (and %d more)" % (len(problems) - MAX_PROBLEMS) if len(problems) > MAX_PROBLEMS else ""))
    return state


def check_config(config, algorithm, generation, path, field):
    """Raise SchemaError when a config given by the caller (`--config`, `--target-config`) is unsound."""
    problems = config_problems(config, algorithm, generation, field=field)
    if problems:
        raise SchemaError("%s: %s" % (printable(path), "; ".join("%s: %s" % p for p in problems[:MAX_PROBLEMS])))
    return config
