"""Muon (Keras 3 only): momentum orthogonalised by Newton-Schulz, AdamW for the rest.

Slots: `momentum` for every variable; `velocity` only for the variables Muon hands to
its AdamW path. Keras 3.15 `Muon._should_use_adamw` sends a variable to AdamW when its
rank is not 2, when `exclude_embeddings` is set and its path contains "embedding", or
when a regex of `exclude_layers` matches its path. The layout below applies the rank rule
only (the shape rule cannot see paths): for embedding models or `exclude_layers` the
replayed count differs from the file and the positional reader says so; h5 names still
resolve every slot.
"""

from .spec import AlgorithmSpec, interleaved


def _shape(slot, var_shape, config, generation):
    if slot == "velocity" and len(var_shape) == 2:
        return None
    return tuple(var_shape)


SPEC = AlgorithmSpec(
    name="muon",
    slots=("momentum", "velocity"),
    names={"keras3": {"momentum": "momentum", "velocity": "velocity"}},
    layouts={"keras3": lambda c: [interleaved("momentum", "velocity")]},
    class_names={"keras3": ("Muon",)},
    shape_rule=_shape,
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
    tracked={"keras3": {"momentums": "momentum", "adam_velocities": "velocity"}},
)
