"""FTRL-proximal.

Slots `accumulator` (initialised to `initial_accumulator_value`) and `linear`, per
variable in every generation (v2 creates both for one variable before the next, unlike
its other optimizers). TF1 names them `accum` / `linear` (`<var>/Ftrl`, `<var>/Ftrl_1`).
"""

from .spec import AlgorithmSpec, interleaved

SPEC = AlgorithmSpec(
    name="ftrl",
    slots=("accumulator", "linear"),
    names={"v2": {"accumulator": "accumulator", "linear": "linear"},
           "experimental": {"accumulator": "accumulator", "linear": "linear"},
           "keras3": {"accumulator": "accumulator", "linear": "linear"},
           "tf1": {"accumulator": "accum", "linear": "linear"}},
    layouts={g: (lambda c: [interleaved("accumulator", "linear")]) for g in ("v2", "experimental", "keras3")}
    | {"tf1": lambda c: []},
    update_rules={g: "ftrl" for g in ("v2", "experimental", "keras3", "tf1")},
    class_names={"v2": ("Ftrl",), "experimental": ("Ftrl",), "keras3": ("Ftrl",), "tf1": ("FtrlOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value", "linear": 0.0},
    nonnegative=("accumulator",),
    tf1_suffix=lambda c: ("accumulator", "linear"),
    tracked={g: {"_accumulators": "accumulator", "_linears": "linear"} for g in ("experimental", "keras3")},
)
