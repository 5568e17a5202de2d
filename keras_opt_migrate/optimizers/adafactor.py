"""Adafactor: factored second moments.

For a variable of rank >= 2 the state is `r` (row statistics, shape[:-1]), `c` (column
statistics, shape[:-2] + shape[-1:]) and `velocity` (full shape); for rank < 2 only
`velocity` is real. The 2.11+ optimizer keeps scalar placeholders for `r`/`c` of rank < 2
variables outside `variables` (checkpointed as `optimizer/_r/<i>`); Keras 3 puts them in
`variables` as scalars, with non-unique paths. The 2.11+ optimizer calls `velocity` `v`.
"""

from .spec import AlgorithmSpec, interleaved


def _shape(slot, var_shape, config, generation):
    var_shape = tuple(var_shape)
    if slot == "velocity":
        return var_shape
    if len(var_shape) < 2:
        return () if generation == "keras3" else None
    return var_shape[:-1] if slot == "r" else var_shape[:-2] + var_shape[-1:]


SPEC = AlgorithmSpec(
    name="adafactor",
    slots=("r", "c", "velocity"),
    names={"experimental": {"r": "r", "c": "c", "velocity": "v"},
           "keras3": {"r": "r", "c": "c", "velocity": "velocity"}},
    layouts={"experimental": lambda c: [interleaved("r", "c", "velocity")],
             "keras3": lambda c: [interleaved("r", "c", "velocity")]},
    update_rules={"experimental": "adafactor", "keras3": "adafactor"},
    class_names={"experimental": ("Adafactor",), "keras3": ("Adafactor",)},
    shape_rule=_shape,
    slot_init={"r": 0.0, "c": 0.0, "velocity": 0.0},
    nonnegative=("r", "c", "velocity"),
    tracked={g: {"_r": "r", "_c": "c", "_v": "velocity"} for g in ("experimental", "keras3")},
)
