"""Declarative description of an optimizer algorithm's state, per API generation.

An `AlgorithmSpec` says, as data, which slots an algorithm keeps (under canonical names,
the Keras 3 ones where Keras 3 has the algorithm), what each generation calls them, and in
which order each generation lays them out in its positional lists (`get_weights()`,
`optimizer.variables`, `_variables/N`, `optimizer/vars/N`). Format adapters never hard-code
an optimizer: they replay `positional_layout` to turn positions into (variable, slot) names,
and use `names[generation]` to turn keys into canonical slot names.
"""

import dataclasses
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

GENERATIONS = ("v1", "v2", "experimental", "keras3", "tf1")


def _always(config):
    return True


@dataclasses.dataclass(frozen=True)
class Slots:
    """Per-variable slots laid out together.

    `interleaved=True`: for each variable, all `slots` (m0, v0, m1, v1, ...).
    `interleaved=False`: slot-major: every variable's first slot, then every variable's
    second slot (m0, m1, ..., v0, v1, ...).
    `when(config)` decides whether the group exists at all (e.g. amsgrad's velocity_hat).
    """

    slots: Tuple[str, ...]
    interleaved: bool = True
    when: Callable[[Mapping], bool] = _always


@dataclasses.dataclass(frozen=True)
class Extra:
    """One non-slot variable at a fixed position of a positional list (e.g. `iterations`)."""

    name: str
    shape: Tuple[int, ...] = ()
    dtype: str = "float32"
    when: Callable[[Mapping], bool] = _always


def slot_major(*slots, when=_always):
    return Slots(tuple(slots), interleaved=False, when=when)


