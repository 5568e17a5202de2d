"""RMSprop (plain, with momentum, centered).

Slots `velocity` (mean square), `momentum` (only when momentum > 0), `average_gradient`
(only when centered). Slot-major in every Keras generation. v2 names them `rms`,
`momentum`, `mg`; Keras v1 keeps only `accumulators` (velocity) and no iterations, even
with `decay`, where its learning rate depends on the lost counter.
TF1 `RMSPropOptimizer` initialises `rms` to ONES (Keras: zeros), always keeps `momentum`,
and names per variable `<var>/RMSProp` (rms), then `mg` if centered, then `momentum`.
"""

from .spec import AlgorithmSpec, slot_major


def _momentum(config):
    return (config.get("momentum") or 0) > 0


def _centered(config):
    return bool(config.get("centered"))


SPEC = AlgorithmSpec(
    name="rmsprop",
    slots=("velocity", "momentum", "average_gradient"),
    names={"v1": {"velocity": "accumulators"},
           "v2": {"velocity": "rms", "momentum": "momentum", "average_gradient": "mg"},
           "experimental": {"velocity": "velocity", "momentum": "momentum", "average_gradient": "average_gradient"},
           "keras3": {"velocity": "velocity", "momentum": "momentum", "average_gradient": "average_gradient"},
           "tf1": {"velocity": "rms", "momentum": "momentum", "average_gradient": "mg"}},
    layouts={
        "v1": lambda c: [slot_major("velocity")],
        "v2": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                         slot_major("average_gradient", when=_centered)],
        "experimental": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                                   slot_major("average_gradient", when=_centered)],
        "keras3": lambda c: [slot_major("velocity"), slot_major("momentum", when=_momentum),
                             slot_major("average_gradient", when=_centered)],
        "tf1": lambda c: [],
    },
    # v2 runs ResourceApplyRMSProp (epsilon inside the sqrt) only with momentum or centered, and
    # otherwise divides by sqrt(ms) + eps, as Keras v1 does; 2.11+, Keras 3 and TF1 (which always
    # uses the momentum kernel) put epsilon inside.
    update_rules={"v1": "eps-outside",
                  "v2": lambda c: "eps-inside" if (_momentum(c) or _centered(c)) else "eps-outside",
                  "experimental": "eps-inside", "keras3": "eps-inside", "tf1": "eps-inside"},
    rule_notes={"eps-outside": "divides by sqrt(mean square) + epsilon",
                "eps-inside": "divides by sqrt(mean square + epsilon)"},
    class_names={"v1": ("RMSprop",), "v2": ("RMSprop",), "experimental": ("RMSprop",), "keras3": ("RMSprop",),
                 "tf1": ("RMSPropOptimizer",)},
    slot_init={"velocity": 0.0, "momentum": 0.0, "average_gradient": 0.0},
    nonnegative=("velocity",),
    tf1_suffix=lambda c: ("velocity", "average_gradient", "momentum") if _centered(c) else ("velocity", "momentum"),
    tracked={g: {"_velocities": "velocity", "_momentums": "momentum", "_average_gradients": "average_gradient"}
             for g in ("experimental", "keras3")},
)
