"""Every malformed file of `fixtures/attacks/make_attacks.py` through `load_state` and the CLI.

The contract (cli.py): bad input exits 2 with one line `keras-opt-migrate: error: <path>:
<problem>`, never a traceback, crash or hang; `convert` leaves no partial output; the inputs are
byte-identical afterwards; nothing a file names is ever executed. Attacks of class `findings`
read, and `audit --strict` exits 1 with the expected finding; class `same` reads as the original.

Most attacks run in-process through `cli.main` (under a SIGALRM time limit); bombs run in a
worker subprocess (`cli_worker`) with a timeout and a memory readout, and a few run the real
`python -m keras_opt_migrate` to prove nothing but the one line reaches stderr.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_worker import Worker
from timeouts import time_limit
from keras_opt_migrate import load_state
from keras_opt_migrate.cli import main
from keras_opt_migrate.errors import KerasOptMigrateError

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "keras-opt-migrate: error: "
TIME_LIMIT = 60  # seconds per in-process attack; the slowest takes ~2 s
MAX_RSS_KB = 3 * 1024 * 1024  # TensorFlow alone is ~0.6 GB; a bomb that allocated would be far above


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_attacks", ROOT / "fixtures" / "attacks" / "make_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _load_maker()
ATTACKS = {a[0]: a for a in MAKER.ATTACKS}
IN_PROCESS = [i for i, a in ATTACKS.items() if not a[4].get("isolate")]
ISOLATED = [i for i, a in ATTACKS.items() if a[4].get("isolate")]


def _tree_hash(root):
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The whole corpus, built once per test process; the fixtures it reads stay untouched."""
    sources = {ROOT / "fixtures" / s["dir"] for s in MAKER.SOURCES.values() if s["dir"]}
    before = {str(d): _tree_hash(d) for d in sources}
    out = tmp_path_factory.mktemp("attacks")
    manifest = MAKER.build(str(out))
    assert {str(d): _tree_hash(d) for d in sources} == before, "make_attacks.py modified a fixture"
    return out, {a["id"]: a for a in manifest}


def _commands(attack, path, original, out_dir):
    args = attack["args"]
    dst = out_dir / attack["dst"]
    return {
        "inspect": ["inspect", path, *args],
        "audit": ["audit", "--strict", "--json", path, *args],
        "diff": ["diff", path, original, *args],
        "dry_run": ["convert", path, str(dst), *attack["convert"], *args, "--dry-run"],
        "convert": ["convert", path, str(dst), *attack["convert"], *args],
    }


def _check(attack, name, rc, err, out, path, out_dir):
    """The contract for one command's exit code and stderr."""
    assert isinstance(rc, int) and rc in (0, 1, 2), "%s: exit %r" % (name, rc)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    expect = attack["expect"]
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith(PREFIX), "%s: not one error line: %r" % (name, err)
        assert "internal error" not in lines[0], "%s: a bug, not a reader's error: %s" % (name, lines[0])
        named = (path, os.path.dirname(path), str(out_dir))  # a writing error may name the output
        assert any(p in lines[0] for p in named), "%s: the line does not name %s: %s" % (name, path, lines[0])
    if expect == "error":
        # a dry run, like inspect, reads no tensor bytes
        command = "inspect" if name == "dry_run" else name
        if command not in attack["may_pass"]:
            assert rc == 2, "%s: expected the one-line error, got exit %d (%s)" % (name, rc, err.strip())
    elif expect == "findings":
        if name == "inspect":
            assert rc == 0, err
        if name == "audit":
            assert rc == 1, "audit --strict: expected findings, exit %d (%s)" % (rc, err.strip())
            codes = {f["code"] for f in json.loads(out)["findings"]}
            assert attack["finding"] in codes, "audit found %s, expected %s" % (sorted(codes), attack["finding"])
    elif expect == "same":
        if name in ("inspect", "diff", "dry_run"):
            assert rc == 0, "%s: expected to read as the original, exit %d (%s)" % (name, rc, err.strip())
    if name == "convert":
        produced = sorted(os.listdir(out_dir))
        if rc == 2:
            assert produced == [], "convert failed but left %s behind" % produced
        elif rc == 0:
            assert produced, "convert succeeded but wrote nothing"
            load_state(out_dir / attack["dst"], optimizer=_optimizer(attack))


