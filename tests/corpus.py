"""Access to the frozen fixture corpus and its ground truth (see fixtures/FORMAT.md).

Tests compare what our readers produce with what the *real* version recorded when it
wrote the file: every slot tensor bit-exact and attached to the right model variable.
"""

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from keras_opt_migrate.optimizers.registry import spec_for_class, get_spec
from keras_opt_migrate.schema import materialize

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# The real versions' names for per-slot attribute lists, when a generator recorded those.
_ATTRIBUTE_SLOTS = {
    "_momentums": "momentum", "momentums": "momentum", "_velocities": "velocity", "_velocity_hats": "velocity_hat",
    "_accumulators": "accumulator", "_model_variables_moving_average": "average",
    "_accumulated_gradients": "gradient_accumulator", "_linears": "linear",
}


@dataclasses.dataclass
class Case:
    path: Path
    truth: dict

    @property
    def id(self):
        return "%s/%s/%s" % (self.truth["label"], self.truth["group"], self.truth["case"])

    @functools.cached_property
    def arrays(self):
        with np.load(self.path / "truth.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def file(self, name):
        return self.path / name

    def has(self, name):
        return name in self.truth.get("files", {})

    @property
    def generation(self):
        return self.truth["generation"]

    def spec(self):
        """The algorithm spec of the optimizer that wrote the case (the inner one of a loss-scale wrapper)."""
        opt = self.truth["optimizer"]
        config = opt.get("config") or {}
        inner = config.get("inner_optimizer") or config.get("optimizer")
        if isinstance(inner, dict) and inner.get("class_name"):
            opt = inner
        return spec_for_class(opt.get("class_name") or "", self.generation)

    def opt_array(self, i):
        return self.arrays["opt/%d" % i]

    def model_weights(self):
        return [self.arrays["model/%d" % i] for i in range(len(self.truth["model_weights"]))]

    def after_weights(self):
        return [self.arrays["after/%d" % i] for i in range(len(self.truth["model_weights"]))]

    def batches(self):
        return self.arrays["data/x"], self.arrays["data/y"]


def mislabelled(case):
    """Some k212 `experimental/` fixtures hold a legacy optimizer (truth module `keras.optimizers.legacy.*`,
    every var_index null): the generator's label is wrong, the file is a v2 checkpoint."""
    module = case.truth["optimizer"].get("module") or ""
    legacy_names = any(w["name"].endswith("/iter:0") for w in case.truth["optimizer_weights"])
    return case.generation == "experimental" and (".legacy" in module or legacy_names)


def all_cases():
    out = []
    for truth_path in sorted(FIXTURES.glob("*/*/*/truth.json")):
        if truth_path.parent.parent.name == "models":
            continue  # the real-architecture corpus has its own truth layout: tests/models_corpus.py
        with open(truth_path) as f:
            out.append(Case(truth_path.parent, json.load(f)))
    return out


def cases_with_file(kind_prefix):
    """(case, file name) for every fixture file whose kind in truth['files'] starts with kind_prefix."""
    out = []
    for case in all_cases():
        for name, kind in sorted(case.truth.get("files", {}).items()):
            if kind.startswith(kind_prefix):
                out.append((case, name))
    return out


def canonical_slot(case, spec, slot):
    if slot in _ATTRIBUTE_SLOTS:
        return _ATTRIBUTE_SLOTS[slot]
    if spec is not None:
        name = spec.canonical_slot(case.generation, slot)
        if name is not None:
            return name
    return slot


def assert_matches_truth(state, case, *, check_iterations=True, skip_slots=()):
    """Every slot tensor the real version recorded is in `state`, bit-exact, on the right variable.

    skip_slots: canonical slot names a format is known not to hold (documented by the caller).
    """
    truth = case.truth
    spec = get_spec(state.optimizer)
    model = truth["model_weights"]
    assert [tuple(v.shape) for v in state.variables] == [tuple(m["shape"]) for m in model], (
        "variables %s != truth %s" % ([v.shape for v in state.variables], [m["shape"] for m in model]))
    expected = 0
    for i, w in enumerate(truth["optimizer_weights"]):
        if w["var_index"] is None:
            continue
        slot = canonical_slot(case, spec, w["slot"])
        if slot in skip_slots:
            continue
        expected += 1
        var = state.variables[w["var_index"]].name
        assert slot in state.slots.get(var, {}), "%s: slot %r of %s (truth %s) missing; have %s" % (
            case.id, slot, var, w["name"], sorted(state.slots.get(var, {})))
        got = materialize(state.slots[var][slot])
        want = case.opt_array(i)
        assert got.dtype == want.dtype, "%s %s: dtype %s != %s" % (case.id, w["name"], got.dtype, want.dtype)
        assert got.shape == want.shape, "%s %s: shape %s != %s" % (case.id, w["name"], got.shape, want.shape)
        assert np.array_equal(got, want), "%s %s: values differ (max |d| %g)" % (
            case.id, w["name"], float(np.max(np.abs(got.astype(np.float64) - want))))
    got_count = sum(len([s for s in per if s not in skip_slots]) for per in state.slots.values())
    assert got_count == expected, "%s: state has %d slot tensors, truth %d" % (case.id, got_count, expected)
    if check_iterations:
        assert state.iterations == truth["iterations"], "%s: iterations %r != %r" % (
            case.id, state.iterations, truth["iterations"])
