"""Reading a TensorFlow tensor bundle (`<prefix>.index` + `<prefix>.data-K-of-N`) safely.

Tensor bytes are read straight from the data shards into the array that holds them, checked
against the index's CRC-32C (google-crc32c's hardware code); sliced, big-endian and string
tensors, and every large tensor when that C code is missing, go through TensorFlow's
CheckpointReader. Nothing in the file is executed. The object graph of an object-based checkpoint is parsed as a
`TrackableObjectGraph` protobuf. Every problem with the files becomes a one-line
`FormatError` naming the file, never a raw TensorFlow exception.
"""

import glob
import os
import re
import shutil
import tempfile

import numpy as np

from .._tensorflow import import_tensorflow
from ..errors import FormatError
from ..schema import LazyTensor
from .protowire import fields as _fields
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
    # realpath, not abspath: a symlink inside the directory (to the prefix's directory or to its
    # files) must not lead out of it
    root = os.path.realpath(str(origin))
    directory = os.path.dirname(prefix) or "."
    files = [prefix + ".index"] + [os.path.join(directory, n) for n in _listdir(directory)
                                   if n.startswith(os.path.basename(prefix) + ".data-")]
    for target in [prefix] + files:
        if os.path.commonpath([root, os.path.realpath(target)]) != root:
            raise FormatError(origin, "its `checkpoint` file points outside the directory, at %s; refusing to "
                                      "follow it (pass the checkpoint prefix itself)" % target)


def _listdir(directory):
    try:
        return os.listdir(directory)
    except OSError:
        return []


# -- the index, parsed without TensorFlow ----------------------------------------------------------

# TensorFlow's DataType enum (types.proto): name and bytes per element (0: no fixed size), checked
# against TensorFlow by tests/formats/test_tf_bundle_reader.py. DT_RESOURCE (20) is never saved.
DTYPES = {1: ("DT_FLOAT", 4), 2: ("DT_DOUBLE", 8), 3: ("DT_INT32", 4), 4: ("DT_UINT8", 1), 5: ("DT_INT16", 2),
          6: ("DT_INT8", 1), 7: ("DT_STRING", 0), 8: ("DT_COMPLEX64", 8), 9: ("DT_INT64", 8), 10: ("DT_BOOL", 1),
          11: ("DT_QINT8", 1), 12: ("DT_QUINT8", 1), 13: ("DT_QINT32", 4), 14: ("DT_BFLOAT16", 2),
          15: ("DT_QINT16", 2), 16: ("DT_QUINT16", 2), 17: ("DT_UINT16", 2), 18: ("DT_COMPLEX128", 16),
          19: ("DT_HALF", 2), 21: ("DT_VARIANT", 0), 22: ("DT_UINT32", 4), 23: ("DT_UINT64", 8),
          24: ("DT_FLOAT8_E5M2", 1), 25: ("DT_FLOAT8_E4M3FN", 1), 26: ("DT_FLOAT8_E4M3FNUZ", 1),
          27: ("DT_FLOAT8_E4M3B11FNUZ", 1), 28: ("DT_FLOAT8_E5M2FNUZ", 1), 29: ("DT_INT4", 1), 30: ("DT_UINT4", 1),
          31: ("DT_INT2", 1), 32: ("DT_UINT2", 1), 33: ("DT_FLOAT4_E2M1FN", 1)}
# The dtypes read without TensorFlow (little-endian, as the bundle stores them); the rest ask TensorFlow.
NUMPY_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "|u1", 5: "<i2", 6: "|i1", 7: "O", 8: "<c8", 9: "<i8",
                10: "|b1", 17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4", 23: "<u8"}
DT_STRING = 7
CHECKSUM_KIND = "tf-bundle-crc32c"  # LazyTensor.checksum of bundle tensors: the masked CRC-32C of their bytes
PY_CRC_LIMIT = 1 << 20  # index blocks and small tensors are checksummed in Python up to this size
RAW_LIMIT = 1 << 16  # without google-crc32c's C code, numeric tensors up to this size are read without TensorFlow


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


