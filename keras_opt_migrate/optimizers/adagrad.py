"""Adagrad, and ProximalAdagrad (TF1), and tfrs ClippyAdagrad (2.11+ generation).

Slot `accumulator`, initialised to `initial_accumulator_value` (Keras default 0.1, TF1
default 0.1). Keras v1 keeps only the accumulators: no iterations counter at all.
TF1 name-based key: `<var>/Adagrad` (`<var>/ProximalAdagrad`).
ClippyAdagrad adds a scalar `clipping_factor` per variable when `export_clipping_factors`.
"""

from .spec import AlgorithmSpec, interleaved, slot_major

SPEC = AlgorithmSpec(
    name="adagrad",
    slots=("accumulator",),
    names={"v1": {"accumulator": "accumulators"}, "v2": {"accumulator": "accumulator"},
           "experimental": {"accumulator": "accumulator"}, "keras3": {"accumulator": "accumulator"},
           "tf1": {"accumulator": "accumulator"}},
    layouts={g: (lambda c: [slot_major("accumulator")]) for g in ("v1", "v2", "experimental", "keras3", "tf1")},
    # Keras v1 and v2 (ResourceApplyAdagradV2) divide by sqrt(acc) + eps; the 2.11+ optimizer and
    # Keras 3 by sqrt(acc + eps); TF1 AdagradOptimizer has no epsilon at all.
    update_rules={"v1": "eps-outside", "v2": "eps-outside", "experimental": "eps-inside",
                  "keras3": "eps-inside", "tf1": "no-eps"},
    rule_notes={"eps-outside": "divides by sqrt(accumulator) + epsilon",
                "eps-inside": "divides by sqrt(accumulator + epsilon)",
                "no-eps": "divides by sqrt(accumulator), without epsilon"},
    class_names={"v1": ("Adagrad",), "v2": ("Adagrad",), "experimental": ("Adagrad",), "keras3": ("Adagrad",),
                 "tf1": ("AdagradOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value"},
    nonnegative=("accumulator",),
    tracked={g: {"_accumulators": "accumulator"} for g in ("experimental", "keras3")},
)

PROXIMAL_ADAGRAD_SPEC = AlgorithmSpec(
    name="proximal_adagrad",
    slots=("accumulator",),
    names={"tf1": {"accumulator": "accumulator"}},
    layouts={"tf1": lambda c: []},
    class_names={"tf1": ("ProximalAdagradOptimizer",)},
    slot_init={"accumulator": "initial_accumulator_value"},
    nonnegative=("accumulator",),
)


def _clipping_shape(slot, var_shape, config, generation):
    return () if slot == "clipping_factor" else tuple(var_shape)


def _exports(config):
    return bool(config.get("export_clipping_factors"))


CLIPPYADAGRAD_SPEC = AlgorithmSpec(
    name="clippyadagrad",
    slots=("accumulator", "clipping_factor"),
    names={"experimental": {"accumulator": "accumulator", "clipping_factor": "clipping_factor"}},
    layouts={"experimental": lambda c: [interleaved("accumulator", "clipping_factor")] if _exports(c)
             else [slot_major("accumulator")]},
    class_names={"experimental": ("ClippyAdagrad", "Custom>ClippyAdagrad")},
    shape_rule=_clipping_shape,
    slot_init={"accumulator": "initial_accumulator_value", "clipping_factor": 1.0},
    nonnegative=("accumulator", "clipping_factor"),
    tracked={"experimental": {"_accumulators": "accumulator", "clipping_factors": "clipping_factor"}},
)