def _optimizer(attack):
    args = attack["args"]
    return args[args.index("--optimizer") + 1] if "--optimizer" in args else None


@pytest.mark.parametrize("attack_id", IN_PROCESS)
def test_attack_in_process(attack_id, corpus, tmp_path, capsys):
    root, manifest = corpus
    attack = manifest[attack_id]
    path, original = str(root / attack["path"]), str(root / attack["original"])
    before = _tree_hash(root / attack_id), _tree_hash(root / "_originals" / attack["source"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with time_limit(TIME_LIMIT, attack_id):
        try:
            load_state(path, optimizer=_optimizer(attack))
            loaded = None
        except KerasOptMigrateError as e:
            loaded = e
        if attack["expect"] == "error" and "inspect" not in attack["may_pass"]:
            assert loaded is not None, "load_state read %s" % path
        if attack["expect"] != "error":
            assert loaded is None, "load_state refused %s: %s" % (path, loaded)
        for name, argv in _commands(attack, path, original, out_dir).items():
            rc = main(argv)
            captured = capsys.readouterr()
            _check(attack, name, rc, captured.err, captured.out, path, out_dir)
    assert (_tree_hash(root / attack_id), _tree_hash(root / "_originals" / attack["source"])) == before
    if attack["canary"]:
        assert not (root / attack["canary"]).exists(), "code in the file was executed"


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.mark.parametrize("attack_id", ISOLATED)
def test_bomb_in_subprocess(attack_id, corpus, tmp_path, worker):
    """Bombs: each command in a worker process with a timeout; its peak memory stays near TensorFlow's own."""
    root, manifest = corpus
    attack = manifest[attack_id]
    path, original = str(root / attack["path"]), str(root / attack["original"])
    before = _tree_hash(root / attack_id)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, argv in _commands(attack, path, original, out_dir).items():
        reply = worker.run(argv, timeout=90)
        assert reply["exc"] is None, reply["exc"]
        _check(attack, name, reply["rc"], reply["err"], reply["out"], path, out_dir)
        assert reply["maxrss_kb"] < MAX_RSS_KB, "%s: peak memory %d MB" % (name, reply["maxrss_kb"] // 1024)
    assert _tree_hash(root / attack_id) == before


SUBPROCESS_SAMPLE = ["tf.shape_negative", "h5.external_link_passwd", "keras.path_traversal", "sm.metadata_deep_json",
                     "h5.fifo", "tf.iter_string", "native.iterations_string"]


@pytest.mark.parametrize("attack_id", SUBPROCESS_SAMPLE)
def test_real_cli_prints_one_line(attack_id, corpus):
    """`python -m keras_opt_migrate`: exit 2 and exactly one line on the real stderr, no traceback."""
    root, manifest = corpus
    attack = manifest[attack_id]
    path = str(root / attack["path"])
    env = dict(os.environ)
    env.pop("KERAS_OPT_MIGRATE_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "keras_opt_migrate", "audit", path, *attack["args"]],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(PREFIX + path), r.stderr


def test_corpus_is_described():
    """Every attack has a description and one of the documented outcome classes."""
    assert len(ATTACKS) >= 100
    for attack_id, (_, description, expect, _, options) in ATTACKS.items():
        assert description and expect in ("error", "findings", "same"), attack_id
        assert options["source"] in MAKER.SOURCES, attack_id
        assert (expect == "findings") == bool(options.get("finding")), attack_id


@pytest.mark.parametrize("source", sorted(MAKER.SOURCES))
def test_originals_read(source, corpus, capsys, tmp_path):
    """The undamaged copies read and convert, so each attack's failure is the attack's doing."""
    root, manifest = corpus
    attack = next(a for a in manifest.values() if a["source"] == source)
    path = str(root / attack["original"])
    assert main(["inspect", path, *attack["args"]]) == 0, capsys.readouterr().err
    dst = str(tmp_path / attack["dst"])  # the output the attacks convert to (a native file has no model for a TF ckpt)
    assert main(["convert", path, dst, *attack["convert"], *attack["args"], "--dry-run"]) == 0, \
        capsys.readouterr().err
