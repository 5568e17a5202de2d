"""Adamax: Adam with the infinity norm.

Slots `momentum` and `norm` (the exponentially weighted infinity norm). v2 calls them
`m`, `v` (slot-major); the 2.11+ optimizer `m`, `u` (interleaved); Keras 3 `momentum`,
`norm` (interleaved); Keras v1 `ms`, `us` after iterations.
"""

from .spec import AlgorithmSpec, Extra, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="adamax",
    slots=("momentum", "norm"),
    names={"v1": {"momentum": "ms", "norm": "us"}, "v2": {"momentum": "m", "norm": "v"},
           "experimental": {"momentum": "m", "norm": "u"}, "keras3": {"momentum": "momentum", "norm": "norm"}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum", "norm")],
        "v2": lambda c: [slot_major("momentum", "norm")],
        "experimental": lambda c: [interleaved("momentum", "norm")],
        "keras3": lambda c: [interleaved("momentum", "norm")],
    },
    update_rules={g: "adamax" for g in ("v1", "v2", "experimental", "keras3")},
    class_names={"v1": ("Adamax",), "v2": ("Adamax",), "experimental": ("Adamax",), "keras3": ("Adamax",)},
    slot_init={"momentum": 0.0, "norm": 0.0},
    nonnegative=("norm",),
    tracked={g: {"_m": "momentum", "_u": "norm"} for g in ("experimental", "keras3")},
)
