"""Streaming: convert, upgrade, inspect, audit and diff hold about one tensor at a time.

Two checks, neither timed:
  * in process, `schema.state.track_loads` counts the arrays `LazyTensor.load()` returned
    that are still alive: every command, reading and writing every format, must keep at
    most two loaded tensors (a comparison's pair) alive at once, and `inspect` loads none but
    scalars;
  * in a fresh interpreter (tests/stream_worker.py), the peak RSS of each command on a 403 MB
    tf_keras state whose largest tensor is 64 MiB must stay within twice that tensor plus a
    margin, far below the state (reading it whole would take 403 MB, the old writers 2-3x).
"""

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import FIXTURES
from keras_opt_migrate import report
from keras_opt_migrate.audit import audit
from keras_opt_migrate.diff import diff
from keras_opt_migrate.schema.state import LazyTensor, track_loads
from legacy_adam import write_legacy_adam

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = [(24, 256), (256, 512), (512, 128), (128, 8)]  # Dense layers: the largest kernel is 256 x 512


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A tf_keras legacy Adam state of 8 variables (24 tensors) as a tf.train.Checkpoint and a full-model .h5."""
    d = tmp_path_factory.mktemp("streaming")
    write_legacy_adam(d, SIZES[0][0], [("d%d" % i, n) for i, (_, n) in enumerate(SIZES)], seed=1, iterations=9,
                      h5=True)
    return d


def _tracked(command):
    gc.collect()
    with track_loads() as stats:
        result = command()
        del result
        gc.collect()
    return stats


def _assert_streamed(stats, at_least, count=True):
    """At most two loaded tensors' worth of bytes alive at once (and, unless `count` is off, two tensors).

    TF checkpoint writers hand TensorFlow a batch of tensors up to the largest one's size (the
    `no_batch_floor` fixture removes the 64 MiB floor that keeps small states in one batch), so
    there a batch of small tensors may be alive beside one being read: bytes, not count, bound it.
    """
    assert stats.loads >= at_least, "only %d tensors were read; the check would prove nothing" % stats.loads
    if count:
        assert stats.peak <= 2, "%d loaded tensors were alive at once (%r)" % (stats.peak, stats)
    assert stats.peak_bytes <= 2 * stats.largest, stats
    assert stats.alive == 0, "loaded tensors outlived the command: %r" % stats


@pytest.fixture
def no_batch_floor(monkeypatch):
    from keras_opt_migrate.formats import tf_bundle
    monkeypatch.setattr(tf_bundle, "BATCH_FLOOR", 0)


# (source, destination name, target generation, format): every writer convert has
CONVERSIONS = [
    ("src.ckpt", "e.ckpt", "experimental", None),
    ("src.ckpt", "k3.ckpt", "keras3", None),
    ("src.ckpt", "v2.ckpt", "v2", None),
    ("src.ckpt", "t1.ckpt", "tf1", "tf1_checkpoint"),
    ("src.ckpt", "t1o.ckpt", "tf1", None),
    ("src.ckpt", "n.kom.h5", "keras3", None),
    ("m.h5", "k.keras", "keras3", None),
    ("m.h5", "k.weights.h5", "keras3", None),
    ("m.h5", "e.h5", "experimental", None),
    ("m.h5", "e.keras", "experimental", None),
]


@pytest.mark.parametrize("source,name,to,fmt", CONVERSIONS, ids=[c[1] for c in CONVERSIONS])
def test_convert_holds_at_most_two_tensors(legacy, tmp_path, no_batch_floor, monkeypatch, source, name, to, fmt):
    from keras_opt_migrate.formats import get_format, tf_bundle
    # TF checkpoint to TF checkpoint copies unchanged tensors' bytes without loading them
    # (tests/formats/test_tf_bundle_writer.py); here every tensor goes through the loading writer
    monkeypatch.setattr(tf_bundle, "stored_bytes", lambda value: None)
    if name == "e.keras" and "experimental" not in get_format("keras_archive").generations:
        pytest.skip("this checkout writes no tf_keras (2.11+) .keras archives")
    src = str(legacy / source)
    state = kom.load_state(src, optimizer="adam" if source.endswith(".ckpt") else None)
    tensors = sum(1 for _ in state.iter_tensors())
    stats = _tracked(lambda: kom.convert(src, tmp_path / name, to, format=fmt, partial=True,
                                         source_optimizer="adam" if source.endswith(".ckpt") else None))
    # every source tensor read once to write it, every written one read back once to verify it
    _assert_streamed(stats, at_least=tensors, count=name.endswith((".h5", ".keras")))


def test_savedmodel_conversion_holds_at_most_two_tensors(tmp_path, no_batch_floor):
    src = FIXTURES / "k212" / "v2" / "adam" / "sm"
    stats = _tracked(lambda: kom.convert(src, tmp_path / "sm_out", "v2", format="savedmodel"))
    _assert_streamed(stats, at_least=6, count=False)


def test_audit_and_diff_stream(legacy, tmp_path):
    src = str(legacy / "src.ckpt")
    kom.convert(src, tmp_path / "e.ckpt", "experimental", source_optimizer="adam")
    _assert_streamed(_tracked(lambda: audit(src, optimizer="adam")), at_least=16)  # m and v of 8 variables
    assert _tracked(lambda: audit(src, optimizer="adam")).peak == 1
    stats = _tracked(lambda: diff(src, str(tmp_path / "e.ckpt"), optimizer="adam"))
    _assert_streamed(stats, at_least=32)
    assert diff(src, str(tmp_path / "e.ckpt"), optimizer="adam").equal


@pytest.mark.parametrize("source", ["src.ckpt", "m.h5"])
def test_inspect_reads_no_tensor(legacy, source):
    stats = _tracked(lambda: report.describe(kom.load_state(str(legacy / source), optimizer="adam")))
    assert stats.largest <= 8, "inspect loaded a %d-byte tensor: %r" % (stats.largest, stats)


def test_tracking_counts_what_is_alive():
    """The tracker itself: two live loads, then one released (so the checks above can fail)."""
    tensor = LazyTensor((1000,), "float32", lambda: np.ones(1000, np.float32))
    with track_loads() as stats:
        a = tensor.load()
        b = tensor.load()
        del a
        gc.collect()
        assert (stats.peak, stats.alive, stats.peak_bytes, stats.largest) == (2, 1, 8000, 4000)
        del b
        gc.collect()
    assert stats.alive == 0


def test_peak_memory_stays_near_the_largest_tensor(tmp_path):
    """RSS ceiling on a 403 MB state (largest tensor 64 MiB), each command measured in one worker."""
    worker = os.path.join(HERE, "stream_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, worker, "build", str(tmp_path)], check=True, env=env, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = subprocess.run([sys.executable, worker, "measure", str(tmp_path),
                          str(FIXTURES / "k212" / "v2" / "adam" / "w.ckpt")],
                         env=env, timeout=900, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    largest, state = result["largest_bytes"], result["state_bytes"]
    ceiling = 2 * largest + (40 << 20)  # two copies of the largest tensor, plus allocator and library noise
    assert ceiling < 0.5 * state
    over = {name: peak for name, peak in result["peaks"].items() if peak > ceiling}
    assert not over, "peak RSS above %d MB (state %d MB, largest tensor %d MB): %s" % (
        ceiling >> 20, state >> 20, largest >> 20, {k: v >> 20 for k, v in over.items()})


def test_read_back_check_catches_a_tensor_written_wrong(legacy, tmp_path, monkeypatch):
    """TF checkpoint to TF checkpoint, the read-back compares TensorFlow's CRC-32C of what it wrote with
    the source's instead of reading the bytes again: a tensor that reaches the file changed must still
    be refused (and nothing left behind)."""
    from keras_opt_migrate.formats import tf_bundle
    monkeypatch.setattr(tf_bundle, "stored_bytes", lambda value: None)  # the loading writer (SaveV2) path
    real = tf_bundle._to_tensor
    seen = []

    def tamper(value):
        if isinstance(value, np.ndarray) and value.shape == SIZES[1]:
            seen.append(value.shape)
            if len(seen) == 2:  # in key order the model's kernel comes first, then its slots
                value = value + np.float32(1)
        return real(value)

    monkeypatch.setattr(tf_bundle, "_to_tensor", tamper)
    with pytest.raises(kom.FormatError, match="does not read back"):
        kom.convert(str(legacy / "src.ckpt"), tmp_path / "e.ckpt", "experimental", source_optimizer="adam")
    assert len(seen) == 3 and os.listdir(tmp_path) == []
