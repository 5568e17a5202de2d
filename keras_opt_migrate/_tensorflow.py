"""TensorFlow, imported only when a command needs it, without its start-up noise.

Reading metadata (`inspect`) needs no TensorFlow; reading large tensors from, and writing, TF
checkpoints does. TF 2.21's C++ start-up logs (oneDNN, CUDA stubs) are written before its
log-level settings are read, so environment variables cannot silence them: the first import
runs with file descriptor 2 muted (set KERAS_OPT_MIGRATE_DEBUG=1 to see them). An import error
is left for the real import to raise.
"""

import contextlib
import importlib
import os
import sys


def import_tensorflow():
    """The `tensorflow` module (imported quietly the first time)."""
    if "tensorflow" not in sys.modules and not os.environ.get("KERAS_OPT_MIGRATE_DEBUG"):
        _import_muted()
    return importlib.import_module("tensorflow")


@contextlib.contextmanager
def muted_stderr():
    """File descriptor 2 pointed at /dev/null for the block (C++ runtimes log there whatever their
    log level); Python's sys.stderr is flushed first so nothing of ours is lost."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_muted():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with muted_stderr():
        try:
            importlib.import_module("tensorflow")
        except Exception:  # noqa: BLE001 - raised again, audibly, by the caller's import
            pass
