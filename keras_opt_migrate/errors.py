"""The exception hierarchy.

Every error the library raises on purpose derives from `KerasOptMigrateError`, a
`ValueError`, so callers can catch one type. Messages are one line and say what was
expected, what was received and what to do; file errors name the file.
"""


import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text):
    """`text` with control characters (a newline in a file name, ...) escaped, so a message stays one line."""
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m.group(), "\\x%02x" % ord(m.group())),
                        str(text))


class KerasOptMigrateError(ValueError):
    """Base class of every error raised by keras-opt-migrate."""


class FormatError(KerasOptMigrateError):
    """A file is unreadable, corrupt, truncated or inconsistent.

    `path` is the file (or directory) at fault; the message always starts with it.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__("%s: %s" % (printable(self.path), problem))


class UnsupportedFormatError(FormatError):
    """A readable file that holds no optimizer state this toolkit understands."""


class SchemaError(KerasOptMigrateError):
    """An `OptimizerState` that breaks the schema's rules (or a schema version we cannot read)."""


class MappingError(KerasOptMigrateError):
    """Optimizer state that cannot be attached to model variables with certainty."""


class UnknownOptimizerError(KerasOptMigrateError):
    """An algorithm or generation name that is not in the registry."""
