"""The exception hierarchy.

Every error the library raises on purpose derives from `KerasOptMigrateError`, a
`ValueError`, so callers can catch one type. Messages are one line and say what was
expected, what was received and what to do; file errors name the file.
"""


class KerasOptMigrateError(ValueError):
    """Base class of every error raised by keras-opt-migrate."""


class FormatError(KerasOptMigrateError):
    """A file is unreadable, corrupt, truncated or inconsistent.

    `path` is the file (or directory) at fault; the message always starts with it.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__("%s: %s" % (self.path, problem))


class UnsupportedFormatError(FormatError):
    """A readable file that holds no optimizer state this toolkit understands."""


class SchemaError(KerasOptMigrateError):
    """An `OptimizerState` that breaks the schema's rules (or a schema version we cannot read)."""


class MappingError(KerasOptMigrateError):
    """Optimizer state that cannot be attached to model variables with certainty."""


class UnknownOptimizerError(KerasOptMigrateError):
    """An algorithm or generation name that is not in the registry."""
