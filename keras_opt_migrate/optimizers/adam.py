"""Adam (with AMSGrad), and the algorithms that share its state: AdamW, LazyAdam, Lamb.

Slots: `momentum` (first moment), `velocity` (second moment), `velocity_hat` (running max
of the second moment, AMSGrad only).

Layout per generation: v2 is slot-major (all m, all v, all vhat); the 2.11+ optimizer and
Keras 3 interleave m and v per variable and append all vhat after; Keras v1 keeps
`[iterations] + ms + vs + vhats` where each vhat is a `(1,)` placeholder unless amsgrad;
TF1 name-based keys are `<var>/Adam` (m) and `<var>/Adam_1` (v), with the non-slot
`beta1_power` / `beta2_power` (= beta ** (t + 1) after t steps).
"""

from .spec import AlgorithmSpec, Extra, interleaved, slot_major


def _amsgrad(config):
    return bool(config.get("amsgrad"))


def _shape(slot, var_shape, config, generation):
    if generation == "v1" and slot == "velocity_hat" and not _amsgrad(config):
        return (1,)
    return tuple(var_shape)


NAMES = {
    "v1": {"momentum": "ms", "velocity": "vs", "velocity_hat": "vhats"},
    "v2": {"momentum": "m", "velocity": "v", "velocity_hat": "vhat"},
    "experimental": {"momentum": "m", "velocity": "v", "velocity_hat": "vhat"},
    "keras3": {"momentum": "momentum", "velocity": "velocity", "velocity_hat": "velocity_hat"},
    "tf1": {"momentum": "m", "velocity": "v"},
}

LAYOUTS = {
    "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum", "velocity", "velocity_hat")],
    "v2": lambda c: [slot_major("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "experimental": lambda c: [interleaved("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "keras3": lambda c: [interleaved("momentum", "velocity"), slot_major("velocity_hat", when=_amsgrad)],
    "tf1": lambda c: [],
}

SPEC = AlgorithmSpec(
    name="adam",
    slots=("momentum", "velocity", "velocity_hat"),
    names=NAMES,
    layouts=LAYOUTS,
    # Every generation applies the "epsilon hat" form: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    update_rules={g: "adam" for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    class_names={"v1": ("Adam",), "v2": ("Adam",), "experimental": ("Adam",), "keras3": ("Adam",),
                 "tf1": ("AdamOptimizer",)},
    extras={"tf1": {"beta1_power": "beta1_power", "beta2_power": "beta2_power"}},
    shape_rule=_shape,
    slot_init={"momentum": 0.0, "velocity": 0.0, "velocity_hat": 0.0},
    nonnegative=("velocity", "velocity_hat"),
    tf1_suffix=lambda c: ("momentum", "velocity"),
    tracked={g: {"_momentums": "momentum", "_velocities": "velocity", "_velocity_hats": "velocity_hat"}
             for g in ("experimental", "keras3")},
)

ADAMW_SPEC = AlgorithmSpec(
    name="adamw",
    slots=SPEC.slots,
    names={g: NAMES[g] for g in ("experimental", "keras3")},
    layouts={g: LAYOUTS[g] for g in ("experimental", "keras3")},
    update_rules={"experimental": "adamw", "keras3": "adamw"},
    class_names={"experimental": ("AdamW",), "keras3": ("AdamW",)},
    slot_init=SPEC.slot_init,
    nonnegative=SPEC.nonnegative,
    tracked=SPEC.tracked,
)

LAZYADAM_SPEC = AlgorithmSpec(
    name="lazyadam",
    slots=("momentum", "velocity"),
    names={"v2": {"momentum": "m", "velocity": "v"}},
    layouts={"v2": lambda c: [slot_major("momentum", "velocity")]},
    update_rules={"v2": "lazy-adam"},
    class_names={"v2": ("LazyAdam", "Addons>LazyAdam")},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
)

LAMB_SPEC = AlgorithmSpec(
    name="lamb",
    slots=("momentum", "velocity"),
    names={"keras3": {"momentum": "momentum", "velocity": "velocity"}},
    layouts={"keras3": lambda c: [interleaved("momentum", "velocity")]},
    update_rules={"keras3": "lamb"},
    class_names={"keras3": ("Lamb",)},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
    tracked={"keras3": {"_momentums": "momentum", "_velocities": "velocity"}},
)
