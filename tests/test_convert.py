"""convert / upgrade orchestration: staging, read-back verification, --force, --dry-run.

The real-version checks of each writer (files load in tf_keras / Keras 3 and resume training)
live beside the writers' tests; here the target is our native format, whose reader is exact.
"""

import json
import os

import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import FIXTURES
from keras_opt_migrate.cli import main
from keras_opt_migrate.formats import native

TF1_ADAM = str(FIXTURES / "k221" / "tf1_namebased" / "adam" / "model.ckpt")


def test_convert_tf1_checkpoint_to_keras3_state(tmp_path):
    out = tmp_path / "adam.kom.h5"
    report = kom.convert(TF1_ADAM, out, "keras3")
    assert report.target_format == "native" and report.continuation == "float-tolerance"
    state = kom.load_state(out)
    source = kom.load_state(TF1_ADAM)
    assert state.generation == "keras3" and state.iterations == 3
    for var in source.variables:
        for slot in ("momentum", "velocity"):
            assert np.array_equal(np.asarray(state.slots[var.name][slot]), np.asarray(source.slots[var.name][slot]))
    assert os.listdir(tmp_path) == ["adam.kom.h5"]


def test_existing_output_needs_force_and_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "adam.kom.h5"
    out.write_bytes(b"precious")
    with pytest.raises(kom.FormatError, match="already exists"):
        kom.convert(TF1_ADAM, out, "keras3")
    assert out.read_bytes() == b"precious"
    kom.convert(TF1_ADAM, out, "keras3", dry_run=True, force=True)
    assert out.read_bytes() == b"precious"
    kom.convert(TF1_ADAM, out, "keras3", force=True)
    assert kom.load_state(out).generation == "keras3"


def test_failed_verification_leaves_no_output(tmp_path, monkeypatch):
    out = tmp_path / "adam.kom.h5"
    real_read = native.NativeFormat.read

    def read_then_tamper(self, path, **options):
        back = real_read(self, path, **options).materialized()
        back.slots[back.variables[0].name]["velocity"] = back.slots[back.variables[0].name]["velocity"] * 2 + 1
        return back

    monkeypatch.setattr(native.NativeFormat, "read", read_then_tamper)
    with pytest.raises(kom.FormatError, match="does not read back"):
        kom.convert(TF1_ADAM, out, "keras3")
    assert os.listdir(tmp_path) == []


def test_cli_convert_dry_run_json_and_errors(tmp_path, capsys):
    out = tmp_path / "x.kom.h5"
    assert main(["convert", TF1_ADAM, str(out), "--to", "v2", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == {"optimizer": "adam", "generation": "v2"} and report["counts"]["mapped"] == 9
    assert not out.exists()
    assert main(["convert", TF1_ADAM, str(out), "--to", "v2"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["convert", TF1_ADAM, str(out), "--to", "v2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", TF1_ADAM, str(out), "--to", "v2", "--to-optimizer", "adafactor"]) == 2
    assert "no adafactor" in capsys.readouterr().err


def test_cli_convert_refusal_is_one_line(tmp_path, capsys):
    ema = FIXTURES / "k315" / "keras3" / "adam_ema" / "m.keras"
    assert main(["convert", str(ema), str(tmp_path / "o.kom.h5"), "--to", "v2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use_ema" in err[0] and "--partial" in err[0]
    assert main(["convert", str(ema), str(tmp_path / "o.kom.h5"), "--to", "v2", "--partial"]) == 0
    out = capsys.readouterr().out
    assert "dropped" in out and "average" in out
