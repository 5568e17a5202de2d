"""The command line: output, exit codes, one-line errors, inputs left untouched."""

import json
import subprocess
import sys

import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.cli import main


@pytest.fixture
def state_file(tmp_path):
    state = kom.OptimizerState(
        "adam", "v2", {"learning_rate": 0.01}, 3, [kom.VariableSpec("hidden/kernel", (5, 4))],
        {"hidden/kernel": {"momentum": np.ones((5, 4), np.float32), "velocity": np.ones((5, 4), np.float32)}},
        {"loss_scale": np.float32(2048.0)}, {})
    path = tmp_path / "state.h5"
    kom.save_state(state, path)
    return path


def test_inspect_text_and_json(state_file, capsys):
    assert main(["inspect", str(state_file)]) == 0
    out = capsys.readouterr().out
    assert "optimizer:   adam" in out and "hidden/kernel" in out and "loss_scale" in out and "2048" in out
    assert main(["inspect", str(state_file), "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["iterations"] == 3 and desc["variables"][0]["slots"]["velocity"]["shape"] == [5, 4]
    assert desc["extra"]["loss_scale"]["value"] == 2048.0


def test_audit_strict_exit_codes(state_file, tmp_path, capsys):
    assert main(["audit", str(state_file), "--strict"]) == 0
    bad = kom.load_state(state_file).materialized()
    bad.slots["hidden/kernel"]["velocity"][0, 0] = np.nan
    kom.save_state(bad, tmp_path / "bad.h5")
    assert main(["audit", str(tmp_path / "bad.h5")]) == 0
    assert main(["audit", str(tmp_path / "bad.h5"), "--strict"]) == 1
    assert main(["audit", str(tmp_path / "bad.h5"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "non_finite" in out


def _run(*args):
    return subprocess.run([sys.executable, "-m", "keras_opt_migrate", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 50, b"PK\x03\x04garbage", b"hello"])
def test_bad_input_exits_2_with_one_line(tmp_path, content):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    result = _run("inspect", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in result.stderr
    assert path.read_bytes() == content


def test_missing_file_and_bad_arguments(tmp_path):
    result = _run("audit", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    result = _run("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_diff_exit_codes(state_file, tmp_path, capsys):
    assert main(["diff", str(state_file), str(state_file)]) == 0
    assert "no differences" in capsys.readouterr().out
    other = kom.load_state(state_file).materialized()
    other.slots["hidden/kernel"]["momentum"] = other.slots["hidden/kernel"]["momentum"] + 1e-4
    other.iterations = 4
    kom.save_state(other, tmp_path / "other.h5")
    assert main(["diff", str(state_file), str(tmp_path / "other.h5")]) == 1
    out = capsys.readouterr().out
    assert "iterations" in out and "max |a - b| = 0.0001" in out
    assert main(["diff", str(state_file), str(tmp_path / "other.h5"), "--atol", "1e-3", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in report["entries"]] == ["iterations"]
