"""The zip container of `.keras` archives, read and written without copying the weights member.

Reading: a member stored uncompressed (what Keras writes) is read through `MemberFile`, a
file object over its byte range in the archive, so h5py seeks in it directly. (`zipfile`'s
own member file re-reads the member from its start on every backward seek, which h5py does
constantly: reading a large archive that way is quadratic.)

Writing: `StreamedArchive` lets h5py write `model.weights.h5` straight into the archive file.
The HDF5 file is created with a 512-byte user block (space HDF5 leaves to the application);
the member's zip local header is written into that block, padded to its end with an extra
field, and the other members and the central directory are appended after the HDF5 data.
HDF5 finds its superblock at 512 and every address is relative to it, so the member is a
complete HDF5 file on its own (which is how Keras reads it) and nothing is written twice.
"""

import io
import os
import struct
import zipfile
import zlib

from ..errors import FormatError

USERBLOCK = 512  # the smallest HDF5 user block
ENCRYPTED = 0x1  # general-purpose flag bit 0: the member is encrypted
ZIP64_LIMIT = 0xFFFFFFFF
ALIGN_EXTRA_ID = 0xD935  # an extra field used only to pad a local header (what zipalign writes)
MADE_BY = (3 << 8) | 20  # Unix, zip 2.0 (what Python's zipfile writes)
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<4sIQI")


# -- reading ---------------------------------------------------------------------------------------

def stored_data_offset(path, info):
    """Where a stored member's bytes start in the archive, checked against its local header.

    A member flagged as encrypted (general-purpose bit 0, in the central directory or the local
    header) holds ciphertext: `zipfile`, and so Keras, refuse it, and so do we.
    """
    if info.flag_bits & ENCRYPTED:
        raise FormatError(path, "%s is an encrypted zip member; Keras cannot read it either (expected a plain "
                                "stored member)" % info.filename)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            raise FormatError(path, "the local header of %s is truncated" % info.filename)
        fields = _LOCAL.unpack(header)
        if fields[0] != b"PK\x03\x04":
            raise FormatError(path, "%s has no local header at offset %d (bad magic)"
                              % (info.filename, info.header_offset))
        if fields[2] & ENCRYPTED:
            raise FormatError(path, "%s is an encrypted zip member (its local header says so); Keras cannot read "
                                    "it either (expected a plain stored member)" % info.filename)
        name = f.read(fields[9])
        if name.decode("utf8", "replace") != info.filename and name.decode("cp437") != info.filename:
            raise FormatError(path, "the local header names %r, the central directory %r"
                              % (name[:100], info.filename))
    start = info.header_offset + _LOCAL.size + fields[9] + fields[10]
    if start + info.compress_size > os.path.getsize(path):
        raise FormatError(path, "%s declares %d bytes at offset %d, past the end of the archive"
                          % (info.filename, info.compress_size, start))
    return start


class MemberFile(io.RawIOBase):
    """A read-only, seekable file over `size` bytes at `start` of the file `path`."""

    def __init__(self, path, start, size):
        super().__init__()
        self._file = open(path, "rb")
        self._start, self._size, self._pos = start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the member")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer):
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(memoryview(buffer).cast("B")[:n])
        self._pos += got
        return got

    def close(self):
        if not self.closed:
            self._file.close()
        super().close()


_CHECKED = set()  # (path, inode, size, mtime) of archives whose member CRCs were checked in this process


def _stamp(path):
    st = os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns


def crc_of(path, start, size, chunk=16 << 20):
    """CRC-32 of `size` bytes at `start` of `path`, read a chunk at a time."""
    crc = 0
    buffer = bytearray(min(chunk, max(size, 1)))
    view = memoryview(buffer)
    with open(path, "rb") as f:
        f.seek(start)
        left = size
        while left:
            got = f.readinto(view[:min(left, len(buffer))])
            if not got:
                raise FormatError(path, "the archive ends inside a member (%d bytes missing)" % left)
            crc = zlib.crc32(view[:got], crc)
            left -= got
    return crc


def check_member_crc(path, info, start):
    """Check a stored member's CRC-32 once per archive file and process (a flipped bit is an error).

    `zipfile` checks it only when a member is read through to its end; h5py reads in place, so
    the check is made here, before the first tensor is read (metadata-only reads skip it).
    """
    key = (_stamp(path), info.filename)
    if key in _CHECKED:
        return
    if crc_of(path, start, info.file_size) != info.CRC:
        raise FormatError(path, "%s fails its CRC-32 check: the archive is corrupt" % info.filename)
    _CHECKED.add(key)


