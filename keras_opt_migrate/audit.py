"""Sanity checks over an `OptimizerState`: is this state healthy, complete and safe to load?

Each check yields `Finding`s; `audit()` streams the tensors once (one at a time) and
returns an `AuditReport`. The load-time rules at the bottom encode what real Keras /
TensorFlow versions do with such a file (shared/LAYOUTS.md §7): state they drop silently
or attach wrongly.
"""

import dataclasses
import math
from typing import List, Optional

import numpy as np

from .candidates import as_candidate, phrase
from .optimizers.registry import get_spec
from .optimizers.spec import positional_layout
from .errors import UnknownOptimizerError
from .schema import OptimizerState, materialize

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclasses.dataclass
class Finding:
    severity: str
    code: str
    message: str
    variable: Optional[str] = None
    slot: Optional[str] = None
    candidates: Optional[List[str]] = None  # holds only if one of these algorithms wrote the file

    def to_json(self):
        return dataclasses.asdict(self)

    def __str__(self):
        where = ""
        if self.variable is not None:
            where = " [%s%s]" % (self.variable, "/" + self.slot if self.slot else "")
        elif self.slot:
            where = " [%s]" % self.slot
        return "%s %s%s: %s" % (self.severity.upper(), self.code, where, self.message)


@dataclasses.dataclass
class AuditReport:
    path: Optional[str]
    optimizer: str
    generation: str
    format: Optional[str]
    tensors_checked: int
    findings: List[Finding]
    candidates: List[str] = dataclasses.field(default_factory=list)  # the algorithms the file cannot tell apart

    @property
    def ok(self):
        return not self.findings

    @property
    def algorithm(self):
        """`adam`, or `adam, adamax or lazyadam` where the file cannot tell them apart."""
        return phrase(self.candidates) if len(self.candidates) > 1 else self.optimizer

    def to_json(self):
        note = ("%s: the file cannot tell them apart; pass --optimizer to choose (optimizer=... in Python)"
                % self.algorithm) if len(self.candidates) > 1 else None
        return {"path": self.path, "optimizer": self.optimizer, "candidates": list(self.candidates),
                "candidates_note": note,
                "generation": self.generation, "format": self.format, "tensors_checked": self.tensors_checked,
                "findings": [f.to_json() for f in self.findings]}


def audit(path_or_state, **load_options):
    """Audit a file or an `OptimizerState`; returns an AuditReport (never raises for findings).

    Where the file cannot tell which of several algorithms wrote it (`state.candidates`), the
    checks that depend on the algorithm (slot names, shapes and signs, algorithm-specific state)
    run once per candidate: a finding that holds for every candidate is reported once, one that
    holds for some only names them (`Finding.candidates`, "if adamax: ...").
    """
    if isinstance(path_or_state, OptimizerState):
        state = path_or_state
    else:
        from .api import load_state
        state = load_state(path_or_state, **load_options)
    names = list(state.candidates) if state.ambiguous else [state.optimizer]
    views = [as_candidate(state, name) if state.ambiguous else state for name in names]
    per_view = [[] for _ in views]
    specs = []
    for view, found in zip(views, per_view):
        try:
            specs.append(get_spec(view.optimizer))
        except UnknownOptimizerError:
            specs.append(None)
            found.append(Finding(WARNING, "unknown_optimizer",
                                 "optimizer %r has no algorithm spec: slot names and shapes were not checked"
                                 % view.optimizer))
    checked = 0
    for items in zip(*(view.iter_tensors() for view in views)):
        checked += 1
        stats = _value_stats(items[0][3])  # every view holds the same tensors: read each once
        for (kind, var, name, _), spec, found in zip(items, specs, per_view):
            found.extend(_value_findings(spec, kind, var, name, stats))
    for view, spec, found in zip(views, specs, per_view):
        if spec is not None:
            found.extend(_check_structure(spec, view))
        found.extend(_check_iterations(view))
        found.extend(_check_load_risks(view))
    findings = _merge(names, per_view)
    for w in state.warnings:
        findings.append(Finding(WARNING, "reader_warning", w))
    return AuditReport(state.source.get("path"), state.optimizer, state.generation, state.source.get("format"),
                       checked, findings, candidates=list(state.candidates) if state.ambiguous else [])


