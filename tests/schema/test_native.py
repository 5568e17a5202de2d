"""The native on-disk form: exact round trip, versioning, atomic writes, hostile headers."""

import json
import os
import time

import h5py
import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.formats import native
from keras_opt_migrate.schema import materialize
from keras_opt_migrate.schema.upgrade import upgrade_header


def _state():
    rng = np.random.RandomState(0)
    return kom.OptimizerState(
        optimizer="adam", generation="v2",
        config={"learning_rate": {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.01}},
                "beta_1": 0.8, "amsgrad": False},
        iterations=7,
        variables=[kom.VariableSpec("hidden/kernel", (5, 4)), kom.VariableSpec("hidden/bias", (4,), "float16")],
        slots={"hidden/kernel": {"momentum": rng.randn(5, 4).astype(np.float32),
                                 "velocity": rng.rand(5, 4).astype(np.float32)},
               "hidden/bias": {"momentum": rng.randn(4).astype(np.float16)}},
        extra={"beta1_power": np.float32(0.4096), "loss_scale_good_steps": np.int64(1)},
        source={"format": "tf_checkpoint", "keys": {"slots/hidden/kernel/momentum": "a/b"}},
        warnings=["something the user must know"])


def test_round_trip_is_exact(tmp_path):
    state = _state()
    path = tmp_path / "s.h5"
    kom.save_state(state, path)
    back = kom.load_state(path)
    assert back.optimizer == "adam" and back.generation == "v2" and back.iterations == 7
    assert back.config == state.config
    assert [v.to_json() for v in back.variables] == [v.to_json() for v in state.variables]
    for var, per in state.slots.items():
        assert set(back.slots[var]) == set(per)
        for slot, value in per.items():
            got = materialize(back.slots[var][slot])
            assert got.dtype == value.dtype and np.array_equal(got, value)
    for name, value in state.extra.items():
        got = materialize(back.extra[name])
        assert got.dtype == np.asarray(value).dtype and np.array_equal(got, value)
    assert back.source["keys"] == state.source["keys"] and back.source["format"] == "tf_checkpoint"
    assert back.warnings == state.warnings
    assert back.schema_version == kom.SCHEMA_VERSION


def test_writes_are_deterministic(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    kom.save_state(_state(), a)
    time.sleep(1.1)  # HDF5 object timestamps have a resolution of one second
    kom.save_state(_state(), b)
    assert a.read_bytes() == b.read_bytes()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    state = _state()
    state.slots["hidden/kernel"]["momentum"] = kom.LazyTensor((5, 4), "float32", _boom, origin="x")
    with pytest.raises(RuntimeError):
        kom.save_state(state, tmp_path / "s.h5")
    assert os.listdir(tmp_path) == []


def _boom():
    raise RuntimeError("source vanished mid-write")


def test_existing_output_replaced_atomically(tmp_path):
    path = tmp_path / "s.h5"
    path.write_bytes(b"old")
    kom.save_state(_state(), path)
    assert kom.load_state(path).iterations == 7
    assert os.listdir(tmp_path) == ["s.h5"]


def test_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "s.h5"
    kom.save_state(_state(), path)
    with h5py.File(path, "r+") as f:
        header = json.loads(f.attrs["header"])
        header["schema_version"] = kom.SCHEMA_VERSION + 1
        f.attrs["header"] = json.dumps(header)
    with pytest.raises(kom.SchemaError, match="upgrade keras-opt-migrate"):
        kom.load_state(path)


def test_upgrade_chain_rejects_nonsense_versions():
    with pytest.raises(kom.SchemaError):
        upgrade_header({"schema_version": 0})
    with pytest.raises(kom.SchemaError):
        upgrade_header({"schema_version": "1"})
    assert upgrade_header({"schema_version": kom.SCHEMA_VERSION})["schema_version"] == kom.SCHEMA_VERSION


def test_upgrade_chain_applies_registered_steps(monkeypatch):
    from keras_opt_migrate.schema import upgrade
    monkeypatch.setattr(upgrade, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(upgrade, "UPGRADES", {
        1: lambda h: dict(h, schema_version=2, a=1),
        2: lambda h: dict(h, schema_version=3, b=h["a"] + 1)})
    assert upgrade.upgrade_header({"schema_version": 1}) == {"schema_version": 3, "a": 1, "b": 2}


@pytest.mark.parametrize("mutate", ["drop_header", "bad_json", "missing_dataset", "soft_link"])
def test_corrupt_native_files_give_one_line_errors(tmp_path, mutate):
    path = tmp_path / "s.h5"
    kom.save_state(_state(), path)
    with h5py.File(path, "r+") as f:
        if mutate == "drop_header":
            del f.attrs["header"]
        elif mutate == "bad_json":
            f.attrs["header"] = "{not json"
        elif mutate == "missing_dataset":
            del f["t/0"]
        else:
            del f["t/0"]
            f["t/0"] = h5py.SoftLink("/t/1")
    before = path.read_bytes()
    with pytest.raises(kom.FormatError) as e:
        kom.load_state(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == before


def test_truncated_native_file(tmp_path):
    path = tmp_path / "s.h5"
    kom.save_state(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(kom.FormatError) as e:
        kom.load_state(path)
    assert str(path) in str(e.value)


def test_invalid_state_is_not_written(tmp_path):
    state = _state()
    state.generation = "v9"
    with pytest.raises(kom.SchemaError, match="generation"):
        kom.save_state(state, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()
    assert native.FORMAT.validate(str(tmp_path / "s.h5")) is False


def test_candidates_round_trip(tmp_path):
    """Schema 2 keeps the algorithms a file could not tell apart (schema/v2.py)."""
    state = _state()
    state.candidates = ["adam", "lazyadam", "adamax"]
    path = tmp_path / "s.h5"
    kom.save_state(state, path)
    with h5py.File(path, "r") as f:
        assert f.attrs["keras_opt_migrate_schema_version"] == 2
        assert json.loads(f.attrs["header"])["candidates"] == ["adam", "lazyadam", "adamax"]
    back = kom.load_state(path)
    assert back.candidates == ["adam", "lazyadam", "adamax"] and back.ambiguous


def test_version_1_file_is_upgraded(tmp_path):
    """A file written with schema 1 (no candidates field) reads as a state that names one algorithm."""
    path = tmp_path / "s.h5"
    kom.save_state(_state(), path)
    with h5py.File(path, "r+") as f:
        header = json.loads(f.attrs["header"])
        del header["candidates"]
        header["schema_version"] = 1
        f.attrs["header"] = json.dumps(header)
        f.attrs["keras_opt_migrate_schema_version"] = 1
    back = kom.load_state(path)
    assert back.candidates == [] and not back.ambiguous and back.optimizer == "adam" and back.iterations == 7


def test_candidates_must_start_with_the_optimizer():
    state = _state()
    state.candidates = ["adamax", "adam"]
    with pytest.raises(kom.SchemaError, match="candidates"):
        state.validate()
