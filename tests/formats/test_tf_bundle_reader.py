"""The TF bundle index and small tensors read in Python, against TensorFlow's own reader.

Metadata (shapes, dtypes, the object graph, step counters, hyperparameters) is read without
TensorFlow, so `inspect` never starts it; everything read that way must equal what
`tf.train.load_checkpoint` reads, with the same checksums enforced.
"""

import glob
import shutil
import subprocess
import sys

import numpy as np
import pytest

from corpus import FIXTURES
from keras_opt_migrate.errors import FormatError
from keras_opt_migrate.formats import tf_bundle
from keras_opt_migrate.formats.tf_bundle import DTYPES, NUMPY_DTYPES, RAW_LIMIT, Bundle

PREFIXES = sorted(p[:-len(".index")] for p in glob.glob(str(FIXTURES / "**" / "*.index"), recursive=True))


def test_dtype_table_matches_tensorflow():
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    real = {v: n for n, v in types_pb2.DataType.items() if 0 < v < 100 and n != "DT_RESOURCE"}
    assert {k: name for k, (name, _) in DTYPES.items()} == real
    for code, (_, size) in DTYPES.items():
        assert tf.dtypes.as_dtype(code).size == size, code
    for code, name in NUMPY_DTYPES.items():
        assert np.dtype(name) == np.dtype(tf.dtypes.as_dtype(code).as_numpy_dtype), code


def test_every_fixture_reads_as_tensorflow_reads_it():
    import tensorflow as tf
    assert len(PREFIXES) > 50
    small = 0
    for prefix in PREFIXES:
        bundle = Bundle(prefix)
        reader = tf.train.load_checkpoint(prefix)
        assert bundle.shapes == {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}, prefix
        for key, dtype in reader.get_variable_to_dtype_map().items():
            assert bundle.numpy_dtype(key) == np.dtype(dtype.as_numpy_dtype), (prefix, key)
            ours, theirs = bundle.read(key), reader.get_tensor(key)
            if isinstance(theirs, bytes):
                assert ours.shape == () and ours.item() == theirs, (prefix, key)
            else:
                assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), (prefix, key)
            small += bundle.entries[key].size <= RAW_LIMIT
    assert small > 1000  # most fixture tensors take the Python path, so it is what was compared


def test_inspect_does_not_start_tensorflow():
    code = ("import sys; import keras_opt_migrate as kom; from keras_opt_migrate import report; "
            "d = report.describe(kom.load_state(sys.argv[1], optimizer='adam')); "
            "assert d['iterations'] == 3 and d['variables'], d; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "k212" / "v2" / "adam" / "w.ckpt")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _copy(tmp_path):
    src = FIXTURES / "k212" / "v2" / "adam" / "w.ckpt"
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(str(src) + suffix, str(tmp_path / "w.ckpt") + suffix)
    return str(tmp_path / "w.ckpt")


def test_a_flipped_bit_in_a_small_tensor_fails_its_checksum(tmp_path):
    prefix = _copy(tmp_path)
    bundle = Bundle(prefix)
    key = next(k for k in bundle.keys() if k.endswith("iter/.ATTRIBUTES/VARIABLE_VALUE"))
    entry = bundle.entries[key]
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(entry.offset)
        byte = f.read(1)
        f.seek(entry.offset)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(FormatError, match="checksum"):
        Bundle(prefix).read(key)


def test_a_flipped_bit_in_the_object_graph_fails_its_checksum(tmp_path):
    prefix = _copy(tmp_path)
    entry = Bundle(prefix).entries[tf_bundle.GRAPH_KEY]
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.seek(entry.offset + entry.size - 3)
        byte = f.read(1)
        f.seek(entry.offset + entry.size - 3)
        f.write(bytes([byte[0] ^ 4]))
    with pytest.raises(FormatError, match="checksum"):
        Bundle(prefix).object_graph()


def test_a_flipped_bit_in_an_index_block_is_refused(tmp_path):
    prefix = _copy(tmp_path)
    data = bytearray(open(prefix + ".index", "rb").read())
    data[len(data) // 3] ^= 0x10  # inside a data block, far from the footer
    open(prefix + ".index", "wb").write(bytes(data))
    with pytest.raises(FormatError):
        Bundle(prefix)


def test_crc32c_matches_the_known_check_value():
    assert tf_bundle.crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
