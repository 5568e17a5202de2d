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
import dataclasses
import math
import os
import stat
import tempfile
from typing import Any, List, Optional, Tuple

import numpy as np

from ..errors import FormatError

MAX_JSON_BYTES = 64 * 1024 * 1024  # configs larger than this are refused as hostile
INT64_MAX = 2 ** 63 - 1

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(path):
    """What `path` is when it exists and is neither a regular file nor a directory (None otherwise).

    `os.stat` follows symlinks and opens nothing, so a FIFO is named without blocking on it.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file or directory")


def check_input_path(path):
    """Refuse an input that is a FIFO, device or socket before anything opens it.

    `path` may be a file, a directory or a TF checkpoint prefix (then its `.index` is checked).
    Opening a FIFO blocks until a writer comes; reading a device never ends.
    """
    path = str(path)
    for candidate in (path, path + ".index"):
        kind = special_kind(candidate)
        if kind is not None:
            raise FormatError(path, "%s is %s, not a regular file or directory; expected an optimizer-state file, "
                                    "a checkpoint prefix or a model directory"
                              % ("it" if candidate == path else candidate, kind))
        if os.path.lexists(candidate):
            return


def counter_value(value, where, what="iterations"):
    """A stored step counter as a Python int: an integer (or integral float) in [0, 2**63 - 1].

    `int()` would read a string tensor b"5" as 5 and turn -1e30 into a 31-digit int that no
    writer can store; both are damage, refused naming `where` (the file) and `what` (the key).
    """
    array = np.asarray(value)
    if array.shape != () and array.size == 1:
        array = array.reshape(())
    if array.shape != ():
        raise FormatError(where, "%s should be a scalar, found shape %s" % (what, array.shape))
    if array.dtype.kind in "iu":
        number = int(array)
    elif array.dtype.kind == "f" and math.isfinite(float(array)) and float(array) == math.floor(float(array)):
        number = int(float(array))
    else:
        shown = array.item()
        raise FormatError(where, "%s should be an integer step counter, found %s %r; the file is damaged"
                          % (what, array.dtype.name, shown if not isinstance(shown, bytes) else shown[:40]))
    if not 0 <= number <= INT64_MAX:
        raise FormatError(where, "%s should be a step counter in [0, 2**63 - 1], found %d; the file is damaged"
                          % (what, number))
    return number


def read_prefix(path, n):
    """The first n bytes of a regular file ('' for directories, special or unreadable files)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b""
        with open(path, "rb") as f:
            return f.read(n)
    except (IsADirectoryError, PermissionError, FileNotFoundError, OSError, ValueError):
        return b""


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_FILTER_RATIO = 1024  # a compressed HDF5 dataset may expand at most this much (deflate's own limit)


def check_h5_storage(ds, where):
    """Refuse a dataset whose declared size its stored bytes cannot hold, before anything is allocated.

    HDF5 lets a dataset declare any shape and fill the unwritten part with a fill value; a
    hostile file declares a huge shape over no storage (a shape bomb). Keras and this toolkit
    always write every byte, so the stored bytes must cover the declared size (contiguous
    storage exactly; filtered chunks within deflate's own expansion limit).
    """
    nbytes = int(ds.size) * ds.dtype.itemsize
    if nbytes == 0:
        return
    stored = ds.id.get_storage_size()
    filtered = ds.chunks is not None and ds.id.get_create_plist().get_nfilters() > 0
    if stored * (MAX_FILTER_RATIO if filtered else 1) < nbytes:
        raise FormatError(where, "dataset %s declares %s %s (%d bytes) but stores %d bytes; refusing to read it "
                                 "(a truncated or hostile file)" % (ds.name, ds.dtype, ds.shape, nbytes, stored))
ZIP_MAGIC = b"PK\x03\x04"


def is_hdf5(path):
    """An HDF5 file whose metadata the HDF5 library reads to the end (see `check_hdf5_metadata`)."""
    # HDF5 allows a user block before the superblock at 0, 512, 1024, ... ; Keras never writes one.
    if read_prefix(path, 8) != HDF5_MAGIC:
        return False
    check_hdf5_metadata(path)
    return True


HDF5_PROBE_SECONDS = 20
_PROBED = {}  # (real path, size, mtime_ns) -> None, or the FormatError problem found


