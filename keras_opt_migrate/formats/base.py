"""The format-adapter protocol and the helpers every adapter shares.

An adapter is a small object with:
  name         short identifier (`tf_checkpoint`, `hdf5`, ...)
  validate(path) -> bool   cheap: is this file mine? (never raises for foreign files)
  metadata(path) -> dict   cheap: what is inside, without reading tensor bytes
  read(path, **options) -> OptimizerState   tensors may be LazyTensor
  write(state, path, **options)             optional; atomic
Adapters register in `formats.REGISTRY`, an explicit ordered list, because detection
order matters (a `.keras` file written by Keras 2.12 is HDF5, a SavedModel directory holds
a TF checkpoint, ...).
"""

import contextlib
import os
import tempfile

from ..errors import FormatError

MAX_JSON_BYTES = 64 * 1024 * 1024  # configs larger than this are refused as hostile


def read_prefix(path, n):
    """The first n bytes of a regular file ('' for directories or unreadable files)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except (IsADirectoryError, PermissionError, FileNotFoundError, OSError):
        return b""


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def is_hdf5(path):
    # HDF5 allows a user block before the superblock at 0, 512, 1024, ... ; Keras never writes one.
    return read_prefix(path, 8) == HDF5_MAGIC


def is_zip(path):
    return read_prefix(path, 4) == ZIP_MAGIC


@contextlib.contextmanager
def atomic_output(path, directory=False):
    """Yield a temporary path beside `path`; on success rename it into place.

    On any exception the temporary file or directory is removed and `path` is untouched.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise FormatError(path, "output directory %s does not exist" % parent)
    base = os.path.basename(path)
    if directory:
        tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % base, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=".%s.tmp-" % base, dir=parent)
        os.close(fd)
    try:
        yield tmp
        if directory and os.path.isdir(path):
            import shutil
            old = tempfile.mkdtemp(prefix=".%s.old-" % base, dir=parent)
            os.rename(path, os.path.join(old, "x"))
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Format:
    """Base class with defaults for the optional parts of the protocol."""

    name = "format"
    description = ""
    can_write = False

    def validate(self, path):
        raise NotImplementedError

    def metadata(self, path):
        """Cheap summary; the default reads the state lazily (tensors are not loaded)."""
        state = self.read(path)
        return {"format": self.name, "state": state}

    def read(self, path, **options):
        raise NotImplementedError

    def write(self, state, path, **options):
        raise FormatError(path, "the %s format cannot be written yet" % self.name)