try:  # hardware CRC-32C (google-crc32c's C extension): tensors of any size are read without TensorFlow
    import google_crc32c as _fast_crc32c
    if getattr(_fast_crc32c, "implementation", None) != "c":
        _fast_crc32c = None
except ImportError:  # pragma: no cover - a dependency; without it TensorFlow reads the large tensors
    _fast_crc32c = None


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli) of `data`, continuing `crc` (google-crc32c's C code, else in Python)."""
    if _fast_crc32c is not None:
        # its C code takes bytes or a numpy buffer (not a bytearray or memoryview): no copy either way
        return _fast_crc32c.extend(crc, data if isinstance(data, bytes) else np.frombuffer(data, np.uint8))
    crc ^= 0xFFFFFFFF
    table = _CRC32C
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _mask(crc):
    """A CRC as TensorFlow stores it (rotated and offset: leveldb's `crc32c::Mask`)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data):
    return _mask(crc32c(data))


def _signed(value):
    return value - (1 << 64) if value >= 1 << 63 else value


class IndexEntry:
    """One `BundleEntryProto` of the index, decoded by hand (`protowire`)."""

    __slots__ = ("dtype", "shape", "unknown_rank", "shard_id", "offset", "size", "crc32c", "slices")

    def __init__(self, raw):
        self.dtype, self.shape, self.unknown_rank = 0, (), False
        self.shard_id = self.offset = self.size = self.crc32c = 0
        self.slices = False
        for field, value in _fields(raw):
            if field == 1:
                self.dtype = value
            elif field == 2:
                self.shape, self.unknown_rank = _shape(value)
            elif field == 3:
                self.shard_id = _signed(value)
            elif field == 4:
                self.offset = _signed(value)
            elif field == 5:
                self.size = _signed(value)
            elif field == 6:
                self.crc32c = value
            elif field == 7:
                self.slices = True

    @property
    def elements(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def _shape(raw):
    if not isinstance(raw, bytes):
        raise ValueError("a shape is not a message")
    dims, unknown = [], False
    for field, value in _fields(raw):
        if field == 2:
            size = 0
            for f, v in _fields(value if isinstance(value, bytes) else b""):
                if f == 1:
                    size = _signed(v)
            dims.append(size)
        elif field == 3:
            unknown = bool(value)
    return tuple(dims), unknown


def _header(raw):
    """(num_shards, endianness) of the `BundleHeaderProto`."""
    shards, endianness = 0, 0
    for field, value in _fields(raw):
        if field == 1:
            shards = _signed(value)
        elif field == 2:
            endianness = value
    return shards, endianness


def _block_entries(data, offset, size, verify=False):
    """(key, value) pairs of one uncompressed table block at `offset` (size excludes the trailer).

    verify: check the block's trailer checksum (masked CRC-32C of the block and its type byte).
    """
    if offset + size + 5 > len(data) - 48 or size < 4:
        raise ValueError("block at %d (%d bytes) runs past the end of the index" % (offset, size))
    if data[offset + size] != 0:
        raise ValueError("block at %d is compressed (type %d); TensorFlow writes uncompressed indexes"
                         % (offset, data[offset + size]))
    if verify and masked_crc32c(data[offset:offset + size + 1]) != int.from_bytes(
            data[offset + size + 1:offset + size + 5], "little"):
        raise ValueError("block at %d does not match its checksum" % offset)
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
    verify = len(data) <= PY_CRC_LIMIT  # larger indexes: TensorFlow checks them when it opens them
    out = []
    for _, handle in _block_entries(data, index_offset, index_size, verify):
        offset, j = _varint(handle, 0)
        size, _ = _varint(handle, j)
        out.extend(_block_entries(data, offset, size, verify))
    return out


def check_index(prefix, origin):
    """({key: IndexEntry}, endianness) of the bundle, every entry checked against the data shards' sizes.

    Refuses what TensorFlow would crash on or allocate blindly: unknown dtypes, negative or
    unknown dimensions, element counts beyond int64, shards that do not exist, and entries whose
    bytes (shape x dtype, or the declared size) do not lie inside their shard. Index blocks up
    to `PY_CRC_LIMIT` bytes have their checksums verified here; TensorFlow checks larger ones.
    """
    index = prefix + INDEX_SUFFIX
    if os.path.getsize(index) > MAX_INDEX_SCAN:
        raise FormatError(origin, "checkpoint index %s is larger than %d bytes; refused" % (index, MAX_INDEX_SCAN))
    try:
        table = read_index_table(index_bytes(prefix))
    except ValueError as e:
        raise FormatError(origin, "checkpoint index %s is corrupt: %s" % (index, e)) from e
    if not table or table[0][0] != b"":
        raise FormatError(origin, "checkpoint index %s has no bundle header" % index)
    try:
        num_shards, endianness = _header(table[0][1])
    except ValueError as e:
        raise FormatError(origin, "checkpoint index %s: unreadable bundle header (%s)" % (index, e)) from e
    if not 1 <= num_shards <= MAX_SHARDS:
        raise FormatError(origin, "checkpoint index %s declares %d data shards" % (index, num_shards))
    shard_sizes = {}
    entries = {}
    for raw_key, value in table[1:]:
        key = raw_key.decode("utf-8", "replace")
        try:
            entry = IndexEntry(value)
        except ValueError as e:
            raise FormatError(origin, "checkpoint index entry %r is unreadable (%s)" % (key, e)) from e
        if entry.dtype not in DTYPES:
            raise FormatError(origin, "tensor %s has dtype %d, which is no TensorFlow tensor dtype" % (key, entry.dtype))
        if entry.unknown_rank or any(d < 0 for d in entry.shape):
            raise FormatError(origin, "tensor %s declares the shape %s" % (key, list(entry.shape)))
        if entry.elements > MAX_ELEMENTS:
            raise FormatError(origin, "tensor %s declares %d elements" % (key, entry.elements))
        if entry.slices:
            entries[key] = entry  # a partitioned variable: its slices are entries of their own
            continue
        if not 0 <= entry.shard_id < num_shards:
            raise FormatError(origin, "tensor %s is in data shard %d of %d" % (key, entry.shard_id, num_shards))
        shard = "%s.data-%05d-of-%05d" % (prefix, entry.shard_id, num_shards)
        if shard not in shard_sizes:
            try:
                shard_sizes[shard] = os.path.getsize(shard)
            except OSError:
                raise FormatError(origin, "missing data shard %s" % shard) from None
        if entry.dtype not in VARIABLE_SIZE_DTYPES:
            nbytes = entry.elements * DTYPES[entry.dtype][1]
            if entry.size != nbytes:
                raise FormatError(origin, "tensor %s: the index declares %d bytes for %s %s (%d bytes)"
                                  % (key, entry.size, DTYPES[entry.dtype][0], entry.shape, nbytes))
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > shard_sizes[shard]:
            raise FormatError(origin, "tensor %s: the index places %d bytes at offset %d of %s, which holds %d "
                                      "bytes (truncated data file?)" % (key, entry.size, entry.offset, shard,
                                                                        shard_sizes[shard]))
        entries[key] = entry
    return entries, num_shards, endianness


class Bundle:
    """A checkpoint bundle opened for lazy, one-tensor-at-a-time reading.

    The index is read in Python (`check_index`): shapes, dtypes and small tensors (the object
    graph, step counters, hyperparameters; checksums verified) need no TensorFlow, so metadata
    commands do not start it. Larger tensors are read through TensorFlow's CheckpointReader,
    opened on first use, which verifies their checksums.
    """

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
        self.entries, self.num_shards, self.endianness = check_index(prefix, self.origin)
        # slices of partitioned variables are keyed by an encoding starting with a NUL byte; TF lists
        # the whole variable only
        self.shapes = {k: e.shape for k, e in self.entries.items() if not k.startswith("\0")}
        self._reader = None
        if os.path.getsize(index) > PY_CRC_LIMIT:
            self._tf_reader()  # a large index: TensorFlow verifies its block checksums when it opens it
        self._check_shards()

    def _tf_reader(self):
        if self._reader is None:
            try:
                tf = import_tensorflow()
                self._reader = tf.train.load_checkpoint(self.prefix)
            except Exception as e:  # TensorFlow raises OpError subclasses and RuntimeErrors here
                raise FormatError(self.origin, "cannot open the checkpoint index: %s" % _one_line(e)) from e
        return self._reader

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
        entry = self.entries[key]
        return entry.elements * DTYPES[entry.dtype][1]

    def numpy_dtype(self, key):
        """The numpy dtype of a tensor (None when numpy has none, e.g. a resource)."""
        code = self.entries[key].dtype
        if code in NUMPY_DTYPES:
            return np.dtype(NUMPY_DTYPES[code]).newbyteorder("=") if code != DT_STRING else np.dtype(object)
        try:  # bfloat16, float8, quantized types: TensorFlow knows their numpy form
            return np.dtype(import_tensorflow().dtypes.as_dtype(code).as_numpy_dtype)
        except (TypeError, AttributeError, KeyError, ValueError):
            return None

    def __contains__(self, key):
        return key in self.shapes

    def keys(self):
        return sorted(self.shapes)

    def read(self, key):
        """The tensor as numpy, checked against the index's shape and dtype."""
        if key not in self.shapes:
            raise FormatError(self.origin, "the checkpoint has no tensor %r" % key)
        value = self._read_direct(key, self.entries[key])
        if value is None:
            try:
                value = np.asarray(self._tf_reader().get_tensor(key))
            except FormatError:
                raise
            except Exception as e:
                raise FormatError(self.origin, "cannot read tensor %s: %s" % (key, _one_line(e))) from e
        want = self.numpy_dtype(key)
        if tuple(value.shape) != self.shapes[key] or (want is not None and want.kind not in "OSU"
                                                      and value.dtype != want):
            raise FormatError(self.origin, "tensor %s: the index declares %s %s, the data holds %s %s"
                              % (key, want, self.shapes[key], value.dtype, tuple(value.shape)))
        return value

    def _read_direct(self, key, entry):
        """The tensor read straight from its shard, its checksum verified (any numeric tensor with the fast
        CRC-32C, else small ones only); None: TensorFlow reads it."""
        if entry.slices or self.endianness != 0 or entry.dtype not in NUMPY_DTYPES:
            return None
        if entry.size > (PY_CRC_LIMIT if entry.dtype == DT_STRING else RAW_LIMIT) and (
                _fast_crc32c is None or entry.dtype == DT_STRING):
            return None
        shard = "%s.data-%05d-of-%05d" % (self.prefix, entry.shard_id, self.num_shards)
        # read into one buffer that becomes the array: a tensor's bytes are held once, not twice
        data = bytearray(entry.size)
        try:
            with open(shard, "rb") as f:
                f.seek(entry.offset)
                got = f.readinto(data)
        except OSError as e:
            raise FormatError(self.origin, "cannot read tensor %s: %s" % (key, e)) from e
        if got != entry.size:
            raise FormatError(self.origin, "tensor %s: the data file ends early" % key)
        if entry.dtype == DT_STRING:
            return _read_strings(data, entry, key, self.origin)
        if masked_crc32c(data) != entry.crc32c:
            raise FormatError(self.origin, "tensor %s does not match its checksum (crc32c): the data file is "
                                           "corrupt" % key)
        return np.frombuffer(data, np.dtype(NUMPY_DTYPES[entry.dtype]).newbyteorder("=")).reshape(entry.shape)

    def tensor(self, key):
        """A LazyTensor for `key` (nothing is read until it is loaded)."""
        if key not in self.shapes:
            raise FormatError(self.origin, "the checkpoint has no tensor %r" % key)
        dtype = self.numpy_dtype(key)
        if dtype is None:
            raise FormatError(self.origin, "tensor %s has dtype %s, which has no numpy equivalent"
                              % (key, DTYPES[self.entries[key].dtype][0]))
        entry = self.entries[key]
        checksum = None
        if not entry.slices and entry.dtype not in VARIABLE_SIZE_DTYPES and self.endianness == 0:
            checksum = (CHECKSUM_KIND, entry.crc32c)
        return LazyTensor(self.shapes[key], dtype, _Stored(self, key), origin="%s:%s" % (self.origin, key),
                          checksum=checksum)

    def scalar(self, key):
        value = self.read(key)
        if value.shape != ():
            raise FormatError(self.origin, "%s should be a scalar, found shape %s" % (key, value.shape))
        return value.item()

    def counter(self, key):
        """A step counter (`iterations`, `global_step`): an integer in [0, 2**63 - 1], else FormatError."""
        from .base import counter_value
        value = self.read(key)
        if value.shape != ():
            raise FormatError(self.origin, "%s should be a scalar, found shape %s" % (key, value.shape))
        return counter_value(value, self.origin, what=key)

    def object_graph(self):
        """The parsed object graph, or None for a name-based (TF1 Saver) checkpoint."""
        if GRAPH_KEY not in self.shapes:
            return None
        return ObjectGraph.parse(self.read(GRAPH_KEY), self.origin)


class _Stored:
    """The loader of a bundle tensor: reads it, and tells a bundle writer where its bytes lie."""

    __slots__ = ("bundle", "key")

    def __init__(self, bundle, key):
        self.bundle, self.key = bundle, key

    def __call__(self):
        return self.bundle.read(self.key)


class _Ref:
    __slots__ = ("node_id", "local_name")


class _Attr:
    __slots__ = ("name", "full_name", "checkpoint_key")


class _SlotRef:
    __slots__ = ("original_variable_node_id", "slot_name", "slot_variable_node_id")


class _Node:
    __slots__ = ("children", "attributes", "slot_variables")


def _text(value):
    if not isinstance(value, bytes):
        raise ValueError("a string field holds a number")
    return value.decode("utf-8")


def _message(raw, cls, fields):
    """An object of `cls` with `fields` ({number: (attribute, decode)}) read from a message."""
    if not isinstance(raw, bytes):
        raise ValueError("a message field holds a number")
    obj = cls()
    for _, (name, decode) in fields.items():
        setattr(obj, name, decode(b"") if decode is _text else 0)
    for number, value in _fields(raw):
        if number in fields:
            name, decode = fields[number]
            setattr(obj, name, decode(value))
    return obj


def _int32(value):
    if isinstance(value, bytes):
        raise ValueError("an integer field holds bytes")
    return _signed(value)


_REF = {1: ("node_id", _int32), 2: ("local_name", _text)}
_ATTR = {1: ("name", _text), 2: ("full_name", _text), 3: ("checkpoint_key", _text)}
_SLOT = {1: ("original_variable_node_id", _int32), 2: ("slot_name", _text), 3: ("slot_variable_node_id", _int32)}


def _parse_node(raw):
    if not isinstance(raw, bytes):
        raise ValueError("a node is not a message")
    node = _Node()
    node.children, node.attributes, node.slot_variables = [], [], []
    for number, value in _fields(raw):
        if number == 1:
            node.children.append(_message(value, _Ref, _REF))
        elif number == 2:
            node.attributes.append(_message(value, _Attr, _ATTR))
        elif number == 3:
            node.slot_variables.append(_message(value, _SlotRef, _SLOT))
    return node


def parse_object_graph(data):
    """The nodes of a serialized `TrackableObjectGraph` (children, attributes, slot variables)."""
    return [_parse_node(value) for number, value in _fields(data) if number == 1]


class ObjectGraph:
    """The `TrackableObjectGraph` of an object-based checkpoint: nodes, named edges, slots."""

    def __init__(self, nodes, data, origin):
        self.nodes = nodes
        self.origin = origin
        self._data = data
        self._proto = None

    @property
    def proto(self):
        """TensorFlow's message for the graph (for writers that copy it; reading needs none)."""
        if self._proto is None:
            import_tensorflow()
            from tensorflow.core.protobuf import trackable_object_graph_pb2
            self._proto = trackable_object_graph_pb2.TrackableObjectGraph()
            self._proto.ParseFromString(self._data)
        return self._proto

    @classmethod
    def parse(cls, raw, origin):
        try:
            data = bytes(raw.item() if hasattr(raw, "item") else raw)
            nodes = parse_object_graph(data)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise FormatError(origin, "the object graph (%s) is not a valid TrackableObjectGraph: %s"
                              % (GRAPH_KEY, _one_line(e))) from e
        graph = cls(nodes, data, origin)
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
            for s in node.slot_variables:
                # a variable is never its own optimizer slot (the kernel would become its own `m`)
                if s.original_variable_node_id == s.slot_variable_node_id:
                    raise FormatError(self.origin, "the object graph is corrupt: node %d's slot %r of variable node %d "
                                                   "points at that variable itself"
                                      % (i, s.slot_name[:40], s.original_variable_node_id))

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
        # a tracked list names its items 0 .. n-1; a gap, a repeat or `007` is damage, and reading
        # the items in sorted order would shift every position after it
        names = sorted(name for name, _ in items)
        expected = sorted(str(i) for i in range(len(items)))
        if names != expected:
            odd = sorted(set(names) - set(expected), key=lambda n: (len(n), n))[:3] or \
                sorted(n for n in set(names) if names.count(n) > 1)[:3]
            raise FormatError(self.origin, "object %d is a list of %d items, which should be numbered 0 to %d; found "
                                           "%s; the object graph is damaged"
                              % (node_id, len(items), len(items) - 1, ", ".join(n[:20] for n in odd)))
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


def _read_strings(data, entry, key, origin):
    """A string tensor as TensorFlow's bundle stores it, both of its checksums verified.

    Layout: a varint64 length per element, the masked CRC-32C of those lengths (each taken as
    a little-endian uint32, or uint64 above 4 GiB), then the bytes. The entry's checksum covers
    the lengths in that fixed-width form, the stored length checksum and the bytes.
    """
    n = int(np.prod(entry.shape, dtype=np.int64))
    try:
        i, lengths = 0, []
        for _ in range(n):
            length, i = _varint(data, i)
            lengths.append(length)
    except ValueError as e:
        raise FormatError(origin, "tensor %s: corrupt string lengths (%s)" % (key, e)) from e
    fixed = b"".join(length.to_bytes(4 if length <= 0xFFFFFFFF else 8, "little") for length in lengths)
    crc = crc32c(fixed)
    stored = data[i:i + 4]
    if len(stored) != 4 or _mask(crc) != int.from_bytes(stored, "little"):
        raise FormatError(origin, "tensor %s does not match its length checksum: the data file is corrupt" % key)
    i += 4
    if i + sum(lengths) != len(data):
        raise FormatError(origin, "tensor %s: its strings do not fill the %d bytes the index declares"
                          % (key, len(data)))
    if _mask(crc32c(data[i:], crc32c(stored, crc))) != entry.crc32c:
        raise FormatError(origin, "tensor %s does not match its checksum (crc32c): the data file is corrupt" % key)
    out = np.empty(n, dtype=object)
    for k, length in enumerate(lengths):
        out[k] = data[i:i + length]
        i += length
    return out.reshape(entry.shape)


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
    tf = import_tensorflow()
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


COPY_CHUNK = 64 << 20  # bytes per copy_file_range call (or per read/write where the kernel cannot copy)


def stored_bytes(value):
    """(source bundle, key, IndexEntry) when `value` is a bundle tensor whose stored bytes can be copied
    verbatim into another bundle (same shape and dtype, little-endian, fixed-size, unsliced); else None."""
    loader = getattr(value, "_loader", None) if isinstance(value, LazyTensor) else None
    if not isinstance(loader, _Stored):
        return None
    bundle, key = loader.bundle, loader.key
    entry = bundle.entries.get(key)
    if entry is None or entry.slices or bundle.endianness != 0 or entry.dtype in VARIABLE_SIZE_DTYPES \
            or entry.dtype not in NUMPY_DTYPES:
        return None
    if tuple(value.shape) != tuple(entry.shape) or value.dtype != bundle.numpy_dtype(key) \
            or value.checksum != (CHECKSUM_KIND, entry.crc32c):
        return None
    return bundle, key, entry


def _shard_path(bundle, entry):
    return "%s.data-%05d-of-%05d" % (bundle.prefix, entry.shard_id, bundle.num_shards)


def _copy_range(src, offset, length, dst_fd, where):
    """Append `length` bytes of file `src` from `offset` to the open file `dst_fd` (kernel copy when it can)."""
    try:
        fd = os.open(src, os.O_RDONLY)
    except OSError as e:
        raise FormatError(where, "cannot read data shard %s: %s" % (src, e)) from e
    try:
        done, kernel = 0, hasattr(os, "copy_file_range")
        while done < length:
            n = min(COPY_CHUNK, length - done)
            copied = None
            if kernel:
                try:
                    copied = os.copy_file_range(fd, dst_fd, n, offset + done)
                except OSError:  # another file system, or a kernel without it: copy through memory
                    kernel = False
            if copied is None:
                data = os.pread(fd, n, offset + done)
                copied = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(dst_fd, view):]
            if copied == 0:
                raise FormatError(where, "data shard %s ends at byte %d, before the %d bytes at offset %d the "
                                         "index places there (was it changed while converting?)"
                                  % (src, offset + done, length, offset))
            done += copied
    finally:
        os.close(fd)


