"""SGD with optional (Nesterov) momentum.

One slot, `momentum`: v2 calls it `momentum` and creates it only when momentum != 0; the
2.11+ optimizer calls it `m` and (tf_keras 2.21 `SGD.build`) creates it for every variable
even when momentum is 0; Keras 3 creates `momentum` only when momentum != 0; Keras v1
keeps an anonymous `moments` list, always. TF1 `GradientDescentOptimizer` keeps no slot.
"""

from .spec import AlgorithmSpec, Extra, slot_major


def _has_momentum(config):
    return bool(config.get("momentum"))


SPEC = AlgorithmSpec(
    name="sgd",
    slots=("momentum",),
    names={"v1": {"momentum": "moments"}, "v2": {"momentum": "momentum"},
           "experimental": {"momentum": "m"}, "keras3": {"momentum": "momentum"}, "tf1": {}},
    layouts={
        "v1": lambda c: [Extra("iterations", (), "int64"), slot_major("momentum")],
        "v2": lambda c: [slot_major("momentum", when=_has_momentum)],
        "experimental": lambda c: [slot_major("momentum")],
        "keras3": lambda c: [slot_major("momentum", when=_has_momentum)],
        "tf1": lambda c: [],
    },
    class_names={"v1": ("SGD",), "v2": ("SGD",), "experimental": ("SGD",), "keras3": ("SGD",),
                 "tf1": ("GradientDescentOptimizer",)},
    slot_init={"momentum": 0.0},
    tracked={"experimental": {"momentums": "momentum"}, "keras3": {"momentums": "momentum"}},
)
