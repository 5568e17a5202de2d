"""keras-opt-migrate: portable Keras / TensorFlow optimizer state.

Read optimizer state from any Keras / TensorFlow generation and file format into one
versioned schema (`OptimizerState`), audit it, and (see `convert`, `restore_into`) move it
between generations and formats; `load_into(model, path)` restores a whole file (model weights
and optimizer state) into a tf_keras or Keras 3 model built in code.
"""

from .api import LoadReport, convert, load_into, load_state, save_state, upgrade
from .audit import audit
from .diff import diff
from .migrate import migrate
from .reshape import reshape_weights
from .errors import (FormatError, KerasOptMigrateError, MappingError, SchemaError, UnknownOptimizerError,
                     UnsupportedFormatError)
from .restore import restore_into
from .schema import SCHEMA_VERSION, LazyTensor, OptimizerState, VariableSpec

__version__ = "0.1.0"

__all__ = [
    "load_state", "save_state", "restore_into", "load_into", "LoadReport", "audit", "convert", "upgrade", "diff", "migrate", "reshape_weights", "OptimizerState", "VariableSpec", "LazyTensor", "SCHEMA_VERSION",
    "KerasOptMigrateError", "FormatError", "UnsupportedFormatError", "SchemaError", "MappingError",
    "UnknownOptimizerError",
]
