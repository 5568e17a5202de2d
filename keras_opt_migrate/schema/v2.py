"""Schema version 2: version 1 plus `candidates`, the algorithms a file could not tell apart.

The native file's layout is version 1's (see `v1.py`); the header gains one field. A
version-1 header is upgraded by `upgrade.upgrade_v1_to_v2` (its states always named one
algorithm: readers refused files that could not tell, so `candidates` is empty).
"""

from . import v1

VERSION = 2
HEADER_FIELDS = v1.HEADER_FIELDS + ("candidates",)


def encode_header(state):
    """(header JSON text, [(dataset name, tensor)]) for a state."""
    header, datasets = v1.header_fields(state)
    header.update(schema_version=VERSION, candidates=list(state.candidates))
    return v1.dumps(header), datasets


def decode_header(header, tensor_for):
    """Build an OptimizerState from a version-2 header; `tensor_for(dataset)` gives tensors."""
    state = v1.decode_header(header, tensor_for)
    candidates = header.get("candidates") or []
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise TypeError("'candidates'")  # the native reader reports it as a malformed header field
    state.candidates = list(candidates)
    return state
