"""Reading a TensorFlow tensor bundle (`<prefix>.index` + `<prefix>.data-K-of-N`) safely.

Only tensor bytes are read, through `tf.train.load_checkpoint` (CheckpointReader); nothing
in the file is executed. The object graph of an object-based checkpoint is parsed as a
`TrackableObjectGraph` protobuf. Every problem with the files becomes a one-line
`FormatError` naming the file, never a raw TensorFlow exception.
"""

import glob
import os
import re
import shutil
import tempfile

import numpy as np

from ..errors import FormatError
from ..schema import LazyTensor
from .protowire import varint as _varint

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
INDEX_SUFFIX = ".index"
# Last 8 bytes of every LevelDB-style table (the `.index` file), little-endian.
TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
MAX_INDEX_SCAN = 64 * 1024 * 1024
MAX_SHARDS = 1 << 16
MAX_ELEMENTS = 1 << 62  # TensorFlow aborts the process (CHECK failure) on shapes beyond int64
VARIABLE_SIZE_DTYPES = (7, 21)  # DT_STRING, DT_VARIANT: their byte size does not follow from the shape
_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_CHECKPOINT_LINE = re.compile(r'^\s*model_checkpoint_path:\s*"(.*)"\s*$')


def resolve_prefix(path):
    """The bundle prefix for a prefix, a `.index` path, or a directory with a `checkpoint` file.

    Returns None when `path` does not look like a TF checkpoint at all.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        state_file = os.path.join(path, "checkpoint")
        if not os.path.isfile(state_file):
            return None
        try:
            with open(state_file, encoding="utf-8", errors="replace") as f:
                lines = f.read(1 << 20).splitlines()
        except OSError:
            return None
        for line in lines:
            m = _CHECKPOINT_LINE.match(line)
            if m:
                target = m.group(1)
                return target if os.path.isabs(target) else os.path.join(path, target)
        return None
    if path.endswith(INDEX_SUFFIX) and os.path.isfile(path):
        return path[: -len(INDEX_SUFFIX)]
    if _SHARD.search(path):
        return _SHARD.sub("", path)
    if os.path.isfile(path + INDEX_SUFFIX):
        return path
    return None


def index_bytes(prefix):
    try:
        with open(prefix + INDEX_SUFFIX, "rb") as f:
            return f.read(MAX_INDEX_SCAN)
    except OSError:
        return b""


def looks_object_based(prefix):
    """Cheap guess from the raw index: True when it names the object-graph key.

    A damaged index (no table magic) also counts as object-based, so that the object-based
    adapter, tried first, reports what is wrong with it.
    """
    data = index_bytes(prefix)
    if not data.endswith(TABLE_MAGIC):
        return True
    return GRAPH_KEY.encode() in data


def _check_inside(origin, prefix):
    """A `checkpoint` file may only name a prefix inside its own directory."""
    if origin is None or not os.path.isdir(str(origin)):
        return
    root = os.path.normpath(os.path.abspath(str(origin)))
    target = os.path.normpath(os.path.abspath(prefix))
    if os.path.commonpath([root, target]) != root:
        raise FormatError(origin, "its `checkpoint` file points outside the directory, at %s; refusing to "
                                  "follow it (pass the checkpoint prefix itself)" % prefix)


# -- the index, parsed without TensorFlow ----------------------------------------------------------


def _block_entries(data, offset, size):
    """(key, value) pairs of one uncompressed table block at `offset` (size excludes the trailer)."""
    if offset + size + 5 > len(data) - 48 or size < 4:
        raise ValueError("block at %d (%d bytes) runs past the end of the index" % (offset, size))
    if data[offset + size] != 0:
        raise ValueError("block at %d is compressed (type %d); TensorFlow writes uncompressed indexes"
                         % (offset, data[offset + size]))
    block = data[offset:offset + size]
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise ValueError("block at %d has a bad restart array" % offset)
    i, key, out = 0, b"", []
    while i < end:
        shared, i = _varint(block, i)
        unshared, i = _varint(block, i)
        length, i = _varint(block, i)
        if shared > len(key) or i + unshared + length > end:
            raise ValueError("entry at %d of block %d runs past the block" % (i, offset))
        key = key[:shared] + block[i:i + unshared]
        i += unshared
        out.append((bytes(key), bytes(block[i:i + length])))
        i += length
    return out


def read_index_table(data):
    """[(key, value)] of a bundle `.index` (a LevelDB-style table), parsed in Python."""
    if len(data) < 48 or not data.endswith(TABLE_MAGIC):
        raise ValueError("bad table magic")
    footer = data[-48:]
    _, i = _varint(footer, 0)
    _, i = _varint(footer, i)
    index_offset, i = _varint(footer, i)
    index_size, _ = _varint(footer, i)
    out = []
    for _, handle in _block_entries(data, index_offset, index_size):
        offset, j = _varint(handle, 0)
        size, _ = _varint(handle, j)
        out.extend(_block_entries(data, offset, size))
    return out


def check_index(prefix, origin):
    """{key: BundleEntryProto} of the bundle, every entry checked against the data shards' real sizes.

    Refuses what TensorFlow would crash on or allocate blindly: unknown dtypes, negative or
    unknown dimensions, element counts beyond int64, shards that do not exist, and entries whose
    bytes (shape x dtype, or the declared size) do not lie inside their shard.
    """
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import tensor_bundle_pb2
    from google.protobuf.message import DecodeError
    index = prefix + INDEX_SUFFIX
    if os.path.getsize(index) > MAX_INDEX_SCAN:
        raise FormatError(origin, "checkpoint index %s is larger than %d bytes; refused" % (index, MAX_INDEX_SCAN))
    try:
        table = read_index_table(index_bytes(prefix))
    except ValueError as e:
        raise FormatError(origin, "checkpoint index %s is corrupt: %s" % (index, e)) from e
    if not table or table[0][0] != b"":
        raise FormatError(origin, "checkpoint index %s has no bundle header" % index)
    header = tensor_bundle_pb2.BundleHeaderProto()
    try:
        header.ParseFromString(table[0][1])
    except DecodeError as e:
        raise FormatError(origin, "checkpoint index %s: unreadable bundle header (%s)" % (index, e)) from e
    if not 1 <= header.num_shards <= MAX_SHARDS:
        raise FormatError(origin, "checkpoint index %s declares %d data shards" % (index, header.num_shards))
    shard_sizes = {}
    known = set(types_pb2.DataType.values()) - {types_pb2.DT_INVALID, types_pb2.DT_RESOURCE}
    entries = {}
    for raw_key, value in table[1:]:
        key = raw_key.decode("utf-8", "replace")
        entry = tensor_bundle_pb2.BundleEntryProto()
        try:
            entry.ParseFromString(value)
        except DecodeError as e:
            raise FormatError(origin, "checkpoint index entry %r is unreadable (%s)" % (key, e)) from e
        if entry.dtype not in known or entry.dtype > 100:
            raise FormatError(origin, "tensor %s has dtype %d, which is no TensorFlow tensor dtype" % (key, entry.dtype))
        if entry.shape.unknown_rank or any(d.size < 0 for d in entry.shape.dim):
            raise FormatError(origin, "tensor %s declares the shape %s" % (key, [d.size for d in entry.shape.dim]))
        elements = 1
        for d in entry.shape.dim:
            elements *= d.size
        if elements > MAX_ELEMENTS:
            raise FormatError(origin, "tensor %s declares %d elements" % (key, elements))
        if entry.slices:
            entries[key] = entry  # a partitioned variable: its slices are entries of their own
            continue
        if entry.shard_id >= header.num_shards:
            raise FormatError(origin, "tensor %s is in data shard %d of %d" % (key, entry.shard_id, header.num_shards))
        shard = "%s.data-%05d-of-%05d" % (prefix, entry.shard_id, header.num_shards)
        if shard not in shard_sizes:
            try:
                shard_sizes[shard] = os.path.getsize(shard)
            except OSError:
                raise FormatError(origin, "missing data shard %s" % shard) from None
        if entry.dtype not in VARIABLE_SIZE_DTYPES:
            import tensorflow as tf
            nbytes = elements * tf.dtypes.as_dtype(entry.dtype).size
            if entry.size != nbytes:
                raise FormatError(origin, "tensor %s: the index declares %d bytes for %s %s (%d bytes)"
                                  % (key, entry.size, types_pb2.DataType.Name(entry.dtype),
                                     tuple(d.size for d in entry.shape.dim), nbytes))
        if entry.offset + entry.size > shard_sizes[shard]:
            raise FormatError(origin, "tensor %s: the index places %d bytes at offset %d of %s, which holds %d "
                                      "bytes (truncated data file?)" % (key, entry.size, entry.offset, shard,
                                                                        shard_sizes[shard]))
        entries[key] = entry
    return entries


class Bundle:
    """A checkpoint bundle opened for lazy, one-tensor-at-a-time reading."""

    def __init__(self, prefix, origin=None):
        self.prefix = prefix
        self.origin = str(origin or prefix)
        index = prefix + INDEX_SUFFIX
        if not os.path.isfile(index):
            raise FormatError(self.origin, "no checkpoint index %s" % index)
        _check_inside(origin, prefix)
        if not index_bytes(prefix).endswith(TABLE_MAGIC):
            raise FormatError(self.origin, "checkpoint index %s is truncated or not a TensorFlow index "
                                           "(bad table magic)" % index)
        # TensorFlow's reader aborts the whole process on some malformed entries (a negative
        # dimension) and allocates whatever an entry declares: check every entry first.
        check_index(prefix, self.origin)
        try:
            import tensorflow as tf
            self._reader = tf.train.load_checkpoint(prefix)
            self.shapes = {k: tuple(int(d) for d in s) for k, s in self._reader.get_variable_to_shape_map().items()}
            self.dtypes = {k: d for k, d in self._reader.get_variable_to_dtype_map().items()}
        except Exception as e:  # TensorFlow raises OpError subclasses and RuntimeErrors here
            raise FormatError(self.origin, "cannot open the checkpoint index: %s" % _one_line(e)) from e
        self._check_shards()

    def _check_shards(self):
        shards = [m for m in (_SHARD.search(p) for p in glob.glob(glob.escape(self.prefix) + ".data-*")) if m]
        if not shards:
            raise FormatError(self.origin, "missing data shard %s.data-00000-of-00001" % self.prefix)
        total = int(shards[0].group(2))
        present = {int(m.group(1)) for m in shards}
        missing = [i for i in range(total) if i not in present]
        if missing:
            raise FormatError(self.origin, "missing data shard %s.data-%05d-of-%05d" % (self.prefix, missing[0], total))
        size = sum(os.path.getsize("%s.data-%05d-of-%05d" % (self.prefix, i, total)) for i in range(total))
        declared = sum(self.nbytes(k) for k in self.shapes)
        if declared > size:
            raise FormatError(self.origin, "data shards hold %d bytes but the index declares %d bytes of tensors "
                                           "(truncated data file?)" % (size, declared))

    def nbytes(self, key):
        dtype = self.numpy_dtype(key)
        if dtype is None or dtype.kind in "OSU":
            return 0
        return int(np.prod(self.shapes[key], dtype=np.int64)) * dtype.itemsize

    def numpy_dtype(self, key):
        try:
            return np.dtype(self.dtypes[key].as_numpy_dtype)
        except (TypeError, AttributeError):
            return None

    def __contains__(self, key):
        return key in self.shapes

    def keys(self):
        return sorted(self.shapes)

    def read(self, key):
        """The tensor as numpy, checked against the index's shape and dtype."""
        if key not in self.shapes:
            raise FormatError(self.origin, "the checkpoint has no tensor %r" % key)
        try:
            value = np.asarray(self._reader.get_tensor(key))
        except Exception as e:
            raise FormatError(self.origin, "cannot read tensor %s: %s" % (key, _one_line(e))) from e
        want = self.numpy_dtype(key)
        if tuple(value.shape) != self.shapes[key] or (want is not None and want.kind not in "OSU"
                                                      and value.dtype != want):
            raise FormatError(self.origin, "tensor %s: the index declares %s %s, the data holds %s %s"
                              % (key, want, self.shapes[key], value.dtype, tuple(value.shape)))
        return value

    def tensor(self, key):
        """A LazyTensor for `key` (nothing is read until it is loaded)."""
        if key not in self.shapes:
            raise FormatError(self.origin, "the checkpoint has no tensor %r" % key)
        dtype = self.numpy_dtype(key)
        if dtype is None:
            raise FormatError(self.origin, "tensor %s has dtype %s, which has no numpy equivalent"
                              % (key, self.dtypes[key]))
        return LazyTensor(self.shapes[key], dtype, lambda: self.read(key), origin="%s:%s" % (self.origin, key))

    def scalar(self, key):
        value = self.read(key)
        if value.shape != ():
            raise FormatError(self.origin, "%s should be a scalar, found shape %s" % (key, value.shape))
        return value.item()

    def object_graph(self):
        """The parsed object graph, or None for a name-based (TF1 Saver) checkpoint."""
        if GRAPH_KEY not in self.shapes:
            return None
        return ObjectGraph.parse(self.read(GRAPH_KEY), self.origin)


