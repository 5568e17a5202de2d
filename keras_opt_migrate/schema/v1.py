"""Schema version 1: the JSON header of the native on-disk form.

The native file is HDF5: the root attribute `keras_opt_migrate_schema_version` holds the
version, the root attribute `header` this JSON, and every tensor is a dataset `t/<n>`
that the header's `tensors` list ties to (kind, variable, name). Datasets are numbered,
not named after variables, so no variable or slot name needs escaping.
"""

import json

import numpy as np

from .state import OptimizerState, VariableSpec

VERSION = 1
HEADER_FIELDS = ("schema_version", "optimizer", "generation", "config", "iterations", "variables",
                 "tensors", "source", "warnings")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError("not JSON serializable: %r" % type(value).__name__)


def encode_header(state):
    """(header JSON text, [(dataset name, tensor)]) for a state."""
    header, datasets = header_fields(state)
    return dumps(header), datasets


def dumps(header):
    return json.dumps(header, sort_keys=True, default=_json_default)


def header_fields(state):
    """(version-1 header as a dict, [(dataset name, tensor)]) for a state."""
    tensors, datasets = [], []
    for kind, var_name, name, value in state.iter_tensors():
        dataset = "t/%d" % len(datasets)
        tensors.append({"kind": kind, "variable": var_name, "name": name, "dataset": dataset})
        datasets.append((dataset, value))
    header = {
        "schema_version": VERSION,
        "optimizer": state.optimizer,
        "generation": state.generation,
        "config": state.config,
        "iterations": state.iterations,
        "variables": [v.to_json() for v in state.variables],
        "tensors": tensors,
        "source": state.source,
        "warnings": state.warnings,
    }
    return header, datasets


def decode_header(header, tensor_for):
    """Build an OptimizerState from a version-1 header; `tensor_for(dataset)` gives tensors."""
    state = OptimizerState(
        optimizer=header["optimizer"], generation=header["generation"], config=header.get("config") or {},
        iterations=header.get("iterations"),
        variables=[VariableSpec(v["name"], tuple(v["shape"]), v["dtype"]) for v in header["variables"]],
        source=header.get("source") or {}, warnings=list(header.get("warnings") or []))
    for t in header["tensors"]:
        value = tensor_for(t["dataset"])
        if t["kind"] == "slot":
            state.slots.setdefault(t["variable"], {})[t["name"]] = value
        else:
            state.extra[t["name"]] = value
    return state
