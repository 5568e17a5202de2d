"""Lion (2.13+ and Keras 3). One slot, `momentum` (the 2.11+ optimizer calls it `m`)."""

from .spec import AlgorithmSpec, slot_major

SPEC = AlgorithmSpec(
    name="lion",
    slots=("momentum",),
    names={"experimental": {"momentum": "m"}, "keras3": {"momentum": "momentum"}},
    layouts={"experimental": lambda c: [slot_major("momentum")], "keras3": lambda c: [slot_major("momentum")]},
    update_rules={"experimental": "lion", "keras3": "lion"},
    class_names={"experimental": ("Lion",), "keras3": ("Lion",)},
    slot_init={"momentum": 0.0},
    # tf_keras Lion tracks `momentums` like SGD; Keras 3 Lion uses `_momentums`.
    tracked={"experimental": {"momentums": "momentum"}, "keras3": {"_momentums": "momentum"}},
)
