"""Algorithms a file cannot tell apart, and what that changes.

A legacy TF checkpoint of Adam holds `m` and `v` slot edges and the hyperparameter
variables `beta_1`, `beta_2`: so does one of Adamax or LazyAdam. Such a state is read once,
as the first candidate (`state.optimizer`), with `state.candidates` naming every algorithm
whose state looks exactly like it. `as_candidate` re-reads it as another candidate without
the file: the tensors are the same, only the canonical slot names change (the source
generation's own names, from each candidate's AlgorithmSpec, are what the file showed).

`migrate_candidates` converts a state for every candidate and goes ahead only when all of
them give the same output, as `signature` (a format's stored form, or the in-memory state)
describes it; otherwise it refuses, naming the candidates and what would differ.
"""

import dataclasses

import numpy as np

from .errors import KerasOptMigrateError, MappingError
from .optimizers.registry import get_spec
from .optimizers.spec import GENERIC_TRACKED
from .schema import LazyTensor

GENERIC_SLOTS = {canonical: attr for attr, canonical in GENERIC_TRACKED.items()}  # EMA, accumulation


def shown_names(spec, generation):
    """canonical slot -> what a file of `generation` shows for it: the slot list an object graph
    tracks (2.11+, Keras 3), else the generation's slot name (v2 / TF1 slot edges, h5 names)."""
    tracked = spec.tracked.get(generation)
    if tracked:
        return dict(GENERIC_SLOTS, **{canonical: attr for attr, canonical in tracked.items()})
    return dict(spec.names.get(generation, {}))


def phrase(names):
    """`adam, adamax or lazyadam` (alphabetical)."""
    names = sorted(names)
    return names[0] if len(names) == 1 else "%s or %s" % (", ".join(names[:-1]), names[-1])


def ambiguity_note(state):
    """One line for reports: which algorithms the file could not tell apart."""
    return ("%s: the file cannot tell them apart; pass --optimizer to choose (optimizer=... in Python)"
            % phrase(state.candidates))


def as_candidate(state, name):
    """`state` read as candidate `name` (one of `state.candidates`): the same tensors under that
    algorithm's canonical slot and extra names. Raises MappingError for a non-candidate."""
    spec = get_spec(name)
    if not state.ambiguous:
        if spec.name != get_spec(state.optimizer).name:
            raise MappingError("the state is %s state; it cannot be read as %s" % (state.optimizer, spec.name))
        return state
    if spec.name not in state.candidates:
        raise MappingError("optimizer=%r does not fit the file: it cannot tell %s apart, and %s is not one of them"
                           % (name, phrase(state.candidates), spec.name))
    first, gen = get_spec(state.optimizer), state.generation
    mine, theirs = shown_names(first, gen), {own: c for c, own in shown_names(spec, gen).items()}
    renamed = {}
    for slot in {s for per in state.slots.values() for s in per}:
        own = mine.get(slot)
        if own not in theirs:
            raise MappingError("the %s slot %r (%s in the file) has no %s counterpart" % (first.name, slot, own,
                                                                                          spec.name))
        renamed[slot] = theirs[own]
    extras = {}
    for canonical in state.extra:
        key = first.extra_key(gen, canonical)
        extras[canonical] = (spec.canonical_extra(gen, key) if key else None) or canonical
    keys = {}
    for key, value in state.source.get("keys", {}).items():
        kind, _, rest = key.partition("/")
        if kind == "slots":
            var, _, slot = rest.rpartition("/")
            key = "slots/%s/%s" % (var, renamed.get(slot, slot))
        elif kind == "extra":
            key = "extra/%s" % extras.get(rest, rest)
        keys[key] = value
    source = dict(state.source, keys=keys, read_as={"optimizer": spec.name, "candidates": list(state.candidates)})
    return dataclasses.replace(
        state, optimizer=spec.name, candidates=[],
        slots={v: {renamed[s]: t for s, t in per.items()} for v, per in state.slots.items()},
        extra={extras[k]: t for k, t in state.extra.items()}, source=source,
        config=dict(state.config), warnings=list(state.warnings), variables=list(state.variables))


def read_alike(a, b):
    """(a, b) read as one algorithm where one or both files could not tell theirs and a candidate
    fits the other (a legacy Adam checkpoint against an Adamax .h5 compares as Adamax); otherwise
    unchanged, so a real difference of algorithm still shows."""
    names_a, names_b = a.candidates or [a.optimizer], b.candidates or [b.optimizer]
    common = [n for n in names_a if n in names_b]
    if not common or not (a.ambiguous or b.ambiguous):
        return a, b
    return as_candidate(a, common[0]), as_candidate(b, common[0])


