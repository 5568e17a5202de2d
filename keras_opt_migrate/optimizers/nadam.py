"""Nadam: Adam with Nesterov momentum and a momentum schedule.

Slots `momentum`, `velocity`. The schedule's running product mu_1 * ... * mu_t is state
too, kept by every generation under its own name and place (canonical extra `u_product`):
Keras v1 `m_schedule` (position 1 of `weights`), v2 `momentum_cache` (position 1 of
`get_weights()`), the 2.11+ optimizer `_u_product` (TF checkpoints only, not in
`variables`, so its h5/.keras files lose it), Keras 3 `u_product` (last of `variables`).
"""

from .spec import AlgorithmSpec, Extra, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="nadam",
    slots=("momentum", "velocity"),
    names={"v1": {"momentum": "ms", "velocity": "vs"}, "v2": {"momentum": "m", "velocity": "v"},
           "experimental": {"momentum": "m", "velocity": "v"},
           "keras3": {"momentum": "momentum", "velocity": "velocity"}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), Extra("u_product"), slot_major("momentum", "velocity")],
        "v2": lambda c: [Extra("u_product"), slot_major("momentum", "velocity")],
        "experimental": lambda c: [interleaved("momentum", "velocity")],
        "keras3": lambda c: [interleaved("momentum", "velocity"), Extra("u_product")],
    },
    # Keras v1 and v2 use the momentum schedule mu_t = beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t))
    # (v2 also decays the learning rate by its `decay`, 0.004 by default); the 2.11+ optimizer and
    # Keras 3 use mu_t = beta_1 * (1 - 0.5 * 0.96 ** t).
    update_rules={"v1": "schedule-0.004", "v2": "schedule-0.004", "experimental": "schedule-0.96",
                  "keras3": "schedule-0.96"},
    rule_notes={"schedule-0.004": "momentum schedule beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t))",
                "schedule-0.96": "momentum schedule beta_1 * (1 - 0.5 * 0.96 ** t)"},
    class_names={"v1": ("Nadam",), "v2": ("Nadam",), "experimental": ("Nadam",), "keras3": ("Nadam",)},
    extras={"v1": {"m_schedule": "u_product"}, "v2": {"momentum_cache": "u_product"},
            "experimental": {"_u_product": "u_product"},
            # Keras 3 creates it unnamed: its path is `nadam/variable` (h5 `weight_names`).
            "keras3": {"u_product": "u_product", "variable": "u_product"}},
    slot_init={"momentum": 0.0, "velocity": 0.0},
    nonnegative=("velocity",),
    tracked={g: {"_momentums": "momentum", "_velocities": "velocity"} for g in ("experimental", "keras3")},
)
