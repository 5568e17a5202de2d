"""The in-memory optimizer-state schema.

`OptimizerState` is the hub every reader produces and every writer consumes. A slot is
identified by (model variable name, canonical slot name), never by a position. Tensors
may be `LazyTensor`s that read their bytes only when asked, so metadata-only commands
(`inspect`) and streaming conversions never hold the whole state in memory.
"""

import contextlib
import dataclasses
import weakref
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import FormatError, KerasOptMigrateError, SchemaError

SCHEMA_VERSION = 2
GENERATIONS = ("v1", "v2", "experimental", "keras3", "tf1")


class LoadStats:
    """How many full tensors read through `LazyTensor.load()` are alive at once (see `track_loads`)."""

    def __init__(self):
        self.loads = 0
        self.alive = self.alive_bytes = 0
        self.peak = self.peak_bytes = 0
        self.largest = 0

    def _add(self, value, nbytes):
        self.loads += 1
        self.alive += 1
        self.alive_bytes += nbytes
        self.largest = max(self.largest, nbytes)
        self.peak = max(self.peak, self.alive)
        self.peak_bytes = max(self.peak_bytes, self.alive_bytes)
        weakref.finalize(value, self._release, nbytes)

    def _release(self, nbytes):
        self.alive -= 1
        self.alive_bytes -= nbytes

    def __repr__(self):
        return ("LoadStats(loads=%d, peak=%d tensors / %d bytes, largest=%d bytes, alive=%d)"
                % (self.loads, self.peak, self.peak_bytes, self.largest, self.alive))


_TRACKERS = []


@contextlib.contextmanager
def track_loads():
    """Count the arrays `LazyTensor.load()` returns while they are alive.

    The streaming commands promise to hold about one tensor (two for comparisons) at a time;
    this makes that checkable without timing or RSS: `stats.peak` is the most loaded tensors
    alive at once, `stats.peak_bytes` their bytes. Arrays are tracked until garbage-collected.
    """
    stats = LoadStats()
    _TRACKERS.append(stats)
    try:
        yield stats
    finally:
        _TRACKERS.remove(stats)


class LazyTensor:
    """A tensor whose shape and dtype are known and whose value is read on demand.

    `load()` returns a fresh numpy array each call (nothing is cached, so a streaming
    writer holds one tensor at a time). numpy functions accept it through `__array__`.
    `LazyTensor.derived(source, fn)` is a tensor computed from another one when loaded.
    """

    __slots__ = ("shape", "dtype", "_loader", "origin", "checksum")

    def __init__(self, shape, dtype, loader: Callable[[], np.ndarray], origin=None, checksum=None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._loader = loader
        self.origin = origin
        # (kind, value) of the stored bytes when the file records one (a TF bundle's CRC-32C): two
        # tensors of one shape and dtype with equal checksums of one kind hold the same bytes
        self.checksum = checksum

    def load(self):
        try:
            value = np.asarray(self._loader())
        except KerasOptMigrateError:
            raise
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            # h5py raises KeyError for corrupt metadata met only when the data is read (its
            # RuntimeErrors are turned into FormatErrors by the HDF5 loaders themselves)
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise FormatError(self.origin or "tensor", "cannot read the tensor: %s" % text) from e
        if tuple(value.shape) != self.shape:
            raise SchemaError("%s: declared shape %s but read %s" % (self.origin, self.shape, value.shape))
        for stats in _TRACKERS:
            stats._add(value, int(value.nbytes))
        return value

    @classmethod
    def derived(cls, source, fn, shape=None, dtype=None, origin=None):
        """A tensor whose value is `fn(source value)`, computed only when loaded (one at a time)."""
        shape = tensor_shape(source) if shape is None else shape
        dtype = tensor_dtype(source) if dtype is None else dtype
        return cls(shape, dtype, lambda: fn(materialize(source)),
                   origin=origin or getattr(source, "origin", None))

    @classmethod
    def filled(cls, shape, dtype, value, origin=None):
        """A constant tensor (`np.full`) made only when loaded."""
        return cls(shape, dtype, lambda: np.full(shape, value, dtype), origin=origin)

    def __array__(self, dtype=None, copy=None):
        value = self.load()
        return value.astype(dtype) if dtype is not None else value

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self):
        return "LazyTensor(shape=%s, dtype=%s, origin=%r)" % (self.shape, self.dtype.name, self.origin)


