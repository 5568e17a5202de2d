"""The byte-copy bundle writer (tf_bundle.write_bundle + tf_table), checked by TensorFlow's own reader.

Conversions between TF-checkpoint layouts only rename keys: the tensors' bytes are copied from
the source shards and the index is written in Python. TensorFlow (`tf.train.load_checkpoint`)
must read every key of the result with the source's dtype, shape and value.
"""

import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.formats import tf_bundle, tf_table
from legacy_adam import write_legacy_adam


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle_writer")
    write_legacy_adam(d, 24, [("a", 256), ("b", 8)], seed=3, iterations=11)
    return d


def _tf_tensors(prefix):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    return {k: (dtypes[k].name, reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("to", ["experimental", "keras3"])
def test_converted_bundle_reads_in_tensorflow_with_the_sources_values(source, to, monkeypatch, tmp_path):
    copied = []
    real = tf_bundle._copy_range
    monkeypatch.setattr(tf_bundle, "_copy_range", lambda *a: (copied.append(a[2]), real(*a))[1])
    dst = tmp_path / ("out-%s.ckpt" % to)
    kom.convert(str(source / "src.ckpt"), str(dst), to, source_optimizer="adam")
    src = _tf_tensors(source / "src.ckpt")
    out = _tf_tensors(dst)
    # every float tensor of the source (weights, m, v) is in the output, bytes unchanged, and was copied
    src_arrays = [v for dt, v in src.values() if dt == "float32" and np.ndim(v) > 0]
    out_arrays = [v for dt, v in out.values() if dt == "float32" and np.ndim(v) > 0]
    assert len(out_arrays) == len(src_arrays) == 12
    for a in src_arrays:
        assert sum(1 for b in out_arrays if b.shape == a.shape and b.tobytes() == a.tobytes()) == 1
    assert sum(copied) >= sum(a.nbytes for a in src_arrays)  # the copy path ran, not TF's SaveV2 for them
    iterations = [v for k, (dt, v) in out.items() if k.startswith("optimizer/") and "iterations" in k]
    assert [int(v) for v in iterations] == [11] and out["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"][0] == "int64"
    # our reader agrees with TensorFlow on every key, dtype and shape, checksums included
    ours = tf_bundle.Bundle(str(dst))
    assert set(ours.keys()) == set(out)
    for key, (dt, value) in out.items():
        if key != tf_bundle.GRAPH_KEY:
            assert ours.shapes[key] == np.shape(value)
            assert np.array_equal(ours.read(key), value)
    back = kom.load_state(str(dst), optimizer="adam")
    assert back.generation == to


def test_index_encoder_spans_many_blocks_and_tensorflow_reads_it(tmp_path):
    """A hand-assembled bundle of 600 tensors (many index blocks, prefix-compressed keys, an empty shape,
    a zero dimension) written by write_index reads back in TensorFlow entry for entry."""
    rng = np.random.default_rng(0)
    arrays = {"layer/%03d/kernel with a long shared prefix" % i: rng.standard_normal((i % 7, 3)).astype(np.float32)
              for i in range(598)}
    arrays["scalar"] = np.array(5, np.int64)
    arrays["z"] = np.arange(4, dtype=np.float64)
    entries, blob = {}, bytearray()
    for key, value in arrays.items():
        raw = value.tobytes()
        entries[key] = tf_table.encode_entry({np.float32: 1, np.int64: 9, np.float64: 2}[value.dtype.type],
                                             value.shape, 0, len(blob), len(raw), tf_bundle.masked_crc32c(raw))
        blob += raw
    prefix = tmp_path / "hand"
    (tmp_path / "hand.data-00000-of-00001").write_bytes(bytes(blob))
    tf_table.write_index(str(prefix) + ".index", 1, entries)
    assert len(tf_table.encode_table([(b"", b"")] + [(k.encode(), v) for k, v in sorted(entries.items())])) > \
        4 * tf_table.BLOCK_SIZE
    out = _tf_tensors(prefix)
    assert set(out) == set(arrays)
    for key, value in arrays.items():
        assert out[key][0] == value.dtype.name and np.array_equal(out[key][1], value) and \
            np.shape(out[key][1]) == value.shape
    # our reader verifies the block checksums and agrees
    assert set(tf_bundle.Bundle(str(prefix)).keys()) == set(arrays)


def test_encoder_refuses_unsorted_keys():
    with pytest.raises(ValueError):
        tf_table.encode_table([(b"b", b""), (b"a", b"")])


def test_a_copy_gone_wrong_is_refused_and_nothing_is_left(source, monkeypatch, tmp_path):
    real = tf_bundle._copy_range

    def flip(src, offset, length, fd, where):
        real(src, offset, length, fd, where)
        import os
        end = os.lseek(fd, 0, os.SEEK_CUR)
        with open(str(where) + ".data-00000-of-00001", "rb") as f:  # the file being written
            f.seek(end - length // 2 - 1)
            byte = f.read(1)
        os.pwrite(fd, bytes([byte[0] ^ 1]), end - length // 2 - 1)

    monkeypatch.setattr(tf_bundle, "_copy_range", flip)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(kom.FormatError, match="does not match the checksum its source recorded"):
        kom.convert(str(source / "src.ckpt"), str(out / "e.ckpt"), "experimental", source_optimizer="adam")
    assert list(out.iterdir()) == []


def test_a_damaged_source_tensor_is_refused_not_copied(source, tmp_path):
    import shutil
    copy = tmp_path / "src"
    shutil.copytree(source, copy)
    bundle = tf_bundle.Bundle(str(copy / "src.ckpt"))
    key = max(bundle.keys(), key=bundle.nbytes)  # a large tensor, which our reader leaves to TensorFlow
    entry = bundle.entries[key]
    shard = "%s.data-%05d-of-%05d" % (bundle.prefix, entry.shard_id, bundle.num_shards)
    with open(shard, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(entry.offset + entry.size // 2)
        f.write(bytes([byte[0] ^ 0x10]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(kom.FormatError, match="damaged or the copy failed"):
        kom.convert(str(copy / "src.ckpt"), str(out / "k3.ckpt"), "keras3", source_optimizer="adam")
    assert list(out.iterdir()) == []


def test_copied_tensors_are_never_loaded(source, tmp_path):
    """The byte-copy path streams below one tensor: no source tensor larger than a scalar is loaded
    (TensorFlow's check of the copies reads one tensor at a time outside LazyTensor)."""
    from keras_opt_migrate.schema.state import track_loads
    with track_loads() as stats:
        kom.convert(str(source / "src.ckpt"), str(tmp_path / "k3.ckpt"), "keras3", source_optimizer="adam")
    assert stats.largest <= 8, stats


def test_a_source_of_several_data_shards_is_copied_from_each(source, monkeypatch, tmp_path):
    """A checkpoint in several data shards (our SaveV2 batches merged by MergeV2Checkpoints) converts
    through the copy path into one shard that TensorFlow reads with the same values."""
    import glob
    with monkeypatch.context() as m:
        m.setattr(tf_bundle, "BATCH_FLOOR", 0)
        m.setattr(tf_bundle, "stored_bytes", lambda value: None)
        kom.convert(str(source / "src.ckpt"), str(tmp_path / "sharded.ckpt"), "experimental", source_optimizer="adam")
    assert len(glob.glob(str(tmp_path / "sharded.ckpt.data-*"))) > 2
    copied = []
    real = tf_bundle._copy_range
    monkeypatch.setattr(tf_bundle, "_copy_range", lambda *a: (copied.append(a[0]), real(*a))[1])
    kom.convert(str(tmp_path / "sharded.ckpt"), str(tmp_path / "k3.ckpt"), "keras3", source_optimizer="adam",
                config={"learning_rate": 0.001})
    assert len({p for p in copied if "sharded.ckpt.data-" in p}) > 2
    assert glob.glob(str(tmp_path / "k3.ckpt.data-*")) == [str(tmp_path / "k3.ckpt.data-00000-of-00001")]
    src, out = _tf_tensors(tmp_path / "sharded.ckpt"), _tf_tensors(tmp_path / "k3.ckpt")
    big = sorted(v.tobytes() for dt, v in src.values() if dt == "float32" and np.ndim(v) > 0)
    assert sorted(v.tobytes() for dt, v in out.values() if dt == "float32" and np.ndim(v) > 0) == big