def _merge(names, per_view):
    """One list: findings every candidate has once, the others once per group of candidates that has them."""
    if len(names) == 1:
        return per_view[0]
    holders = {}
    for name, found in zip(names, per_view):
        for f in found:
            holders.setdefault(str(f), (f, []))[1].append(name)
    out = []
    for f, have in holders.values():
        if len(have) == len(names):
            out.append(f)
        else:
            out.append(dataclasses.replace(f, message="if %s: %s" % (phrase(have), f.message), candidates=have))
    return out


CHUNK = 1 << 20  # elements checked at a time: the temporaries stay small whatever the tensor size


def _value_stats(tensor):
    """(size, non-finite count, negative count, smallest negative) of a floating tensor; None otherwise."""
    value = materialize(tensor)
    if value.dtype.kind not in "fc":
        return None
    flat = np.ascontiguousarray(value).reshape(-1)
    bad = negative = 0
    smallest = None
    for i in range(0, flat.size, CHUNK):
        chunk = flat[i:i + CHUNK]
        finite = np.isfinite(chunk)
        here = int(chunk.size - np.count_nonzero(finite))
        bad += here
        if value.dtype.kind == "f":
            ok = chunk[finite] if here else chunk
            n = int(np.count_nonzero(ok < 0))
            if n:
                negative += n
                low = float(np.min(ok))
                smallest = low if smallest is None else min(smallest, low)
    return flat.size, bad, negative, smallest


def _value_findings(spec, kind, var, name, stats):
    if stats is None:
        return []
    size, bad, negative, smallest = stats
    out = []
    if bad:
        out.append(Finding(ERROR, "non_finite", "%d of %d values are NaN or Inf" % (bad, size), var, name))
    if negative and spec is not None and kind == "slot" and name in spec.nonnegative:
        out.append(Finding(ERROR, "negative_second_moment",
                           "%d values are negative; a %s %s can never be negative (minimum %g)"
                           % (negative, spec.name, name, smallest), var, name))
    return out


def _expected_slots(spec, state):
    """{variable index: {slot: shape}} the generation keeps, or None when it has no layout."""
    if state.generation not in spec.layouts or state.generation == "tf1":
        return None
    expected = {}
    for entry in positional_layout(spec, state.generation, state.config, [v.shape for v in state.variables],
                                   prefix=True):
        if entry.kind == "slot":
            expected.setdefault(entry.var_index, {})[entry.name] = entry.shape
    return expected


def _check_structure(spec, state):
    out = []
    known = set(spec.slots) | {"average", "gradient_accumulator"}
    for var_name, per_var in state.slots.items():
        for slot in per_var:
            if slot not in known:
                out.append(Finding(ERROR, "unknown_slot", "%s keeps no slot called %r" % (spec.name, slot),
                                   var_name, slot))
    expected = _expected_slots(spec, state)
    if expected is None or not state.slots:
        return out  # a file with no slots at all is reported once, by the `empty` load-risk rule
    for i, var in enumerate(state.variables):
        have = state.slots.get(var.name, {})
        for slot, shape in expected.get(i, {}).items():
            if slot not in have:
                out.append(Finding(ERROR, "missing_slot", "expected %s slot %r, shape %s, not in the file"
                                   % (spec.name, slot, tuple(shape)), var.name, slot))
            elif tuple(have[slot].shape) != tuple(shape):
                out.append(Finding(ERROR, "shape_mismatch", "slot has shape %s, its variable needs %s"
                                   % (tuple(have[slot].shape), tuple(shape)), var.name, slot))
        for slot in have:
            if slot in known and slot not in expected.get(i, {}):
                out.append(Finding(WARNING, "unexpected_slot",
                                   "%s %s with this config keeps no %r slot" % (state.generation, spec.name, slot),
                                   var.name, slot))
    return out


def _scalar(state, name):
    if name not in state.extra:
        return None
    value = materialize(state.extra[name])
    return float(value.reshape(-1)[0]) if value.size else None


