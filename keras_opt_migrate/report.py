"""`inspect`: what optimizer state a file holds, from metadata only.

No slot tensor is read: shapes and dtypes come from the file's index. Scalar non-slot
state (a loss scale, beta powers) is shown with its value, which costs one tiny read.
"""

import numpy as np

from .candidates import ambiguity_note
from .schema import LazyTensor, materialize


def _shape(t):
    return list(t.shape)


def _dtype(t):
    return np.dtype(t.dtype).name


def describe(state):
    """A JSON-ready description of a state (tensors are not loaded, scalars excepted).

    `optimizer` is the algorithm; where the file cannot tell several apart, `candidates` names
    them all (`optimizer` is then the first) and `candidates_note` says so in one line.
    """
    variables = []
    for var in state.variables:
        slots = {}
        for slot, t in state.slots.get(var.name, {}).items():
            slots[slot] = {"shape": _shape(t), "dtype": _dtype(t), "key": state.key_of(var.name, slot)}
        variables.append({"name": var.name, "shape": list(var.shape), "dtype": var.dtype, "slots": slots})
    extra = {}
    for name, t in state.extra.items():
        item = {"shape": _shape(t), "dtype": _dtype(t), "key": state.key_of(None, name)}
        if int(np.prod(t.shape, dtype=np.int64)) == 1:
            item["value"] = materialize(t).reshape(-1)[0].item()
        extra[name] = item
    src = state.source
    return {
        "path": src.get("path"), "format": src.get("format"), "generation": state.generation,
        "optimizer": state.optimizer, "candidates": list(state.candidates),
        "candidates_note": ambiguity_note(state) if state.ambiguous else None, "versions": src.get("versions", {}), "config": state.config,
        "iterations": state.iterations, "variables": variables, "extra": extra,
        "mapping": src.get("mapping"), "schema_version": state.schema_version,
        "tensor_bytes": sum(_nbytes(t) for _, _, _, t in state.iter_tensors()),
        "warnings": list(state.warnings),
    }


def _nbytes(t):
    if isinstance(t, LazyTensor):
        return t.nbytes
    return int(np.asarray(t).nbytes)


def format_text(desc):
    """Human-readable rendering of `describe()`."""
    lines = ["file:        %s" % desc["path"],
             "format:      %s" % desc["format"],
             "generation:  %s" % desc["generation"],
             "optimizer:   %s" % (desc.get("candidates_note") or desc["optimizer"])]
    if desc["versions"]:
        lines.append("versions:    %s" % ", ".join("%s %s" % kv for kv in sorted(desc["versions"].items())))
    lines.append("iterations:  %s" % ("not recorded" if desc["iterations"] is None else desc["iterations"]))
    if desc["config"]:
        lines.append("config:")
        for k in sorted(desc["config"]):
            lines.append("  %-28s %s" % (k, desc["config"][k]))
    mapping = desc.get("mapping") or {}
    if mapping:
        lines.append("slots attached: %s%s" % (mapping.get("method"),
                                               "" if mapping.get("proven_by_shapes", True)
                                               else " (order NOT proven by shapes)"))
    lines.append("variables (%d), tensor bytes %d%s:" % (len(desc["variables"]), desc["tensor_bytes"],
                                                       ", slots named as %s's" % desc["optimizer"]
                                                       if desc.get("candidates_note") else ""))
    width = max([len(v["name"]) for v in desc["variables"]] + [8])
    for v in desc["variables"]:
        slots = ", ".join("%s %s %s" % (s, tuple(i["shape"]), i["dtype"]) for s, i in v["slots"].items())
        lines.append("  %-*s %-12s %s" % (width, v["name"], tuple(v["shape"]), slots or "(no slots)"))
    if desc["extra"]:
        lines.append("non-slot state:")
        for name, i in desc["extra"].items():
            value = " = %s" % i["value"] if "value" in i else ""
            lines.append("  %-28s %s %s%s" % (name, tuple(i["shape"]), i["dtype"], value))
    for w in desc["warnings"]:
        lines.append("warning: %s" % w)
    return "\n".join(lines)