def write_bundle(prefix, items, progress=None):
    """Write (key, value) pairs as the tensor bundle `prefix`, holding about one batch in memory.

    Tensors read from another bundle whose stored bytes can be reused unchanged (`stored_bytes`:
    conversions that only rename keys) are not loaded: their byte ranges are copied from the source
    shards into the new bundle's single data file, the other tensors (the object graph, derived or
    new tensors) are saved by TensorFlow (`save_bundle`) beside it and appended, and the index is
    written in Python (`tf_table`) with each copied tensor's CRC-32C taken from its source entry.
    """
    items = sorted(items, key=lambda kv: kv[0])
    _check_unique(prefix, items)
    copies = {key: found for key, found in ((k, stored_bytes(v)) for k, v in items) if found}
    if not copies:
        return save_bundle(prefix, items, progress)
    from .tf_table import encode_entry, write_index
    rest = [(k, v) for k, v in items if k not in copies]
    stage = tempfile.mkdtemp(prefix=".%s.rest-" % os.path.basename(prefix),
                             dir=os.path.dirname(os.path.abspath(prefix)))
    try:
        part = os.path.join(stage, "rest")
        rest_entries, rest_shards = {}, 0
        if rest:
            save_bundle(part, rest, progress and (lambda done, total, key: progress(done, len(items), key)))
            rest_entries, rest_shards, _ = check_index(part, prefix)
        data = "%s.data-00000-of-00001" % prefix
        entries, runs, position = {}, [], 0
        # in source order, so each source shard is read front to back and adjacent tensors copied at once
        for key, (bundle, _, entry) in sorted(copies.items(), key=lambda kv: (_shard_path(kv[1][0], kv[1][2]),
                                                                               kv[1][2].offset)):
            src = _shard_path(bundle, entry)
            entries[key] = encode_entry(entry.dtype, entry.shape, 0, position, entry.size, entry.crc32c)
            if runs and runs[-1][0] == src and runs[-1][1] + runs[-1][2] == entry.offset:
                runs[-1][2] += entry.size
            else:
                runs.append([src, entry.offset, entry.size])
            position += entry.size
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for src, offset, length in runs:
                _copy_range(src, offset, length, fd, prefix)
            bases = []
            for shard_id in range(rest_shards):
                shard = "%s.data-%05d-of-%05d" % (part, shard_id, rest_shards)
                bases.append(position)
                size = os.path.getsize(shard)
                _copy_range(shard, 0, size, fd, prefix)
                position += size
        finally:
            os.close(fd)
        for key, entry in rest_entries.items():
            entries[key] = encode_entry(entry.dtype, entry.shape, 0, bases[entry.shard_id] + entry.offset,
                                        entry.size, entry.crc32c)
        write_index(prefix + INDEX_SUFFIX, 1, entries)
        _verify_copies(prefix, sorted(copies), copies)
        if progress:
            for n, key in enumerate(sorted(copies), len(rest) + 1):
                progress(n, len(items), key)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return 1


