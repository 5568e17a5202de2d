"""Encoding a TensorFlow bundle `.index`: a LevelDB-style table of `BundleEntryProto`s, in Python.

The counterpart of the reader in `tf_bundle` (`read_index_table`, `IndexEntry`, `_header`), used
when a bundle's data file is assembled from byte ranges of other bundles and only the index has
to be written. Layout (what TensorFlow's table reader expects):

- data blocks: entries `varint shared | varint unshared | varint value length | key suffix | value`,
  the key prefix-compressed against the previous key except at restart points (every
  `RESTART_INTERVAL` entries), then the restart offsets (uint32 each) and their count (uint32);
- after every block a trailer: compression type 0 (none) and the masked CRC-32C of block + type;
- an empty metaindex block, then the index block: for each data block its last key and its
  handle (varint offset, varint size);
- a 48-byte footer: the metaindex and index handles, zero padding to 40 bytes, the magic number.

Keys are sorted bytewise; the bundle header is the entry with the empty key, first.
"""

BLOCK_SIZE = 4096
RESTART_INTERVAL = 16
TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
BUNDLE_VERSION = 1  # TensorFlow's kTensorBundleVersion (the header's VersionDef.producer)


def put_varint(value):
    if value < 0:
        value += 1 << 64  # negative int32/int64 fields are sign-extended to ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number, value):
    return put_varint(number << 3) + put_varint(value) if value else b""


def _field_bytes(number, data):
    return put_varint(number << 3 | 2) + put_varint(len(data)) + data


def encode_entry(dtype, shape, shard_id, offset, size, crc):
    """A serialized `BundleEntryProto` (proto3: zero fields are left out, as TensorFlow writes them)."""
    dims = b"".join(_field_bytes(2, _field_varint(1, int(d))) for d in shape)
    return (_field_varint(1, dtype) + _field_bytes(2, dims) + _field_varint(3, shard_id)
            + _field_varint(4, offset) + _field_varint(5, size)
            + put_varint(6 << 3 | 5) + (crc & 0xFFFFFFFF).to_bytes(4, "little"))


def encode_header(num_shards, endianness=0):
    """A serialized `BundleHeaderProto` (endianness 0: little-endian)."""
    return (_field_varint(1, num_shards) + _field_varint(2, endianness)
            + _field_bytes(3, _field_varint(1, BUNDLE_VERSION)))


def _block(entries, restart_interval):
    out, restarts, previous = bytearray(), [], b""
    for n, (key, value) in enumerate(entries):
        shared = 0
        if n % restart_interval == 0:
            restarts.append(len(out))
        else:
            limit = min(len(previous), len(key))
            while shared < limit and previous[shared] == key[shared]:
                shared += 1
        out += put_varint(shared) + put_varint(len(key) - shared) + put_varint(len(value))
        out += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    for r in restarts:
        out += r.to_bytes(4, "little")
    out += len(restarts).to_bytes(4, "little")
    return bytes(out)


def _handle(offset, size):
    return put_varint(offset) + put_varint(size)


def encode_table(pairs):
    """The bytes of a table holding `pairs` ([(key bytes, value bytes)], keys strictly increasing)."""
    from .tf_bundle import masked_crc32c
    keys = [k for k, _ in pairs]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise ValueError("table keys must be unique and sorted bytewise")
    out = bytearray()

    def emit(block):
        offset = len(out)
        out.extend(block)
        out.extend(b"\0" + masked_crc32c(block + b"\0").to_bytes(4, "little"))
        return _handle(offset, len(block))

    index, current, size = [], [], 0
    for key, value in pairs:
        current.append((key, value))
        size += len(key) + len(value) + 8
        if size >= BLOCK_SIZE:
            index.append((key, emit(_block(current, RESTART_INTERVAL))))
            current, size = [], 0
    if current:
        index.append((current[-1][0], emit(_block(current, RESTART_INTERVAL))))
    meta = emit(_block([], 1))
    footer = meta + emit(_block(index, 1))
    out += footer + b"\0" * (40 - len(footer)) + TABLE_MAGIC
    return bytes(out)


def write_index(path, num_shards, entries):
    """Write the bundle index `path`: the header and `entries` ({key: encoded BundleEntryProto})."""
    pairs = [(b"", encode_header(num_shards))]
    pairs += sorted((k.encode("utf-8") if isinstance(k, str) else k, v) for k, v in entries.items())
    data = encode_table(pairs)
    with open(path, "wb") as f:
        f.write(data)