def _check_iterations(state):
    out = []
    cfg = state.config
    if state.iterations is None:
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict) or (cfg.get("decay") or 0) > 0:
            out.append(Finding(WARNING, "missing_iterations",
                               "the learning rate depends on the step count (decay or schedule) but the file keeps "
                               "no iterations counter; a resumed run restarts the schedule at step 0"))
    elif state.iterations < 0:
        out.append(Finding(ERROR, "negative_iterations", "iterations is %d" % state.iterations))
    # TF1 Adam: beta1_power == beta_1 ** (t + 1) after t steps.
    for power, beta in (("beta1_power", "beta_1"), ("beta2_power", "beta_2")):
        p, b = _scalar(state, power), cfg.get(beta)
        if p is None or not isinstance(b, (int, float)) or not 0 < b < 1:
            continue
        if not 0 < p <= 1:
            out.append(Finding(ERROR, "bad_beta_power", "%s = %r is outside (0, 1]" % (power, p), slot=power))
            continue
        implied = math.log(p) / math.log(b) - 1
        if state.iterations is not None and abs(implied - state.iterations) > 0.01 * max(1, state.iterations):
            out.append(Finding(ERROR, "iteration_mismatch",
                               "%s = %.8g implies %.2f steps with %s = %g, but the step counter says %d"
                               % (power, p, implied, beta, b, state.iterations), slot=power))
    return out


# -- what real versions do with such a file (shared/LAYOUTS.md §7) ----------------------

def _rule_empty(state):
    if not state.slots and state.variables and state.optimizer not in ("sgd", "proximal_gradient_descent"):
        return "the file holds no optimizer slots: training restarts from a fresh optimizer"
    if not state.variables and not state.slots:
        return "the file holds no optimizer state at all"
    return None


def _rule_savedmodel(state):
    if state.source.get("format") == "savedmodel":
        return ("Keras 2 `load_model` on this SavedModel recompiles a fresh optimizer and ignores this state "
                "(iterations 0, every slot zero); restore it with keras-opt-migrate instead")
    return None


def _rule_nadam_u_product(state):
    if state.optimizer == "nadam" and "u_product" not in state.extra:
        return ("Nadam's momentum-schedule product (u_product) is not in this file; a resumed run recomputes it "
                "from 1.0 and diverges from the original trajectory")
    return None


def _rule_legacy_into_new(state):
    if state.generation == "v2" and state.source.get("format") == "tf_checkpoint":
        return ("tf_keras 2.11+ optimizers refuse this legacy checkpoint ('You are trying to restore a checkpoint "
                "from a legacy TF-Keras optimizer into a v2.11+ Optimizer') and Keras 3 restores none of it "
                "silently; convert it with keras-opt-migrate")
    return None


def _rule_positional_keras3(state):
    if state.generation == "experimental" and state.source.get("format") == "tf_checkpoint":
        return ("Keras 3 maps `_variables/N` by position with learning_rate at index 1, so this 2.11+ checkpoint "
                "is shifted by one there and fails or mis-assigns; convert it to the Keras 3 layout")
    return None


def _rule_h5_into_keras3(state):
    if state.source.get("format") == "keras_h5" and state.slots:
        return ("Keras 3 `load_model` on an .h5 file keeps the step counter but loses every slot, and `fit` then "
                "raises 'Unknown variable'; upgrade to .keras with keras-opt-migrate")
    return None


def _rule_v1_iterations(state):
    if state.generation == "v1" and state.iterations is None:
        return ("Keras v1 %s keeps no iterations counter: loading it into a newer optimizer starts the "
                "step count at 0" % state.optimizer)
    return None


def _rule_loss_scale(state):
    if state.source.get("format") in ("keras_h5", "keras_archive") and state.config.get("loss_scale_optimizer"):
        return "the dynamic loss scale is not saved in this format; it restarts at its initial value"
    return None


LOAD_RISK_RULES = (_rule_empty, _rule_savedmodel, _rule_nadam_u_product, _rule_legacy_into_new,
                   _rule_positional_keras3, _rule_h5_into_keras3, _rule_v1_iterations, _rule_loss_scale)


def _check_load_risks(state):
    out = []
    for rule in LOAD_RISK_RULES:
        message = rule(state)
        if message:
            out.append(Finding(WARNING, rule.__name__[len("_rule_"):], message))
    return out