def tensor_shape(value):
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


def tensor_dtype(value):
    return np.dtype(value.dtype) if hasattr(value, "dtype") else np.asarray(value).dtype


def materialize(value):
    """numpy array for a tensor that may be lazy."""
    return value.load() if isinstance(value, LazyTensor) else np.asarray(value)


@dataclasses.dataclass
class VariableSpec:
    """A model variable the state belongs to."""

    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype).name

    def to_json(self):
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass
class OptimizerState:
    """One optimizer's complete state, independent of generation and file format.

    optimizer: canonical lower-case algorithm name (`adam`, `rmsprop`, `momentum`, ...).
    generation: the API generation that wrote it (`v1`, `v2`, `experimental`, `keras3`, `tf1`).
    config: hyperparameters under their Keras names; a schedule stays its serialized dict.
    iterations: the step counter, or None when the file does not record one.
    variables: the model variables, in the model's trainable (build) order.
    slots: {variable name: {canonical slot name: tensor}}.
    extra: non-slot state under canonical names (`beta1_power`, `u_product`, loss scale, ...).
    source: provenance: format, path, versions, the original key of every tensor
        (`source["keys"]["slots/<var>/<slot>"]`, `source["keys"]["extra/<name>"]`) and how
        slots were attached to variables (`source["mapping"]`).
    warnings: things a user must know (state a real version would drop, unproven mappings).
    candidates: the algorithms the file cannot tell apart (registry order, `optimizer` first),
        when it cannot; empty when the file (or a hint) decides. `optimizer` is then only the
        first of them: a conversion goes ahead only where every candidate gives the same output.
    """

    optimizer: str
    generation: str
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    iterations: Optional[int] = None
    variables: List[VariableSpec] = dataclasses.field(default_factory=list)
    slots: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    source: Dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    candidates: List[str] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    # -- queries ------------------------------------------------------------------
    def variable(self, name):
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def ambiguous(self):
        """True when the file could not tell which of several algorithms wrote the state."""
        return len(self.candidates) > 1

    @property
    def variable_names(self):
        return [v.name for v in self.variables]

    def slot_names(self):
        """Canonical slot names present, in first-seen order."""
        seen = []
        for per_var in self.slots.values():
            for name in per_var:
                if name not in seen:
                    seen.append(name)
        return seen

    def iter_tensors(self):
        """Yield (kind, variable name or None, name, tensor) for every tensor, lazily."""
        for var in self.variables:
            for slot, value in self.slots.get(var.name, {}).items():
                yield "slot", var.name, slot, value
        for name, value in self.extra.items():
            yield "extra", None, name, value

    def key_of(self, var_name, slot):
        """The tensor's key in the file it was read from, if recorded."""
        keys = self.source.get("keys", {})
        return keys.get("extra/%s" % slot) if var_name is None else keys.get("slots/%s/%s" % (var_name, slot))

    def validate(self):
        """Check the schema's structural rules; raise SchemaError listing every violation."""
        problems = []
        if self.generation not in GENERATIONS:
            problems.append("generation %r is not one of %s" % (self.generation, ", ".join(GENERATIONS)))
        if not self.optimizer or self.optimizer != self.optimizer.lower():
            problems.append("optimizer must be a canonical lower-case name, got %r" % (self.optimizer,))
        names = self.variable_names
        if len(set(names)) != len(names):
            problems.append("variable names are not unique")
        for var_name in self.slots:
            if var_name not in names:
                problems.append("slots for unknown variable %r" % var_name)
        if self.candidates and (self.candidates[0] != self.optimizer or len(set(self.candidates)) != len(self.candidates)):
            problems.append("candidates %r must be distinct and start with optimizer %r" % (self.candidates, self.optimizer))
        if self.iterations is not None and int(self.iterations) < 0:
            problems.append("iterations is negative (%d)" % self.iterations)
        if problems:
            raise SchemaError("invalid OptimizerState: " + "; ".join(problems))
        return self

    def materialized(self):
        """A copy whose tensors are all numpy arrays."""
        return dataclasses.replace(
            self,
            slots={v: {s: materialize(t) for s, t in per.items()} for v, per in self.slots.items()},
            extra={k: materialize(t) for k, t in self.extra.items()},
            variables=[dataclasses.replace(v) for v in self.variables],
            config=dict(self.config), source=dict(self.source), warnings=list(self.warnings),
            candidates=list(self.candidates))
