"""`inspect` and `audit` on every file of the real-version fixture corpus, and on corrupted copies."""

import json
import shutil

import pytest

from corpus import all_cases, mislabelled
from keras_opt_migrate.cli import main

FILES = [(case, name) for case in all_cases() for name in sorted(case.truth.get("files", {}))]

# Files a real version wrote WITHOUT optimizer state (LAYOUTS.md §4): Keras v1 optimizers in
# graph mode save none in `save_weights` checkpoints, and a TFOptimizer-compiled model's .h5
# has neither optimizer weights nor config. Reading them must say exactly that (exit 2).
HOLDS_NO_STATE = {("v1", "save_weights_tf"), ("tfoptimizer", "h5")}
# TF checkpoints (save_weights, tf.train.Checkpoint, TF1 Saver): read without any hint.
TF_CHECKPOINT_KINDS = {"save_weights_tf", "tf_checkpoint", "tf1_saver"}


def _holds_no_state(case, name):
    return (case.truth["group"], case.truth["files"][name]) in HOLDS_NO_STATE


def _id(item):
    case, name = item
    return "%s:%s" % (case.id, name)


@pytest.mark.parametrize("item", FILES, ids=[_id(i) for i in FILES])
def test_inspect_and_audit_every_fixture(item, capsys):
    case, name = item
    path = str(case.file(name))
    args = [path]
    rc = main(["inspect", path, "--json"])
    if _holds_no_state(case, name):
        err = capsys.readouterr().err
        assert rc == 2 and "no optimizer" in err and path in err, err
        assert main(["audit", path]) == 2
        return
    if case.truth["files"][name] in TF_CHECKPOINT_KINDS:
        # Every TF checkpoint is read without hints; where it cannot tell the algorithm (legacy
        # Adam vs Adamax keys), the candidates are reported and the truth's algorithm is one of them.
        assert rc == 0, capsys.readouterr().err
    if rc == 2:
        # A Keras 3 .weights.h5 keeps no optimizer class: the reader must say so and ask for the
        # hint, never guess.
        err = capsys.readouterr().err
        assert "optimizer=" in err and path in err, err
        spec = case.spec()
        assert spec is not None, "no spec for %s" % case.truth["optimizer"]
        args = [path, "--optimizer", spec.name]
        rc = main(["inspect", *args, "--json"])
    if rc == 2:
        # A positional file without a config (.weights.h5) may also need the hyperparameters
        # that decide its layout (amsgrad, momentum, use_ema, a schedule).
        err = capsys.readouterr().err
        assert "config" in err and path in err, err
        args += ["--config", json.dumps(case.truth["optimizer"].get("config") or {})]
        rc = main(["inspect", *args, "--json"])
    assert rc == 0, capsys.readouterr().err
    desc = json.loads(capsys.readouterr().out)
    _check_candidates(case, desc)
    assert desc["generation"] == case.generation
    assert len(desc["variables"]) == len(case.truth["model_weights"])
    assert [v["shape"] for v in desc["variables"]] == [m["shape"] for m in case.truth["model_weights"]]
    if desc["iterations"] is not None:
        assert desc["iterations"] == case.truth["iterations"]
    assert main(["inspect", *args]) == 0
    text = capsys.readouterr().out
    assert "generation:  %s" % case.generation in text
    if desc["candidates"]:
        assert "the file cannot tell them apart; pass --optimizer to choose" in text, text
    assert main(["audit", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"] == desc["candidates"]
    assert report["tensors_checked"] >= sum(len(v["slots"]) for v in desc["variables"])
    # The corpus is healthy: no value-level finding may fire on it.
    bad = [f for f in report["findings"] if f["code"] in ("non_finite", "negative_second_moment", "shape_mismatch")]
    assert bad == []


def _check_candidates(case, desc):
    """The algorithm reported (or, for a file that cannot tell, every candidate) fits the truth."""
    if mislabelled(case):
        return  # a legacy optimizer under an `experimental` label (tests/formats/tf_support.py)
    spec = case.spec()
    assert spec is not None, case.truth["optimizer"]
    truth = spec.name
    if desc["candidates"]:
        assert truth in desc["candidates"] and desc["optimizer"] == desc["candidates"][0], (truth, desc["candidates"])
        assert len(desc["candidates"]) > 1
    else:
        assert desc["optimizer"] == truth


def _one_of_each_kind():
    seen, out = set(), []
    for case, name in FILES:
        if _holds_no_state(case, name):
            continue
        kind = case.truth["files"][name]
        if kind not in seen:
            seen.add(kind)
            out.append((case, name))
    return out


def _data_files(root, name):
    """The on-disk files behind a fixture entry (a checkpoint prefix has several)."""
    target = root / name
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file())
    if target.exists():
        return [target]
    return sorted(p for p in target.parent.glob(target.name + ".*") if p.is_file())


def _victim(files, which):
    """The file to damage: the one holding the tensors, or the one `inspect` reads (index / header)."""
    if which == "index":
        index = [p for p in files if p.name.endswith(".index")]
        if index:
            return index[0]
    data = [p for p in files if ".data-" in p.name]
    if data:
        return max(data, key=lambda p: p.stat().st_size)
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("item", _one_of_each_kind(), ids=[_id(i) for i in _one_of_each_kind()])
@pytest.mark.parametrize("which", ["index", "tensors"])
@pytest.mark.parametrize("damage", ["truncate", "zero"])
def test_corrupted_fixture_copies_exit_2_one_line(item, which, damage, tmp_path, capfd):
    case, name = item
    copy = tmp_path / "case"
    shutil.copytree(case.path, copy)
    files = _data_files(copy, name)
    assert files, "fixture %s lists %s but has no such files" % (case.id, name)
    victim = _victim(files, which)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\0" * len(data))
    snapshot = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    rc_inspect = main(["inspect", str(copy / name)])
    rc_audit = main(["audit", str(copy / name)])
    err = capfd.readouterr().err
    assert "Traceback" not in err
    # audit reads every tensor, so it must notice; inspect reads metadata only, so damage to a
    # tensor-data file that leaves the index intact may go unnoticed by it, but nothing else may.
    assert rc_audit == 2, err
    metadata_damaged = victim.name.endswith(".index") or len(files) == 1
    assert rc_inspect == 2 if metadata_damaged else rc_inspect in (0, 2), err
    lines = [l for l in err.splitlines() if l.startswith("keras-opt-migrate: error:")]
    assert len(lines) == (2 if rc_inspect == 2 else 1) and all(str(copy) in l for l in lines), err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == snapshot
