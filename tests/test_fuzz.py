"""Fuzz the readers: random byte changes and truncations of one small fixture per format.

Each example damages a copy of the file, then runs `audit` (reads every optimizer tensor) and
`convert` (reads the model too, writes through the staging directory) in a worker subprocess
(`cli_worker`), so that a crash or a hang in a C library fails the example instead of the
test run. The contract is the CLI's: exit 0/1, or 2 with one line naming the file; never an
exception, crash or hang; no partial output; the input unchanged.

Derandomized (the same examples every run). KOM_FUZZ_EXAMPLES sets the examples per format
(default 1200: about a minute on two cores); raise it to fuzz longer locally, e.g.
`KOM_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py`.
"""

import hashlib
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_worker import Worker
from test_attacks import MAKER, PREFIX

EXAMPLES = int(os.environ.get("KOM_FUZZ_EXAMPLES", "1200"))
TIMEOUT = 60

# (name, source in make_attacks.SOURCES, the file to damage, relative to the copy)
TARGETS = [
    ("tf_index", "tf", "w.ckpt.index"),
    ("tf_data", "tf", "w.ckpt.data-00000-of-00001"),
    ("tf1_index", "tf1", "model.ckpt.index"),
    ("tf1_meta", "tf1", "model.ckpt.meta"),
    ("savedmodel_metadata", "sm", "sm/keras_metadata.pb"),
    ("h5", "h5", "m.h5"),
    ("keras", "keras", "m.keras"),
    ("weights_h5", "weights", "m.weights.h5"),
    ("native", "native", "s.kom.h5"),
]

mutations = st.fixed_dictionaries({
    # (position as a fraction of the file in 1/2**16, byte to XOR in)
    "changes": st.lists(st.tuples(st.integers(0, (1 << 16) - 1), st.integers(1, 255)), max_size=12),
    # a run of bytes overwritten with one value (zeroed headers, 0xff fill)
    "smear": st.one_of(st.none(), st.tuples(st.integers(0, (1 << 16) - 1), st.integers(1, 64),
                                            st.sampled_from([0, 0xFF, 0x7F]))),
    "truncate": st.one_of(st.none(), st.integers(0, (1 << 16) - 1)),
})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    native = MAKER._build_native(str(root / "_native"))
    sources = {}
    for name in {t[1] for t in TARGETS}:
        sources[name] = MAKER._copy_source(name, str(root / "_sources" / name), native)
    return root, sources


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


def _damage(path, m):
    data = bytearray(open(path, "rb").read())
    n = len(data)
    for where, xor in m["changes"]:
        if n:
            data[where * n >> 16] ^= xor
    if m["smear"] and n:
        where, length, value = m["smear"]
        start = where * n >> 16
        data[start:start + length] = bytes([value]) * len(data[start:start + length])
    if m["truncate"] is not None:
        data = data[: m["truncate"] * n >> 16]
    with open(path, "wb") as f:
        f.write(bytes(data))


def _check(reply, path, out_dir, what):
    assert reply["exc"] is None, "%s raised:\n%s" % (what, reply["exc"])
    rc, err = reply["rc"], reply["err"]
    assert rc in (0, 1, 2), "%s: exit %r" % (what, rc)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX), "%s: %r" % (what, err)
        assert "internal error" not in lines[0], "%s: %s" % (what, lines[0])
        assert path in lines[0] or os.path.dirname(path) in lines[0] or str(out_dir) in lines[0], lines[0]
    else:
        assert "Traceback" not in err, err


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
def test_fuzz_reader(target, base, worker):
    name, source, victim = target
    root, sources = base
    spec = MAKER.SOURCES[source]
    src_dir = os.path.dirname(sources[source])

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(mutations)
    def run(m):
        work = tempfile.mkdtemp(dir=str(root), prefix=name + "-")
        try:
            case = os.path.join(work, "case")
            shutil.copytree(src_dir, case)
            _damage(os.path.join(case, victim), m)
            before = _hashes(case)
            path = os.path.join(case, spec["path"])
            out_dir = os.path.join(work, "out")
            os.mkdir(out_dir)
            reply = worker.run(["audit", "--strict", path, *spec["args"]], timeout=TIMEOUT)
            _check(reply, path, out_dir, "audit")
            reply = worker.run(["convert", path, os.path.join(out_dir, spec["dst"]), *spec["convert"],
                                *spec["args"]], timeout=TIMEOUT)
            _check(reply, path, out_dir, "convert")
            if reply["rc"] != 0:
                assert os.listdir(out_dir) == [], "convert failed but left %s" % os.listdir(out_dir)
            assert _hashes(case) == before, "the input changed"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    run()


def _hashes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out