def _verify_copies(prefix, keys, copies):
    """TensorFlow reads every copied tensor of the new bundle, checking its bytes against the CRC-32C the
    source recorded: damage in the source's data file, or a copy gone wrong, is refused here (the
    read-back in `api.convert` only compares the checksums in the two indexes). One tensor at a time;
    with google-crc32c's C code the bytes are checked here a chunk at a time instead (string tensors,
    whose checksum covers their length table too, still go through TensorFlow)."""
    if _fast_crc32c is not None:
        bundle = Bundle(prefix, origin=prefix)
        keys = [key for key in keys if not _copy_matches_its_checksum(bundle, key, copies)]
        if not keys:
            return
    tf = import_tensorflow()
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # OpError
        raise FormatError(prefix, "the written checkpoint index does not open in TensorFlow: %s" % _one_line(e)) from e
    for key in keys:
        try:
            reader.get_tensor(key)
        except Exception as e:  # OpError: "Checksum does not match", a short read
            bundle, source_key, _ = copies[key]
            raise FormatError(prefix, "tensor %s, copied from %s of %s, does not match the checksum its source "
                                      "recorded (%s): the source's data file is damaged or the copy failed"
                              % (key, source_key, bundle.origin, _one_line(e))) from e


VERIFY_CHUNK = 8 << 20


