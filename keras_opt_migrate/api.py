"""The library's entry points for reading and writing optimizer state."""

import os

from . import formats
from .errors import FormatError, KerasOptMigrateError
from .schema import OptimizerState, VariableSpec


def _variable_specs(variables):
    """Normalise a user's variable hint: VariableSpec, (name, shape[, dtype]) or objects with .shape."""
    if variables is None:
        return None
    out = []
    for i, v in enumerate(variables):
        if isinstance(v, VariableSpec):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out.append(VariableSpec(str(v[0]), tuple(v[1]), v[2] if len(v) > 2 else "float32"))
        elif hasattr(v, "shape"):
            name = getattr(v, "path", None) or getattr(v, "name", None) or "variable_%d" % i
            dtype = getattr(getattr(v, "dtype", None), "name", None) or str(getattr(v, "dtype", "float32"))
            out.append(VariableSpec(str(name).split(":")[0], tuple(int(d) for d in v.shape), dtype))
        else:
            raise KerasOptMigrateError(
                "variables[%d]: expected a VariableSpec, a (name, shape) pair or a variable; received %r"
                % (i, type(v).__name__))
    return out


def load_state(path, *, format=None, optimizer=None, variables=None, config=None):
    """Read the optimizer state in `path` into an `OptimizerState`.

    The format is detected from the file unless `format` names an adapter. Hints, used only
    where the file itself cannot tell and always recorded in `state.source["hints"]`:
      optimizer: the algorithm (some TF checkpoints cannot tell Adam from Adamax);
      variables: the model's trainable variables in build order, as VariableSpec,
        (name, shape) pairs or variables, for positional layouts;
      config: hyperparameters that decide a positional layout (amsgrad, centered, ...).
    Raises FormatError (naming the file) for unreadable or unsupported input.
    """
    path = os.fspath(path)
    fmt = formats.get_format(format) if format else formats.detect(path)
    options = {"optimizer": optimizer, "variables": _variable_specs(variables), "config": dict(config or {})}
    try:
        state = fmt.read(path, **options)
    except KerasOptMigrateError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeError) as e:
        raise FormatError(path, "cannot read as %s: %s" % (fmt.description or fmt.name, _one_line(e))) from e
    state.source.setdefault("format", fmt.name)
    state.source.setdefault("path", path)
    hints = {k: v for k, v in (("optimizer", optimizer), ("config", config)) if v}
    if variables is not None:
        hints["variables"] = [v.to_json() for v in options["variables"]]
    if hints:
        state.source["hints"] = hints
    return state


def save_state(state, path):
    """Write `state` exactly (all tensors, config, provenance) to keras-opt-migrate's own file."""
    if not isinstance(state, OptimizerState):
        raise KerasOptMigrateError("save_state expects an OptimizerState; received %r" % type(state).__name__)
    return formats.native.FORMAT.write(state, os.fspath(path))


def _one_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:500]