# -- conversions --------------------------------------------------------------------------------
def tensor_token(value):
    """What identifies a tensor's content without loading a large one: a small array by its bytes,
    a tensor carried from the source by identity (every candidate shares the source's tensors)."""
    if isinstance(value, LazyTensor):
        return ("tensor", id(value))
    array = np.asarray(value)
    return ("value", array.dtype.str, array.shape, array.tobytes())


def state_signature(state):
    """The in-memory form of a converted state: it names its algorithm, so candidates that become
    different algorithms differ (those that become the same one, LazyAdam -> Adam, do not)."""
    return {
        "algorithm": state.optimizer,
        "config": sorted((k, repr(v)) for k, v in state.config.items()),
        "iterations": state.iterations,
        "slots": sorted((v, s, tensor_token(t)) for v, per in state.slots.items() for s, t in per.items()),
        "non-slot state": sorted((k, tensor_token(t)) for k, t in state.extra.items()),
    }


def _is_token(value):
    return isinstance(value, tuple) and len(value) >= 2 and value[0] in ("tensor", "value")


def _render(value, limit=160):
    """A signature part as text: tensor tokens become `a tensor` / its value, nothing else changes."""
    if _is_token(value):
        text = "a tensor" if value[0] == "tensor" else "a %s value" % np.dtype(value[1]).name
    elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        text = "shape %s" % (value,)
    elif isinstance(value, (tuple, list)):
        text = " ".join(_render(v, limit) for v in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _difference(a, b):
    """(what, a's, b's) for the first labelled part where two signatures differ; for lists, the
    first differing entry."""
    for label in list(a) + [k for k in b if k not in a]:
        mine, theirs = a.get(label), b.get(label)
        if mine == theirs:
            continue
        if isinstance(mine, list) and isinstance(theirs, list):
            for i, (x, y) in enumerate(zip(mine, theirs)):
                if x != y:
                    return "%s entry %d" % (label, i), x, y
            longer = mine if len(mine) > len(theirs) else theirs
            return ("%s length" % label, "%d entries" % len(mine),
                    "%d entries (next: %s)" % (len(theirs), _render(longer[min(len(mine), len(theirs))])))
        return label, mine, theirs
    return None


CONVERT_ADVICE = "pass --optimizer to say which algorithm wrote the file (source_optimizer=... in Python)"
MIGRATE_ADVICE = ("read it as one of them: load_state(..., optimizer=...) or "
                  "keras_opt_migrate.candidates.as_candidate(state, name)")


def migrate_candidates(state, to, signature, *, what="the output", prepare=None, advice=CONVERT_ADVICE, **options):
    """(target, report) of `migrate` when every candidate of an ambiguous state gives the same
    `signature(target)`; MappingError naming the candidates and the first difference otherwise.

    prepare(target, report): applied to each candidate's result before its signature is taken
    (e.g. dropping what the target format cannot hold).
    """
    from .migrate import migrate
    if not state.ambiguous:
        target, report = migrate(state, to, **options)
        if prepare:
            prepare(target, report)
        return target, report
    results, failures = [], []
    for name in state.candidates:
        try:
            target, report = migrate(as_candidate(state, name), to, **options)
            if prepare:
                prepare(target, report)
            results.append((name, target, report, signature(target)))
        except KerasOptMigrateError as e:
            failures.append((name, e))
    if failures and not results:
        raise failures[0][1]
    if failures:
        name, error = failures[0]
        error = _render(str(error), 300)
        raise MappingError("the file cannot tell %s apart, and only %s convert%s to %s: as %s: %s; %s"
                           % (phrase(state.candidates), phrase([r[0] for r in results]),
                              "s" if len(results) == 1 else "", to, name, error, advice))
    first_name, target, report, first = results[0]
    for name, _, _, other in results[1:]:
        diff = _difference(first, other)
        if diff:
            label, mine, theirs = diff
            raise MappingError("the file cannot tell %s apart, and %s differs between them: its %s would be %s "
                               "for %s, %s for %s; %s"
                               % (phrase(state.candidates), what, label, _render(mine), first_name,
                                  _render(theirs), name, advice))
    report.source_candidates = list(state.candidates)
    report.candidates_note = ("the file did not tell %s apart; %s is the same for every one of them "
                              "(compared: %s)" % (phrase(state.candidates), what, ", ".join(first)))
    return target, report