def _copy_matches_its_checksum(bundle, key, copies):
    """True when a copied numeric tensor's bytes in the new bundle match the CRC-32C its index records
    (the source's); FormatError when they do not; False for tensors this cannot check (strings)."""
    entry = bundle.entries[key]
    if entry.dtype == DT_STRING or entry.slices:
        return False
    shard = "%s.data-%05d-of-%05d" % (bundle.prefix, entry.shard_id, bundle.num_shards)
    crc, remaining = 0, entry.size
    with open(shard, "rb") as f:
        f.seek(entry.offset)
        while remaining:
            chunk = f.read(min(VERIFY_CHUNK, remaining))
            if not chunk:
                break
            crc = crc32c(chunk, crc)
            remaining -= len(chunk)
    if remaining or _mask(crc) != entry.crc32c:
        source, source_key, _ = copies[key]
        raise FormatError(bundle.prefix, "tensor %s, copied from %s of %s, does not match the checksum its source "
                                         "recorded (%s): the source's data file is damaged or the copy failed"
                          % (key, source_key, source.origin, "the data file ends early" if remaining
                             else "crc32c mismatch"))
    return True


def _check_unique(prefix, items):
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise FormatError(prefix, "two tensors would share a checkpoint key: %s"
                          % sorted({k for k in keys if keys.count(k) > 1})[:3])


def save_bundle(prefix, items, progress=None):
    """Write (key, value) pairs through TensorFlow as the bundle `prefix`, holding about one batch in memory.

    value: a numpy array, a LazyTensor, bytes (a string scalar such as the object graph) or a
    callable returning one of them. Tensors are loaded in key order and handed to TensorFlow
    in batches of at most max(largest tensor, 64 MiB): a batch that fits everything is saved
    with `SaveV2` straight to `prefix`; otherwise each batch is saved as a temporary bundle
    beside it and `MergeV2Checkpoints` renames their data files into the shards
    `<prefix>.data-K-of-N` and writes one index (no byte is copied twice).
    """
    tf = import_tensorflow()
    from ..schema import materialize
    items = sorted(items, key=lambda kv: kv[0])
    _check_unique(prefix, items)
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
    tf = import_tensorflow()
    try:
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    except Exception as e:  # tf.errors.OpError
        raise FormatError(prefix, "cannot write the checkpoint: %s" % _one_line(e)) from e