# -- writing ---------------------------------------------------------------------------------------

def _dos_time(date_time):
    y, mo, d, h, mi, s = date_time
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


def _zip64_extra(values):
    """The zip64 extended-information extra field holding `values` (8 bytes each)."""
    return struct.pack("<HH", 1, 8 * len(values)) + b"".join(struct.pack("<Q", v) for v in values)


class StreamedArchive:
    """A stored zip whose first member is an HDF5 file h5py writes in place (see the module doc).

    Use: `archive = StreamedArchive(path, "model.weights.h5")`; `h5py.File(path, "w",
    userblock_size=archive.userblock)`, fill and close it; then `archive.finish({name: bytes})`
    appends the other members (in sorted order) and the central directory.
    """

    userblock = USERBLOCK

    def __init__(self, path, name, date_time=(1980, 1, 1, 0, 0, 0), external_attr=0o600 << 16,
                 force_zip64=False):
        self.path, self.name = path, name
        self.time, self.date = _dos_time(date_time)
        self.external_attr = external_attr
        self.force_zip64 = force_zip64

    def _local(self, name, crc, size, pad_to=None):
        raw = name.encode("utf8")
        zip64 = self.force_zip64 or size >= ZIP64_LIMIT
        extra = _zip64_extra([size, size]) if zip64 else b""
        fields = [20 if not zip64 else 45, 0x800 if raw != name.encode("ascii", "replace") else 0,
                  zipfile.ZIP_STORED, self.time, self.date, crc,
                  ZIP64_LIMIT if zip64 else size, ZIP64_LIMIT if zip64 else size, len(raw)]
        if pad_to is not None:
            gap = pad_to - (_LOCAL.size + len(raw) + len(extra))
            if gap < 4:
                raise FormatError(self.path, "the member name %r is too long for the %d-byte header" % (name, pad_to))
            extra += struct.pack("<HHH", ALIGN_EXTRA_ID, gap - 4, pad_to) + b"\0" * (gap - 6)
        return _LOCAL.pack(b"PK\x03\x04", *fields, len(extra)) + raw + extra

    def _central(self, name, crc, size, offset):
        raw = name.encode("utf8")
        big_size = self.force_zip64 or size >= ZIP64_LIMIT
        big_offset = self.force_zip64 or offset >= ZIP64_LIMIT
        values = ([size, size] if big_size else []) + ([offset] if big_offset else [])
        extra = _zip64_extra(values) if values else b""
        needed = 45 if values else 20
        flags = 0x800 if raw != name.encode("ascii", "replace") else 0
        return _CENTRAL.pack(b"PK\x01\x02", MADE_BY, needed, flags, zipfile.ZIP_STORED, self.time, self.date, crc,
                             ZIP64_LIMIT if big_size else size, ZIP64_LIMIT if big_size else size, len(raw),
                             len(extra), 0, 0, 0, self.external_attr,
                             ZIP64_LIMIT if big_offset else offset) + raw + extra

    def finish(self, members):
        """Write the first member's header, append `members` ({name: bytes}) and the central directory."""
        end = os.path.getsize(self.path)
        size = end - USERBLOCK
        if size <= 0:
            raise FormatError(self.path, "the HDF5 file %s was not written" % self.name)
        crc = crc_of(self.path, USERBLOCK, size)
        entries = [(self.name, crc, size, 0)]
        with open(self.path, "r+b") as f:
            f.write(self._local(self.name, crc, size, pad_to=USERBLOCK))
            f.seek(end)
            offset = end
            for name in sorted(members):
                data = bytes(members[name])
                crc = zlib.crc32(data)
                f.write(self._local(name, crc, len(data)))
                f.write(data)
                entries.append((name, crc, len(data), offset))
                offset = f.tell()
            directory = b"".join(self._central(*entry) for entry in entries)
            f.write(directory)
            big = self.force_zip64 or offset >= ZIP64_LIMIT or len(directory) >= ZIP64_LIMIT
            if big:
                end64 = offset + len(directory)
                f.write(_END64.pack(b"PK\x06\x06", _END64.size - 12, MADE_BY, 45, 0, 0, len(entries), len(entries),
                                    len(directory), offset))
                f.write(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
            f.write(_END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries),
                              ZIP64_LIMIT if big and len(directory) >= ZIP64_LIMIT else len(directory),
                              ZIP64_LIMIT if big else offset, 0))
        # the CRC was just computed from the bytes on disk: reading them back needs no second pass
        _CHECKED.add((_stamp(self.path), self.name))
