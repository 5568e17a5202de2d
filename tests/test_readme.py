"""The README's quickstart keeps working: its keras-opt-migrate invocations run as written."""

import os
import re
import shlex
from pathlib import Path

from keras_opt_migrate.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _command(marker):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- %s -->\s*```sh\n(.+?)\n```" % marker, text, re.S)
    assert block, "README.md has no %s block" % marker
    return block.group(1).strip()


def test_main_command_runs(tmp_path, monkeypatch, capsys):
    steps = [shlex.split(step) for step in _command("main-command").split("&&")]
    cli_steps = [s[1:] for s in steps if s and s[0].endswith("bin/keras-opt-migrate")]
    assert [s[0] for s in cli_steps] == ["inspect", "audit", "upgrade"]
    monkeypatch.chdir(tmp_path)
    for args in cli_steps:
        args = [str(ROOT / a) if a.startswith("fixtures/") else a for a in args]
        if args[0] == "upgrade":
            os.makedirs("upgraded", exist_ok=True)
        assert main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "upgraded" / "adam.index").exists()
    out = capsys.readouterr().out
    assert "optimizer:   adam, adamax or lazyadam: the file cannot tell them apart" in out and "keras3" in out
    assert [s for s in cli_steps if s[0] in ("inspect", "audit") and "--optimizer" in s] == []  # no hint needed


def test_ci_runs_the_test_command():
    command = _command("test-command")
    assert "pytest" in command
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
