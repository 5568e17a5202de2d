"""The real-architecture model corpus itself: complete, readable, as planned, and its calibration reproducible.

The corpus (fixtures/<label>/models/) and the calibrated continuation tolerance
(fixtures/models_tolerance.json) are described in fixtures/FORMAT.md, section "The model corpus".
"""

import json
import sys

import numpy as np
import pytest

import models_corpus as mc
from models_corpus import gen_models

sys.path.insert(0, str(mc.FIXTURES / "generate"))
import calibrate_models  # noqa: E402

CASES = mc.model_cases()
SMALL_CASE = "k215/models/nested_adam_exp"   # every wrong answer applies; ~10 s in Keras 3


def test_corpus_is_the_plan():
    on_disk = sorted(c.id for c in CASES)
    planned = sorted("%s/models/%s" % (label, case) for label in gen_models.PLAN
                     for case, _, _, _ in gen_models.plan_cases(label))
    assert on_disk == planned
    committed = {m for m, spec in gen_models.MODELS.items() if spec[2]}
    opt_labels = {}
    for label in gen_models.PLAN:
        cases = mc.model_cases(label)
        assert {c.model for c in cases} == committed, label
        files = set().union(*(c.truth["files"] for c in cases))
        assert files == set(gen_models.ALL_FORMATS), (label, files)
        for c in cases:
            opt_labels.setdefault(c.truth["optimizer_key"], set()).add(label)
    assert set(opt_labels) == set(gen_models.OPTIMIZERS)
    assert all(len(labels) >= 2 for labels in opt_labels.values()), opt_labels


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_complete_and_readable(case):
    assert gen_models.check_case(str(case.path)) == []
    t = case.truth
    assert t["refused"] == {} or set(t["refused"]).isdisjoint(t["files"])
    with np.load(case.path / "truth.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    meta = t["model_weights"]
    assert any(not m["trainable"] for m in meta) == (t["model"] != "transformer")
    # every trainable weight has each of the optimizer's slots exactly once, paired by a same-shaped slot
    slots = {}
    for o in t["optimizer_weights"]:
        if o["var_index"] is not None:
            assert meta[o["var_index"]]["trainable"], o
            slots.setdefault(o["slot"], []).append(o["var_index"])
    trainable = [i for i, m in enumerate(meta) if m["trainable"]]
    assert slots and all(sorted(v) == trainable for v in slots.values()), sorted(slots)
    assert t["iterations"] == t["steps"]["train"]
    assert len(t["losses"]["train"]) == 3 and len(t["losses"]["continue"]) == 2
    # the recorded continuation really moved the model, and the truth measures as 0 against itself
    errors = mc.continuation_error(case, mc.recorded_steps(case))
    assert all(e["overall"] == 0 and e["max_trainable"] == 0 for e in errors.values())
    standing = mc.continuation_error(case, [case.before()] * 2)
    assert all(e["overall"] == pytest.approx(1.0) for e in standing.values())


def test_every_version_starts_from_the_same_point():
    by_model = {}
    for c in CASES:
        by_model.setdefault(c.model, set()).add(c.truth["initial_weights_sha256"])
    assert all(len(v) == 1 for v in by_model.values()), by_model


def test_tolerance_file_covers_the_corpus():
    with open(mc.TOLERANCE_FILE) as f:
        doc = json.load(f)
    assert sorted(doc["cases"]) == sorted(c.id for c in CASES)
    tol = doc["tolerance"]
    for c in CASES:
        assert "step1" in mc.judged_steps(c, tol), c.id
        res = doc["cases"][c.id]
        for step in mc.judged_steps(c, tol):
            assert calibrate_models.passes(res["correct"][step], tol["limits"], doc["margin"]), (c.id, step)
            for variant in calibrate_models.VARIANTS[1:]:
                if "n/a" not in res[variant]:
                    assert calibrate_models.refused(res[variant][step], tol["limits"], doc["margin"]), (c.id, variant)


def test_calibration_reproduces_in_keras3():
    """The recorded numbers of one small case come out again from the real Keras 3 optimizer."""
    pytest.importorskip("keras", minversion="3")
    with open(mc.TOLERANCE_FILE) as f:
        doc = json.load(f)
    case = mc.case_by_id(SMALL_CASE)
    recorded = doc["cases"][SMALL_CASE]
    got = calibrate_models.calibrate(case)
    limits, margin = doc["tolerance"]["limits"], doc["margin"]
    for step in mc.judged_steps(case, doc["tolerance"]):
        assert calibrate_models.passes(got["correct"][step], limits, margin), got["correct"][step]
    for variant in calibrate_models.VARIANTS[1:]:
        assert ("n/a" in got[variant]) == ("n/a" in recorded[variant]), variant
        if "n/a" in got[variant]:
            continue
        for step, e in got[variant].items():
            assert calibrate_models.refused(e, limits, margin), (variant, step, e)
            for key in ("max_trainable", "max_non_trainable", "overall"):
                assert e[key] == pytest.approx(recorded[variant][step][key], rel=1e-2), (variant, step, key)