def check_hdf5_metadata(path):
    """Raise FormatError when reading the file's HDF5 metadata hangs or crashes the HDF5 library.

    Some damage sends HDF5 itself (C code holding the GIL, so no Python timeout can interrupt it)
    into an endless loop or a segmentation fault: a corrupt global heap under a variable-length
    string attribute loops forever in HDF5 1.14.6 (found by tests/test_fuzz.py). So before any
    reader opens an HDF5 file, a forked child opens it and reads every attribute and every
    dataset's shape and type (no tensor data) once; a child that does not finish within
    HDF5_PROBE_SECONDS is killed and the file refused, as is one killed by a signal. Errors the
    child meets are left to the readers, which report them. Checked once per file version.
    """
    try:
        st = os.stat(path)
    except OSError:
        return
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _PROBED:
        _PROBED[key] = _probe_hdf5(path)
    if _PROBED[key]:
        raise FormatError(path, _PROBED[key])


def _probe_hdf5(path):
    if not hasattr(os, "fork"):  # pragma: no cover - POSIX only; elsewhere the readers run unguarded
        return None
    import signal
    import time
    pid = os.fork()
    if pid == 0:  # the child: walk the metadata, exit 0 whatever Python raises
        try:
            import h5py

            def visit(_name, obj):
                for key in obj.attrs:
                    obj.attrs.get(key)
                if isinstance(obj, h5py.Dataset):
                    obj.shape, obj.dtype  # noqa: B018 - reading them is the check
            with h5py.File(path, "r") as f:
                visit("/", f)
                f.visititems(visit)
        except BaseException:  # noqa: BLE001 - the readers report errors; only hangs and crashes count
            pass
        os._exit(0)
    deadline = time.monotonic() + HDF5_PROBE_SECONDS
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return ("the HDF5 library does not finish reading this file's metadata (still reading after %d s): the "
                    "file is corrupt" % HDF5_PROBE_SECONDS)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if os.WIFSIGNALED(status):
        return ("reading this file's HDF5 metadata crashes the HDF5 library (signal %d): the file is corrupt"
                % os.WTERMSIG(status))
    return None


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


@dataclasses.dataclass
class ModelPayload:
    """The model a full-model or weights file carries besides the optimizer state.

    Writers of full-model formats (`.keras`, `.h5`, SavedModel, TF checkpoints that
    `model.load_weights` reads) need it; `read_model` of the source adapter provides it.
    weights: (name, tensor, trainable) in the model's own weight order.
    config: the model's Keras config as stored in the source (None for bare checkpoints).
    """

    weights: List[Tuple[str, Any, bool]]
    config: Optional[dict] = None
    keras_version: Optional[str] = None
    source_format: Optional[str] = None
    source_path: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)


class Format:
    """Base class with defaults for the optional parts of the protocol.

    Writers: `write(state, path, model=None, **options)` writes `state` (already in the
    target generation) to `path`, which is a fresh path inside a staging directory: the
    caller (`api.convert`) reads it back, verifies it and only then moves it into place, so
    a writer needs no atomicity of its own but must write only `path` (or files starting
    with it, for checkpoint prefixes). `needs_model` says whether `model` is required.
    `generations` lists the generations the writer can lay out.
    """

    name = "format"
    description = ""
    can_write = False
    checksums = None  # the LazyTensor.checksum kind the tensors read back from a written file carry
    needs_model = False
    generations = ()
    extensions = ()

    def read_model(self, path):
        raise FormatError(path, "the %s format holds no model weights, and the output format needs them (its "
                                "optimizer state hangs off the model's variables): convert from the original "
                                "checkpoint or model file instead" % self.name)

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

    def check_writable(self, state, path, model=None):
        """Raise FormatError now if `write` would refuse `state` (with `model`) for `path`.

        `api.convert` calls it before staging anything, and on `--dry-run` too, so a refusal that
        depends on the source (not only on the target generation) is reported without writing.
        """

    def stored_form(self, state):
        """What writing `state` stores, as labelled comparable data ({what: value}); nothing is written.

        `api.convert` compares it across the algorithms a source file cannot tell apart and goes
        ahead without a hint only where they all give the same. The default is the state itself
        with its algorithm, for formats that store the optimizer's class and config (`.h5`,
        `.keras`, SavedModel, the native file); a format that stores no class overrides it.
        """
        from ..candidates import state_signature
        form = state_signature(state)
        return dict({"stored optimizer class": form.pop("algorithm")}, **form)

    def unwritable(self, state):
        """{extra name: (why, changes_trajectory)} for non-slot state this format has no place for.

        `api.convert` drops these before writing and reports them; `changes_trajectory`
        says whether the real version then continues differently (e.g. Nadam's u_product).
        """
        return {}
