"""Files that cannot tell algorithms apart: read without hints, reported, audited per candidate."""

import json

import numpy as np

import keras_opt_migrate as kom
from corpus import FIXTURES
from keras_opt_migrate.candidates import as_candidate
from keras_opt_migrate.cli import main

LEGACY_ADAM = str(FIXTURES / "k221" / "v2" / "adam" / "w.ckpt")


def test_inspect_reports_the_candidates_and_exits_0(capsys):
    assert main(["inspect", LEGACY_ADAM]) == 0
    out = capsys.readouterr().out
    assert "optimizer:   adam, adamax or lazyadam: the file cannot tell them apart; pass --optimizer to choose" in out
    assert main(["inspect", LEGACY_ADAM, "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["optimizer"] == "adam" and desc["candidates"] == ["adam", "lazyadam", "adamax"]
    assert main(["inspect", LEGACY_ADAM, "--json", "--optimizer", "adamax"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["optimizer"] == "adamax" and desc["candidates"] == [] and desc["candidates_note"] is None


def test_audit_without_hint_exits_0_and_names_the_candidates(capsys):
    assert main(["audit", LEGACY_ADAM]) == 0
    out = capsys.readouterr().out
    assert "v2 adam, adamax or lazyadam state" in out and "ran for each of them" in out
    assert main(["audit", LEGACY_ADAM, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"] == ["adam", "lazyadam", "adamax"]
    assert [f["code"] for f in report["findings"]] == ["legacy_into_new"]  # not algorithm-specific: once
    assert report["findings"][0]["candidates"] is None


def test_algorithm_dependent_checks_run_for_every_candidate():
    state = kom.load_state(LEGACY_ADAM)
    var = state.variable_names[0]
    shape = state.variable(var).shape
    state.slots[var]["velocity"] = -np.ones(shape, np.float32)  # Adam's v, Adamax's norm: never negative
    state.slots[var]["momentum"] = np.full(shape, np.nan, np.float32)
    report = kom.audit(state)
    negative = [f for f in report.findings if f.code == "negative_second_moment"]
    assert sorted(tuple(f.candidates) for f in negative) == [("adam",), ("adamax",), ("lazyadam",)]
    assert {f.message.split(":")[0] for f in negative} == {"if adam", "if adamax", "if lazyadam"}
    assert {f.slot for f in negative} == {"velocity", "norm"}  # each candidate's own name for the tensor
    non_finite = [f for f in report.findings if f.code == "non_finite"]
    assert len(non_finite) == 1 and non_finite[0].candidates is None and non_finite[0].slot == "momentum"
    assert report.tensors_checked == sum(len(per) for per in state.slots.values()) + len(state.extra)


def test_a_candidate_view_holds_the_same_tensors():
    state = kom.load_state(LEGACY_ADAM)
    view = as_candidate(state, "adamax")
    assert view.optimizer == "adamax" and not view.ambiguous and state.ambiguous
    for var in state.variable_names:
        assert view.slots[var]["momentum"] is state.slots[var]["momentum"]
        assert view.slots[var]["norm"] is state.slots[var]["velocity"]
        assert view.key_of(var, "norm") == state.key_of(var, "velocity")
