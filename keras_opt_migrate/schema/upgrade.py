"""The chain of pure functions that bring an older on-disk schema header to the current one.

Readers accept every schema version ever written; writers emit only `SCHEMA_VERSION`.
`UPGRADES[n]` turns a version-n header into a version-(n + 1) header; each schema change
adds one step here and a `vN.py` codec beside the others.
"""

from ..errors import SchemaError
from .state import SCHEMA_VERSION



def upgrade_v1_to_v2(header):
    """Version 2 adds `candidates`. Version-1 states always named their algorithm (readers refused
    files that could not tell), so none was ambiguous."""
    return dict(header, schema_version=2, candidates=[])


UPGRADES = {1: upgrade_v1_to_v2}


def upgrade_header(header, origin="state"):
    """Return `header` upgraded to SCHEMA_VERSION, or raise SchemaError."""
    version = header.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise SchemaError("%s: schema_version must be a positive integer, got %r" % (origin, version))
    if version > SCHEMA_VERSION:
        raise SchemaError(
            "%s: written with schema_version %d, this keras-opt-migrate reads up to %d; upgrade keras-opt-migrate"
            % (origin, version, SCHEMA_VERSION))
    while version < SCHEMA_VERSION:
        if version not in UPGRADES:
            raise SchemaError("%s: no upgrade path from schema_version %d" % (origin, version))
        header = UPGRADES[version](dict(header))
        version = header["schema_version"]
    return header
