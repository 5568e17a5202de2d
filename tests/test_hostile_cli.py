"""Hostile input round 2 (issue 12) at the command line: special files, outputs onto inputs,
arguments of the wrong type, control characters in paths.

The contract for every case: exit 2, exactly one line on stderr starting
`keras-opt-migrate: error: `, no traceback, no output left behind, every input byte-identical
with its mtime unchanged. Damaged files live in `fixtures/attacks/make_attacks.py`
(tests/test_attacks.py); this file covers what is not a file's content.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.cli import main
from keras_opt_migrate.errors import FormatError, KerasOptMigrateError
from timeouts import time_limit

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
ADAM = FIXTURES / "k221" / "v2" / "adam"
PREFIX = "keras-opt-migrate: error: "
TIME_LIMIT = 60


def _snapshot(*roots):
    """{path: (bytes, mtime)} of every regular file under (or at) the roots, and the names of the rest."""
    out = {}
    for root in map(Path, roots):
        paths = [root] if not root.is_dir() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink() or not os.path.lexists(p):
                out[str(p)] = ("link", os.readlink(p) if p.is_symlink() else None)
            elif p.is_file():
                out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
            else:
                out[str(p)] = ("other", p.stat().st_mode)
    return out


def _one_error(capsys, argv, must_name=None):
    """Run the CLI in-process under a time limit; assert the one-line error; return it."""
    with time_limit(TIME_LIMIT, " ".join(map(str, argv))):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own refusals exit from parse_args
            rc = e.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert rc == 2, "exit %r (stderr %r)" % (rc, captured.err)
    assert len(lines) == 1 and lines[0].startswith(PREFIX), "not one error line: %r" % captured.err
    assert "Traceback" not in captured.err and "internal error" not in lines[0], lines[0]
    if must_name is not None:
        assert must_name in lines[0], "%r does not name %r" % (lines[0], must_name)
    return lines[0]


def _copy(tmp_path, *names, src=ADAM):
    for name in names:
        origin = src / name
        if origin.is_dir():
            shutil.copytree(origin, tmp_path / name)
        else:
            shutil.copy(origin, tmp_path / name)


# -- special files ----------------------------------------------------------------------------------

def _fifo(tmp_path, name="state.h5"):
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _socket(tmp_path, name="state.h5"):
    path = tmp_path / name
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def _commands(path, other, out):
    return [["inspect", path], ["audit", path, "--strict"], ["diff", path, other], ["diff", other, path],
            ["convert", path, out, "--to", "keras3"], ["convert", path, out, "--to", "keras3", "--dry-run"],
            ["upgrade", path, out]]


@pytest.mark.parametrize("make", [_fifo, _socket], ids=["fifo", "socket"])
def test_fifo_and_socket_inputs_are_refused_without_blocking(make, tmp_path, capsys):
    path = make(tmp_path)
    other = ADAM / "m.h5"
    for argv in _commands(path, other, tmp_path / "out.keras"):
        line = _one_error(capsys, argv, must_name=str(path))
        assert ("FIFO" if make is _fifo else "socket") in line, line
        assert not (tmp_path / "out.keras").exists()
    with pytest.raises(FormatError, match="not a regular file or directory"):
        kom.load_state(path)
    with pytest.raises(FormatError, match="not a regular file or directory"):  # a named format opens nothing either
        kom.load_state(path, format="keras_h5")


def test_fifo_as_checkpoint_index_is_refused(tmp_path, capsys):
    _copy(tmp_path, "w.ckpt.data-00000-of-00001")
    os.mkfifo(tmp_path / "w.ckpt.index")
    _one_error(capsys, ["inspect", tmp_path / "w.ckpt", "--optimizer", "adam"], must_name="FIFO")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_device_inputs_are_refused(device, tmp_path, capsys):
    if not os.path.exists(device):
        pytest.skip("%s does not exist on this system" % device)
    for argv in _commands(device, ADAM / "m.h5", tmp_path / "out.keras"):
        line = _one_error(capsys, argv, must_name=device)
        assert "character device" in line, line
    assert os.listdir(tmp_path) == []


def test_fifo_in_a_real_subprocess_exits_instead_of_hanging(tmp_path):
    """The real `python -m keras_opt_migrate`: a FIFO nobody writes to must not block it."""
    path = _fifo(tmp_path)
    env = dict(os.environ)
    env.pop("KERAS_OPT_MIGRATE_DEBUG", None)
    try:
        r = subprocess.run([sys.executable, "-m", "keras_opt_migrate", "inspect", str(path)], capture_output=True,
                           text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("inspect of a FIFO hung")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(PREFIX + str(path)), r.stderr


def test_variables_fifo_is_not_opened(tmp_path, capsys):
    """A --variables FIFO is no JSON file; it is read as NAME:SHAPE text and refused, never opened."""
    _copy(tmp_path, "w.ckpt.index", "w.ckpt.data-00000-of-00001")
    fifo = _fifo(tmp_path, "vars.json")
    _one_error(capsys, ["inspect", tmp_path / "w.ckpt", "--optimizer", "adam", "--variables", fifo])


# -- outputs onto or inside inputs ------------------------------------------------------------------

def _prepare(tmp_path, kind):
    """(src, [roots to snapshot]) of one source of each kind, copied into tmp_path."""
    if kind == "h5":
        _copy(tmp_path, "m.h5")
        return tmp_path / "m.h5", ["--to", "experimental"]
    if kind == "tf":
        _copy(tmp_path, "w.ckpt.index", "w.ckpt.data-00000-of-00001", "checkpoint")
        return tmp_path / "w.ckpt", ["--to", "experimental", "--optimizer", "adam"]
    if kind == "savedmodel":
        _copy(tmp_path, "sm")
        return tmp_path / "sm", ["--to", "v2"]
    if kind == "native":
        kom.save_state(kom.load_state(ADAM / "m.h5"), tmp_path / "s.kom.h5")
        return tmp_path / "s.kom.h5", ["--to", "v2"]
    raise AssertionError(kind)


def _check_refused(capsys, tmp_path, argv):
    before = _snapshot(tmp_path)
    line = _one_error(capsys, argv)
    assert _snapshot(tmp_path) == before, "the input or its directory changed"
    return line


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("kind", ["h5", "tf", "savedmodel", "native"])
def test_output_onto_the_input_is_refused(kind, force, tmp_path, capsys):
    src, options = _prepare(tmp_path, kind)
    argv = ["convert", src, src, *options] + (["--force"] if force else [])
    line = _check_refused(capsys, tmp_path, argv)
    assert "is the input" in line or "existing directory" in line, line


@pytest.mark.parametrize("kind", ["h5", "tf", "native"])
def test_output_through_a_symlink_or_a_hard_link_to_the_input_is_refused(kind, tmp_path, capsys):
    src, options = _prepare(tmp_path, kind)
    target = Path(str(src) + ".index") if kind == "tf" else src
    link, hard = tmp_path / "link", tmp_path / "hard"
    os.symlink(target.name, str(link) + (".index" if kind == "tf" else ""))
    os.link(target, str(hard) + (".index" if kind == "tf" else ""))
    for dst in (link, hard):
        line = _check_refused(capsys, tmp_path, ["convert", src, dst, *options, "--force"])
        assert "is the input" in line, line


def test_output_onto_a_checkpoint_data_shard_is_refused(tmp_path, capsys):
    src, options = _prepare(tmp_path, "tf")
    dst = tmp_path / "w.ckpt.data-00000-of-00001"
    line = _check_refused(capsys, tmp_path, ["convert", src, dst, *options, "--format", "keras_h5", "--force"])
    assert "is the input" in line, line


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_output_inside_the_input_savedmodel_is_refused(force, tmp_path, capsys):
    src, options = _prepare(tmp_path, "savedmodel")
    for dst in (src / "out.h5", src / "variables" / "x.ckpt", src / "variables" / "variables"):
        line = _check_refused(capsys, tmp_path, ["convert", src, dst, *options] + (["--force"] if force else []))
        assert "inside the input" in line or "is the input" in line, line


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_output_onto_an_existing_directory_is_refused(force, tmp_path, capsys):
    src, options = _prepare(tmp_path, "h5")
    keep = tmp_path / "results"
    keep.mkdir()
    (keep / "precious.txt").write_text("do not delete")
    line = _check_refused(capsys, tmp_path, ["convert", src, keep, *options] + (["--force"] if force else []))
    assert "existing directory" in line, line
    assert (keep / "precious.txt").read_text() == "do not delete"


def test_api_refuses_output_onto_input(tmp_path):
    src, _ = _prepare(tmp_path, "h5")
    with pytest.raises(FormatError, match="is the input"):
        kom.convert(src, src, "experimental", force=True)


# -- arguments ------------------------------------------------------------------------------------

H5 = ADAM / "m.h5"
TF = ADAM / "w.ckpt"


@pytest.mark.parametrize("config", ["[1, 2]", "7", '"adam"', "null", "{not json", "[" * 100000 + "]" * 100000])
@pytest.mark.parametrize("command", ["inspect", "audit", "convert", "diff"])
def test_config_must_be_a_json_object(command, config, tmp_path, capsys):
    argv = {"inspect": ["inspect", H5], "audit": ["audit", H5], "diff": ["diff", H5, H5],
            "convert": ["convert", H5, tmp_path / "o.h5", "--to", "experimental"]}[command]
    line = _one_error(capsys, argv + ["--config", config], must_name="--config")
    assert "JSON" in line, line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("config, field", [('{"epsilon": "tiny"}', "epsilon"), ('{"beta_1": true}', "beta_1"),
                                           ('{"amsgrad": "yes"}', "amsgrad"), ('{"learning_rate": NaN}', "learning_rate"),
                                           ('{"learning_rate": [0.1]}', "learning_rate")])
def test_config_values_of_the_wrong_type_are_refused(config, field, tmp_path, capsys):
    for argv in (["inspect", TF, "--optimizer", "adam"], ["convert", TF, tmp_path / "o.h5", "--to", "experimental",
                                                          "--optimizer", "adam"]):
        line = _one_error(capsys, argv + ["--config", config], must_name=field)
        assert str(TF) in line, line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("config, expect", [("[]", "--target-config"), ("3", "--target-config"),
                                            ('{"epsilon": "tiny"}', "epsilon"), ('{"beta_2": Infinity}', "beta_2")])
def test_target_config_is_validated(config, expect, tmp_path, capsys):
    _one_error(capsys, ["convert", H5, tmp_path / "o.h5", "--to", "experimental", "--target-config", config],
               must_name=expect)
    assert os.listdir(tmp_path) == []
    with pytest.raises(KerasOptMigrateError):
        kom.convert(H5, tmp_path / "o.h5", "experimental", config=json.loads(config.replace("Infinity", "1e999")))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content", [{"name": "hidden/kernel", "shape": [5, 4]}, "[" * 100000 + "]" * 100000,
                                     [["hidden/kernel", [5, -4]]], [["hidden/kernel", "5x4"]], [[1, [5]]], [7],
                                     "not json"], ids=["object", "deep", "negative", "shape_text", "name_number",
                                                       "number_item", "not_json"])
def test_variables_file_is_validated(content, tmp_path, capsys):
    path = tmp_path / "vars.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    _one_error(capsys, ["inspect", TF, "--optimizer", "adam", "--variables", path], must_name="--variables"
               if not isinstance(content, (dict, str)) else str(path))


@pytest.mark.parametrize("text", ["hidden/kernel:5xq", "hidden/kernel:5x-4", ":5x4"])
def test_variables_text_is_validated(text, capsys):
    _one_error(capsys, ["inspect", TF, "--optimizer", "adam", "--variables", text], must_name="--variables")


@pytest.mark.parametrize("command", ["convert", "upgrade"])
def test_source_format_is_honoured(command, tmp_path, capsys):
    """--source-format changes what reads SRC: the h5 model read as a native file is refused, as a keras_h5 it converts."""
    dst = tmp_path / "o.keras"
    base = ["convert", H5, dst, "--to", "keras3"] if command == "convert" else ["upgrade", H5, dst]
    line = _one_error(capsys, base + ["--source-format", "native"], must_name=str(H5))
    assert "keras-opt-migrate state file" in line, line
    _one_error(capsys, base + ["--source-format", "bogus"], must_name="unknown format")
    assert os.listdir(tmp_path) == []
    assert main([str(a) for a in base + ["--source-format", "keras_h5"]]) == 0, capsys.readouterr().err
    assert dst.exists()


@pytest.mark.parametrize("atol", ["-1", "nan", "inf", "tiny"])
def test_diff_tolerance_is_a_finite_non_negative_number(atol, capsys):
    _one_error(capsys, ["diff", H5, H5, "--atol", atol], must_name="--atol")


@pytest.mark.parametrize("argv, field", [
    (["inspect", H5, "--format", "bogus"], "unknown format 'bogus'"),
    (["convert", H5, "OUT", "--to", "v2", "--format", "bogus"], "unknown format 'bogus'"),
    (["convert", H5, "OUT", "--to", "v2", "--to-optimizer", "bogus"], "unknown optimizer 'bogus'"),
    (["convert", H5, "OUT", "--to", "v9"], "invalid choice"),
    (["inspect", H5, "--optimizer", "bogus"], "unknown optimizer 'bogus'")])
def test_named_choices_are_checked(argv, field, tmp_path, capsys):
    argv = [tmp_path / "o.h5" if a == "OUT" else a for a in argv]
    _one_error(capsys, argv, must_name=field)
    assert os.listdir(tmp_path) == []


# -- messages -------------------------------------------------------------------------------------

def test_a_newline_in_a_path_stays_one_escaped_line(tmp_path, capsys):
    bad = tmp_path / "evil\nname.h5"
    bad.write_bytes(b"hello")
    line = _one_error(capsys, ["inspect", bad])
    assert "evil\\nname.h5" in line, line
    line = _one_error(capsys, ["inspect", tmp_path / "missing\x1b[31m.h5"])
    assert "missing\\x1b[31m.h5" in line, line
    good = tmp_path / "two\nlines.h5"
    shutil.copy(H5, good)
    line = _one_error(capsys, ["convert", good, good, "--to", "experimental", "--force"])
    assert "two\\nlines.h5" in line and "is the input" in line, line


def test_inspect_of_a_native_file_prints_its_own_path(tmp_path, capsys):
    native = tmp_path / "s.kom.h5"
    kom.save_state(kom.load_state(H5), native)
    assert main(["inspect", str(native), "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["path"] == str(native)
    state = kom.load_state(native)
    assert state.source["native"]["first_read_from"] == str(H5)
