"""Protocol-buffer wire format, decoded by hand.

The SavedModel metadata and the TF bundle index are protobuf / LevelDB-table bytes; reading
them with these few lines (instead of TensorFlow's parsers) lets every reader check sizes
and bounds itself before anything is allocated, and raises ValueError on any malformation.
"""


def varint(data, i):
    """(value, next offset) of the base-128 varint at `data[i]`."""
    result = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint at byte %d" % i)
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i
        if shift > 63:
            raise ValueError("varint longer than 10 bytes at byte %d" % i)


def fields(data):
    """Yield (field number, int or bytes) of one protobuf message."""
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
        elif wire == 2:
            n, i = varint(data, i)
            if i + n > len(data):
                raise ValueError("field %d runs past the end of the data" % field)
            value, i = bytes(data[i:i + n]), i + n
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > len(data):
                raise ValueError("field %d runs past the end of the data" % field)
            value, i = int.from_bytes(data[i:i + width], "little"), i + width
        else:
            raise ValueError("unsupported wire type %d for field %d" % (wire, field))
        if field == 0:
            raise ValueError("field number 0")
        yield field, value
