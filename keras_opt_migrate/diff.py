"""`diff`: compare two optimizer states (any formats, any generations), tensor by tensor.

Variables are paired by `matching.match` (names normalised across generations, else build
order where shapes prove it). Slots are compared under their canonical names, so a legacy
checkpoint and its Keras 3 conversion compare equal. Tensors are loaded one pair at a time.
"""

import dataclasses
from typing import List

import numpy as np

from . import matching
from .schema import OptimizerState, materialize


@dataclasses.dataclass
class DiffEntry:
    kind: str  # "slot", "extra", "iterations", "config", "optimizer", "variables"
    name: str
    status: str  # "differs", "only_in_a", "only_in_b", "shape"
    detail: str = ""
    variable: str = None

    def to_json(self):
        return dataclasses.asdict(self)

    def __str__(self):
        where = "%s/%s" % (self.variable, self.name) if self.variable else self.name
        return "%-10s %-8s %s%s" % (self.status, self.kind, where, ": " + self.detail if self.detail else "")


@dataclasses.dataclass
class DiffReport:
    a: str
    b: str
    atol: float
    compared: int
    entries: List[DiffEntry]
    pairing: str

    @property
    def equal(self):
        return not self.entries

    def to_json(self):
        return {"a": self.a, "b": self.b, "atol": self.atol, "compared": self.compared, "pairing": self.pairing,
                "equal": self.equal, "entries": [e.to_json() for e in self.entries]}

    def format_text(self):
        head = "%s vs %s: %d tensors compared (variables paired by %s), %s" % (
            self.a, self.b, self.compared, self.pairing,
            "no differences" if self.equal else "%d difference(s)" % len(self.entries))
        return "\n".join([head] + ["  " + str(e) for e in self.entries])


def _pair_variables(a, b):
    """(how, [(name in A, name in B)]) by `matching.match`; every variable on each side must pair."""
    found = matching.match(matching.sources(a.variables), matching.sources(b.variables), require_all_targets=True,
                           what=("A", "B"))
    how = "name" if found.method == "name" else found.method + (" (names differ, shapes agree)"
                                                                 if found.method == "build order" else "")
    return how, [(a.variables[s].name, b.variables[t].name) for s, t in found.pairs]


CHUNK = 1 << 20  # elements compared at a time, so temporaries stay small whatever the tensor size


def _flat(array):
    return np.ascontiguousarray(array).reshape(-1)


def same_bytes(x, y):
    """True when two arrays of one dtype and shape hold the same bytes (compared a chunk at a time)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    fx, fy = _flat(x), _flat(y)
    if fx.dtype.kind in "OSUV":
        return bool(np.array_equal(fx, fy))
    fx, fy = fx.view(np.uint8), fy.view(np.uint8)
    step = CHUNK * 8
    return all(np.array_equal(fx[i:i + step], fy[i:i + step]) for i in range(0, fx.size, step))


def _compare(x, y, atol):
    if tuple(x.shape) != tuple(y.shape):
        return "shape", "%s vs %s" % (tuple(x.shape), tuple(y.shape))
    x = materialize(x)
    y = materialize(y)
    if same_bytes(x, y):
        return None, None
    fx, fy = _flat(x), _flat(y)
    if x.dtype.kind in "fc" or y.dtype.kind in "fc":
        worst, nan, seen = 0.0, False, False
        for i in range(0, fx.size, CHUNK):
            xf, yf = fx[i:i + CHUNK].astype(np.float64), fy[i:i + CHUNK].astype(np.float64)
            same = (xf == yf) | (np.isnan(xf) & np.isnan(yf))  # equal infinities too: inf - inf is nan
            with np.errstate(invalid="ignore"):
                delta = np.where(same, 0.0, np.abs(xf - yf))
            bad = np.isnan(delta)
            nan = nan or bool(bad.any())
            finite = delta[~bad]
            if finite.size:
                worst, seen = max(worst, float(finite.max())), True
        if nan and not seen:
            worst = float("nan")
        if np.isnan(worst) or worst > atol or nan:
            return "differs", "max |a - b| = %g" % worst
        return None, None
    if not all(np.array_equal(fx[i:i + CHUNK], fy[i:i + CHUNK]) for i in range(0, fx.size, CHUNK)):
        return "differs", "integer values differ"
    return None, None


def diff(a, b, atol=0.0, tensor_check=None, **load_options):
    """Compare two states (paths or OptimizerStates); returns a DiffReport.

    Tensors are loaded one pair at a time and compared a chunk at a time. `tensor_check(x,
    y, atol)` -> (status, detail) replaces the value comparison (convert's read-back check
    compares digests recorded while writing).
    """
    compare = tensor_check or _compare
    from .api import load_state
    sa = a if isinstance(a, OptimizerState) else load_state(a, **load_options)
    sb = b if isinstance(b, OptimizerState) else load_state(b, **load_options)
    from .candidates import read_alike
    sa, sb = read_alike(sa, sb)  # a file that cannot tell its algorithm compares as the other's, if it may be
    entries = []
    if sa.optimizer != sb.optimizer:
        entries.append(DiffEntry("optimizer", "optimizer", "differs", "%s vs %s" % (sa.optimizer, sb.optimizer)))
    if sa.iterations != sb.iterations:
        entries.append(DiffEntry("iterations", "iterations", "differs", "%s vs %s" % (sa.iterations, sb.iterations)))
    pairing, pairs = _pair_variables(sa, sb)
    compared = 0
    for name_a, name_b in pairs:
        slots_a, slots_b = sa.slots.get(name_a, {}), sb.slots.get(name_b, {})
        for slot in list(slots_a) + [s for s in slots_b if s not in slots_a]:
            if slot not in slots_b:
                entries.append(DiffEntry("slot", slot, "only_in_a", variable=name_a))
            elif slot not in slots_a:
                entries.append(DiffEntry("slot", slot, "only_in_b", variable=name_a))
            else:
                compared += 1
                status, detail = compare(slots_a[slot], slots_b[slot], atol)
                if status:
                    entries.append(DiffEntry("slot", slot, status, detail, name_a))
    for name in list(sa.extra) + [n for n in sb.extra if n not in sa.extra]:
        if name not in sb.extra:
            entries.append(DiffEntry("extra", name, "only_in_a"))
        elif name not in sa.extra:
            entries.append(DiffEntry("extra", name, "only_in_b"))
        else:
            compared += 1
            status, detail = compare(sa.extra[name], sb.extra[name], atol)
            if status:
                entries.append(DiffEntry("extra", name, status, detail))
    return DiffReport(sa.source.get("path", "A"), sb.source.get("path", "B"), atol, compared, entries, pairing)