def interleaved(*slots, when=_always):
    return Slots(tuple(slots), interleaved=True, when=when)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One position of an expanded positional list."""

    kind: str  # "slot" or "extra"
    name: str  # canonical slot name or extra name
    var_index: Optional[int]
    shape: Tuple[int, ...]
    dtype: str


# Slot shape rule: (slot, variable shape, config, generation) -> shape, or None when the
# generation keeps no such variable for a variable of that shape.
ShapeRule = Callable[[str, Tuple[int, ...], Mapping, str], Optional[Tuple[int, ...]]]


def same_shape(slot, var_shape, config, generation):
    return tuple(var_shape)


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """Everything the adapters need to know about one algorithm's state.

    name: canonical lower-case algorithm name (`adam`, `rmsprop`, ...).
    slots: canonical slot names, in the canonical order.
    names: generation -> {canonical slot -> that generation's slot name}. For `tf1` the value
        is the object-based name (`m`, `accum`, ...); `tf1_suffix` gives the name-based order.
    layouts: generation -> function(config) -> sequence of `Slots` / `Extra`, the order
        of that generation's positional list *after* the generic prefix (iterations,
        learning rate, EMA averages) that `positional_layout` adds itself.
    extras: generation -> {generation's key for a non-slot variable -> canonical extra name}.
    class_names: generation -> class names that identify the algorithm in that generation.
    shape_rule: slot shapes (default: the variable's shape).
    slot_init: canonical slot -> initial value or config key holding it (for zero-init reports).
    nonnegative: canonical slots that can never be negative in a healthy state (second
        moments, accumulators); `audit` reports violations.
    tracked: generation -> {attribute list on the optimizer object -> canonical slot}: how the
        2.11+ and Keras 3 optimizers track each slot list (`_momentums`, `momentums`, `_m`);
        the object graph of a TF checkpoint shows these names, and they are what tells the
        algorithm apart there (the positional `_variables/N` keys carry no slot names).
    update_rules: generation -> label of the update rule that generation applies (or a function
        of the config returning it). Generations with the same label continue a trajectory the
        same way (up to float rounding); `rule_notes[label]` says how a rule differs, for the
        conversion report.
    tf1_suffix: canonical slot order that decides TF1 name-based `<var>/<Name>`, `_1`, `_2` keys;
        a function of the config because RMSProp's depends on `centered`.
    unread: canonical slot -> function(generation, config) returning why that generation keeps
        the slot without ever reading its value under that config (so a zero fill is exact), or
        None when the value matters.
    """

    name: str
    slots: Tuple[str, ...]
    names: Dict[str, Dict[str, str]]
    layouts: Dict[str, Callable[[Mapping], Sequence]]
    class_names: Dict[str, Tuple[str, ...]]
    extras: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    shape_rule: ShapeRule = same_shape
    slot_init: Dict[str, object] = dataclasses.field(default_factory=dict)
    nonnegative: Tuple[str, ...] = ()
    tracked: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    update_rules: Dict[str, object] = dataclasses.field(default_factory=dict)
    rule_notes: Dict[str, str] = dataclasses.field(default_factory=dict)
    tf1_suffix: Optional[Callable[[Mapping], Tuple[str, ...]]] = None
    unread: Dict[str, Callable[[str, Mapping], Optional[str]]] = dataclasses.field(default_factory=dict)
    doc: str = ""

    @property
    def generations(self):
        return tuple(g for g in GENERATIONS if g in self.names)

    def update_rule(self, generation, config):
        """The label of the update rule `generation` applies with `config` (None if unknown)."""
        rule = self.update_rules.get(generation)
        return rule(config) if callable(rule) else rule

    def slot_name(self, generation, canonical):
        return self.names[generation][canonical]

    def canonical_slot(self, generation, name):
        """Canonical slot for a generation's slot name, or None."""
        for canonical, own in self.names.get(generation, {}).items():
            if own == name:
                return canonical
        return None

    def canonical_extra(self, generation, key):
        return self.extras.get(generation, {}).get(key)

    def extra_key(self, generation, canonical):
        for key, name in self.extras.get(generation, {}).items():
            if name == canonical:
                return key
        return None

    def tf1_namebased_suffixes(self, config, optimizer_name):
        """Canonical slot -> TF1 name-based key suffix (`Adam`, `Adam_1`, ...)."""
        order = self.tf1_suffix(config) if self.tf1_suffix else tuple(self.names.get("tf1", {}))
        return {slot: optimizer_name if i == 0 else "%s_%d" % (optimizer_name, i)
                for i, slot in enumerate(order)}


def has_schedule(config):
    """True when the config's learning rate is a serialized schedule or callable."""
    lr = config.get("learning_rate", config.get("lr"))
    return isinstance(lr, dict)


# Slot lists the 2.11+ and Keras 3 base optimizers keep for every algorithm (see `tracked`).
GENERIC_TRACKED = {"_model_variables_moving_average": "average", "_accumulated_gradients": "gradient_accumulator"}

# Every config flag a layout's `when` reads, set to a value that turns its slots on. Probing
# layouts with and without them tells which slots an algorithm always keeps and which it may.
LAYOUT_FLAGS = {"amsgrad": True, "centered": True, "momentum": 0.5, "export_clipping_factors": True}

_PROBE_SHAPES = [(2, 3), (3,)]  # one matrix, one vector: rank-dependent slots (Adafactor, Muon) show up


def _probe_slots(spec, generation, config):
    if generation == "tf1":
        return set(spec.tf1_suffix(config) if spec.tf1_suffix else spec.names.get("tf1", {}))
    return {e.name for e in positional_layout(spec, generation, config, _PROBE_SHAPES, prefix=False)
            if e.kind == "slot"}


def flag_configs(base=None):
    """Configs over every on/off combination of `LAYOUT_FLAGS` (flags in `base` stay fixed)."""
    base = dict(base or {})
    free = [k for k in LAYOUT_FLAGS if k not in base]
    out = []
    for bits in range(2 ** len(free)):
        config = dict(base)
        for i, key in enumerate(free):
            config[key] = LAYOUT_FLAGS[key] if bits >> i & 1 else (0.0 if key == "momentum" else False)
        out.append(config)
    return out


def slot_sets(spec, generation):
    """(slots kept for every config, slots kept for some config) of a generation, canonical names."""
    sets = [_probe_slots(spec, generation, c) for c in flag_configs()]
    return set.intersection(*sets), set.union(*sets)


def generic_prefix(generation, config):
    """The positions every optimizer of a generation puts before its own slots."""
    if generation == "v2":
        return [Extra("iterations", (), "int64")]
    if generation == "v1":
        return []  # v1 optimizers decide themselves whether they keep iterations
    if generation == "experimental":
        return [Extra("iterations", (), "int64"),
                Slots(("average",), interleaved=False, when=lambda c: bool(c.get("use_ema")))]
    if generation == "keras3":
        return [Extra("iterations", (), "int64"),
                Extra("learning_rate", (), "float32", when=lambda c: not has_schedule(c)),
                Slots(("average",), interleaved=False, when=lambda c: bool(c.get("use_ema"))),
                Slots(("gradient_accumulator",), interleaved=False,
                      when=lambda c: bool(c.get("gradient_accumulation_steps")))]
    return []


def positional_layout(spec, generation, config, var_shapes, var_dtypes=None, prefix=True):
    """Expand a generation's positional list over the model variables.

    var_shapes: shapes of the model's trainable variables in build order.
    Returns a list of `Entry`, one per position of the real list.
    """
    if generation not in spec.layouts:
        from ..errors import UnknownOptimizerError
        raise UnknownOptimizerError(
            "the %s generation has no positional layout for %r; expected one of %s"
            % (generation, spec.name, ", ".join(sorted(spec.layouts))))
    var_dtypes = list(var_dtypes or ["float32"] * len(var_shapes))
    items = (generic_prefix(generation, config) if prefix else []) + list(spec.layouts[generation](config))
    out = []
    for item in items:
        if not item.when(config):
            continue
        if isinstance(item, Extra):
            out.append(Entry("extra", item.name, None, tuple(item.shape), item.dtype))
            continue
        rule = spec.shape_rule if item.slots[0] not in ("average", "gradient_accumulator") else same_shape
        if item.interleaved:
            order = [(i, s) for i in range(len(var_shapes)) for s in item.slots]
        else:
            order = [(i, s) for s in item.slots for i in range(len(var_shapes))]
        for i, slot in order:
            shape = rule(slot, tuple(var_shapes[i]), config, generation)
            if shape is not None:
                out.append(Entry("slot", slot, i, tuple(shape), var_dtypes[i]))
    return out
