"""Format adapters and detection.

`REGISTRY` is the ordered list used for detection: the first adapter whose `validate`
accepts a path reads it. Order matters: the native file and Keras `.weights.h5` are HDF5
too, so they are tried before the generic Keras HDF5 adapter.
"""

import os

from ..errors import FormatError, KerasOptMigrateError, UnsupportedFormatError, printable
from . import hdf5, keras_archive, native, savedmodel, tf1_checkpoint, tf_checkpoint
from .base import check_input_path

REGISTRY = [native.FORMAT, tf_checkpoint.FORMAT, tf1_checkpoint.FORMAT, savedmodel.FORMAT,
            keras_archive.WEIGHTS_FORMAT, keras_archive.FORMAT, hdf5.FORMAT]


def register(fmt, before=None):
    """Add an adapter (before the adapter named `before`, else at the end)."""
    if any(f.name == fmt.name for f in REGISTRY):
        return
    if before is not None:
        for i, f in enumerate(REGISTRY):
            if f.name == before:
                REGISTRY.insert(i, fmt)
                return
    REGISTRY.append(fmt)


def get_format(name):
    for f in REGISTRY:
        if f.name == name:
            return f
    raise KerasOptMigrateError("unknown format %r; expected one of: %s"
                               % (printable(name), ", ".join(f.name for f in REGISTRY)))


def detect(path):
    """The adapter that reads `path`, or a FormatError saying why none does.

    A FIFO, device or socket is refused before any adapter opens it (opening a FIFO blocks).
    """
    check_input_path(path)
    failed = None
    for fmt in REGISTRY:
        try:
            if fmt.validate(path):
                return fmt
        except Exception as e:  # noqa: BLE001 - validate must not raise, but h5py does on corrupt metadata
            failed = failed or (fmt, e)
    if not os.path.exists(path) and not os.path.exists(str(path) + ".index"):
        raise FormatError(path, "no such file or directory")
    if failed is not None:
        if isinstance(failed[1], FormatError):  # a check that names the file and the problem itself
            raise failed[1]
        text = (str(failed[1]).strip().splitlines() or [type(failed[1]).__name__])[0][:300]
        raise FormatError(path, "corrupt or unreadable: checking whether it is a %s failed (%s)"
                          % (failed[0].description, text))
    raise UnsupportedFormatError(
        path, "not a recognised optimizer-state file; expected one of: %s"
        % "; ".join(f.description for f in REGISTRY))