class ObjectGraph:
    """The `TrackableObjectGraph` of an object-based checkpoint: nodes, named edges, slots."""

    def __init__(self, proto, origin):
        self.proto = proto
        self.origin = origin
        self.nodes = proto.nodes

    @classmethod
    def parse(cls, raw, origin):
        from tensorflow.core.protobuf import trackable_object_graph_pb2
        proto = trackable_object_graph_pb2.TrackableObjectGraph()
        try:
            data = raw.item() if hasattr(raw, "item") else raw
            proto.ParseFromString(bytes(data))
        except Exception as e:  # google.protobuf.message.DecodeError and friends
            raise FormatError(origin, "the object graph (%s) is not a valid TrackableObjectGraph: %s"
                              % (GRAPH_KEY, _one_line(e))) from e
        graph = cls(proto, origin)
        graph._check()
        return graph

    def _check(self):
        n = len(self.nodes)
        if not n:
            raise FormatError(self.origin, "the object graph has no nodes")
        for i, node in enumerate(self.nodes):
            ids = [c.node_id for c in node.children]
            for s in node.slot_variables:
                ids += [s.original_variable_node_id, s.slot_variable_node_id]
            bad = [j for j in ids if not 0 <= j < n]
            if bad:
                raise FormatError(self.origin, "the object graph is corrupt: node %d refers to node %d of %d"
                                  % (i, bad[0], n))

    def children(self, node_id):
        """{local name: node id} in the order the object tracked them."""
        return {c.local_name: c.node_id for c in self.nodes[node_id].children}

    def child(self, node_id, name):
        for c in self.nodes[node_id].children:
            if c.local_name == name:
                return c.node_id
        return None

    def list_items(self, node_id):
        """Children of a tracked list (`0`, `1`, ...) in index order."""
        items = [(c.local_name, c.node_id) for c in self.nodes[node_id].children]
        if not all(name.isdigit() for name, _ in items):
            raise FormatError(self.origin, "object %d should be a list, has children %s"
                              % (node_id, [name for name, _ in items][:5]))
        return [i for _, i in sorted(items, key=lambda t: int(t[0]))]

    def value_key(self, node_id):
        """The checkpoint key of a variable node's value, or None when the node is no variable."""
        for a in self.nodes[node_id].attributes:
            if a.name == "VARIABLE_VALUE":
                return a.checkpoint_key
        return None

    def slot_variables(self, node_id):
        return [(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                for s in self.nodes[node_id].slot_variables]

    def paths(self, start, skip=()):
        """{node id: shortest object path from `start`}, not entering nodes in `skip`."""
        out = {start: ""}
        frontier = [start]
        while frontier:
            nxt = []
            for node_id in frontier:
                for c in self.nodes[node_id].children:
                    if c.node_id in out or c.node_id in skip:
                        continue
                    prefix = out[node_id]
                    out[c.node_id] = "%s/%s" % (prefix, c.local_name) if prefix else c.local_name
                    nxt.append(c.node_id)
            frontier = nxt
        return out


def key_path(key):
    """`layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE` -> `layer_with_weights-0/kernel`."""
    return key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key


def _one_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# -- writing, a batch of tensors at a time ---------------------------------------------------------

BATCH_FLOOR = 64 << 20  # tensors are handed to TensorFlow in batches of at least this many bytes


def _nbytes(value):
    """Bytes of a value to be written, without loading it (None when only loading tells)."""
    if callable(value) and not hasattr(value, "shape"):
        return None
    if isinstance(value, (bytes, str)):
        return len(value)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return int(np.asarray(value).nbytes)
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _to_tensor(value):
    """An eager tensor holding `value` (a numpy array or bytes), copied once.

    `tf.constant` copies a numpy array twice (once in Python, once into the tensor); the
    EagerTensor constructor it ends in copies it once.
    """
    import tensorflow as tf
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OSU":
        try:
            from tensorflow.python.eager import context
            from tensorflow.python.framework import ops
            ctx = context.context()
            ctx.ensure_initialized()
            # np.require keeps a 0-d array 0-d (np.ascontiguousarray makes it shape (1,))
            return ops.EagerTensor(np.require(value, requirements="C"), ctx.device_name, None)
        except (ImportError, AttributeError, TypeError):  # a TensorFlow without this internal path
            pass
    return tf.constant(value)


def write_bundle(prefix, items, progress=None):
    """Write (key, value) pairs as the tensor bundle `prefix`, holding about one batch in memory.

    value: a numpy array, a LazyTensor, bytes (a string scalar such as the object graph) or a
    callable returning one of them. Tensors are loaded in key order and handed to TensorFlow
    in batches of at most max(largest tensor, 64 MiB): a batch that fits everything is saved
    with `SaveV2` straight to `prefix`; otherwise each batch is saved as a temporary bundle
    beside it and `MergeV2Checkpoints` renames their data files into the shards
    `<prefix>.data-K-of-N` and writes one index (no byte is copied twice).
    """
    import tensorflow as tf
    from ..schema import materialize
    items = sorted(items, key=lambda kv: kv[0])
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise FormatError(prefix, "two tensors would share a checkpoint key: %s"
                          % sorted({k for k in keys if keys.count(k) > 1})[:3])
    sizes = [_nbytes(v) for _, v in items]
    tensor_sizes = [s for (_, v), s in zip(items, sizes) if s is not None and not isinstance(v, (bytes, str))]
    limit = max([BATCH_FLOOR] + tensor_sizes)  # the object graph (bytes) does not set the batch size
    total = sum(s for s in sizes if s is not None)
    single = all(s is not None for s in sizes) and total <= limit
    parts, batch, batch_bytes = [], ([], []), 0
    stage = None

    def flush():
        nonlocal batch, batch_bytes, stage
        if not batch[0]:
            return
        if single:
            target = prefix
        else:
            if stage is None:
                stage = tempfile.mkdtemp(prefix=".%s.parts-" % os.path.basename(prefix),
                                         dir=os.path.dirname(os.path.abspath(prefix)))
            target = os.path.join(stage, "part-%05d" % len(parts))
        _save(target, *batch)
        parts.append(target)
        batch, batch_bytes = ([], []), 0

    try:
        for i, (key, value) in enumerate(items):
            size = sizes[i]
            if size is not None and batch[0] and batch_bytes + size > limit:
                flush()
            if callable(value) and not hasattr(value, "shape"):
                value = value()
            value = value if isinstance(value, (bytes, str)) else materialize(value)
            tensor = _to_tensor(value)
            size = _nbytes(value)
            del value
            if size is not None and batch[0] and batch_bytes + size > limit:
                flush()
            batch[0].append(key)
            batch[1].append(tensor)
            batch_bytes += size or 0
            del tensor
            if progress:
                progress(i + 1, len(items), key)
        flush()
        if not single:
            try:
                tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix,
                                              delete_old_dirs=True)
            except Exception as e:  # tf.errors.OpError
                raise FormatError(prefix, "cannot write the checkpoint: %s" % _one_line(e)) from e
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    return len(parts)


def _save(prefix, names, tensors):
    import tensorflow as tf
    try:
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    except Exception as e:  # tf.errors.OpError
        raise FormatError(prefix, "cannot write the checkpoint: %s" % _one_line(e)) from e
