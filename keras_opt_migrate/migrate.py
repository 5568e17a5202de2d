"""Generation <-> generation conversion, through the schema and never pairwise.

`migrate(state, to)` returns the same training state as the target generation keeps it,
plus a `ConversionReport` that says, for every tensor and counter, whether it was mapped
as is, renamed, derived from other state, dropped or zero-initialised, and whether the
target's update rule continues the trajectory exactly, within float rounding, or
differently (and why). Anything that cannot be carried with certainty is an error unless
the caller asks for a partial conversion (`partial=True`).

Slots are already canonical in an `OptimizerState`, so most of a conversion is deciding
what the target keeps that the source did not (and the reverse). The knowledge about
each algorithm (slot names, orders, update rules) lives in its module under `optimizers/`.
"""

import dataclasses
import math
from typing import Any, List, Optional

import numpy as np

from .errors import MappingError, UnknownOptimizerError
from .formats.keras_common import LOSS_SCALE_DEFAULTS
from .formats.mapping import canonical_config
from .optimizers.registry import get_spec
from .optimizers.spec import GENERATIONS, positional_layout
from .schema import LazyTensor, OptimizerState, materialize

ASSUMED = "assumed-default"
ACTIONS = ("mapped", "renamed", "derived", "dropped", "zero-initialised", ASSUMED)
EXACT, FLOAT_TOLERANCE, DIFFERENT = "exact", "float-tolerance", "different"

# Algorithms a generation lacks, and what carries their state there (same slots).
SUBSTITUTES = {
    "lazyadam": ("adam", "LazyAdam's state is Adam's; with dense gradients the update is identical, with sparse "
                         "gradients Adam also decays the moments of rows absent from the batch"),
    "momentum": ("sgd", "TF1 Momentum accumulates accum = momentum * accum + g; Keras SGD keeps the velocity "
                        "v = momentum * v - lr * g, so v = -lr * accum with a constant learning rate"),
}
# Config keys that only mean something to some generations.
LR_DECAY_GENERATIONS = ("v1", "v2")
# The base-class hyperparameters each generation's optimizers accept (algorithm keys such as
# beta_1 or rho are carried as they are).
BASE_KEYS = {
    "v1": {"learning_rate", "decay", "clipnorm", "clipvalue"},
    "v2": {"name", "learning_rate", "decay", "clipnorm", "clipvalue", "global_clipnorm"},
    "experimental": {"name", "learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                     "ema_momentum", "ema_overwrite_frequency", "jit_compile", "is_legacy_optimizer",
                     "reference_ops"},  # reference_ops: our own 2.11+ optimizers' switch (tf_keras' exact ops)
    "keras3": {"name", "learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
               "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps"},
    "tf1": {"name", "learning_rate", "use_locking"},
}
# TF1 constructor arguments whose Keras name differs and that would otherwise be misread
# (TF1 RMSPropOptimizer's `decay` is Keras' rho, not a learning-rate decay).
TF1_HYPERPARAMETERS = {"rmsprop": {"decay": "rho"}}
# Algorithms whose update is non-linear in the gradient: for them, applying a sparse gradient
# with repeated ids summed first (Keras 2, TF1) or not (Keras 3 on TensorFlow) differs.
SQUARES_GRADIENTS = {"adam", "adamw", "lazyadam", "nadam", "adamax", "adagrad", "rmsprop", "adadelta", "ftrl",
                     "lamb", "lion", "adafactor", "clippyadagrad", "proximal_adagrad"}
# The hyperparameters each algorithm's constructor takes and their defaults, in the Keras
# generations (tf_keras legacy and 2.11+, Keras 3 agree unless GENERATION_DEFAULTS says
# otherwise); tests/test_defaults.py checks them against the real classes. Files that keep
# no config (TF checkpoints keep at most the learning rate and a few v2 hyperparameter
# variables) leave the rest to these defaults, and the report says so for each one.
REQUIRED = "required"  # the constructor has no default (TF1 learning rates, TF1 Momentum's momentum)
_ADAM = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
_FTRL = {"learning_rate": 0.001, "learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
         "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
         "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}
HYPERPARAMETER_DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": dict(_ADAM, amsgrad=False),
    "adamw": dict(_ADAM, amsgrad=False, weight_decay=0.004),
    "lazyadam": dict(_ADAM, amsgrad=False),
    "lamb": dict(_ADAM),
    "nadam": dict(_ADAM),
    "adamax": dict(_ADAM),
    "adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    "clippyadagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "variable_relative_threshold": 0.1,
                      "accumulator_relative_threshold": 0.0, "absolute_threshold": 1e-7, "epsilon": 1e-7,
                      "export_clipping_factors": False, "clip_accumulator_update": False,
                      "use_standard_accumulator_update": False},
    "adadelta": {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    "ftrl": _FTRL,
    "lion": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.99},
    "adafactor": {"learning_rate": 0.001, "beta_2_decay": -0.8, "epsilon_1": 1e-30, "epsilon_2": 1e-3,
                  "clip_threshold": 1.0, "relative_step": True},
    "muon": {"learning_rate": 0.001, "adam_beta_1": 0.9, "adam_beta_2": 0.999, "adam_weight_decay": 0.004,
             "epsilon": 1e-7, "exclude_layers": None, "exclude_embeddings": True, "muon_a": 3.4445,
             "muon_b": -4.775, "muon_c": 2.0315, "adam_lr_ratio": 1, "momentum": 0.95, "ns_steps": 5,
             "nesterov": True, "rms_rate": 0.2},
    "momentum": {"learning_rate": REQUIRED, "momentum": REQUIRED, "nesterov": False},
    "proximal_adagrad": {"learning_rate": REQUIRED, "initial_accumulator_value": 0.1,
                         "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0},
    "proximal_gradient_descent": {"learning_rate": REQUIRED, "l1_regularization_strength": 0.0,
                                  "l2_regularization_strength": 0.0},
}
# Where a generation's class differs from the Keras defaults above. ABSENT: that class takes no
# such argument (its update has no such term). Keras v1's epsilon None means the backend's 1e-7.
ABSENT = "absent"
GENERATION_DEFAULTS = {
    ("v1", "adam"): {"epsilon": None},
    ("v1", "nadam"): {"learning_rate": 0.002, "epsilon": None, "schedule_decay": 0.004},
    ("v1", "adamax"): {"learning_rate": 0.002, "epsilon": None},
    ("v1", "adagrad"): {"learning_rate": 0.01, "epsilon": None, "initial_accumulator_value": ABSENT},
    ("v1", "adadelta"): {"learning_rate": 1.0, "epsilon": None},
    ("v1", "rmsprop"): {"epsilon": None, "momentum": ABSENT, "centered": ABSENT},
    ("experimental", "lion"): {"learning_rate": 0.0001},
    ("tf1", "sgd"): {"learning_rate": REQUIRED, "momentum": ABSENT, "nesterov": ABSENT},
    ("tf1", "adam"): {"epsilon": 1e-8, "amsgrad": ABSENT},
    ("tf1", "adagrad"): {"learning_rate": REQUIRED, "epsilon": ABSENT},
    ("tf1", "adadelta"): {"epsilon": 1e-8},
    ("tf1", "rmsprop"): {"learning_rate": REQUIRED, "epsilon": 1e-10},
    ("tf1", "ftrl"): {"learning_rate": REQUIRED},
}
# Layout-deciding flags that the slots a file holds prove: (flag, slot, value when present, when absent).
# RMSprop's momentum slot proves momentum > 0 (v2, 2.11+ and Keras 3 create it only then), not its value.
FLAGS_FROM_SLOTS = {
    "adam": [("amsgrad", "velocity_hat", True, False)], "adamw": [("amsgrad", "velocity_hat", True, False)],
    "lazyadam": [("amsgrad", "velocity_hat", True, False)],
    "rmsprop": [("centered", "average_gradient", True, False), ("momentum", "momentum", REQUIRED, 0.0)],
    "clippyadagrad": [("export_clipping_factors", "clipping_factor", True, False)],
}
# Formats whose optimizer state keeps a constant learning rate as a variable (v2, 2.11+ and Keras 3
# layouts): when it is absent the run used a schedule, which these files do not store.
LR_VARIABLE_FORMATS = ("tf_checkpoint",)

# Loss-scale wrappers per generation, their config defaults (the same in Keras 2 and 3), and Keras 3
# LossScaleOptimizer's own variables besides its scale: (dtype, value it keeps) - never updated.
LOSS_SCALE_WRAPPERS = {"v2": "LossScaleOptimizer", "experimental": "LossScaleOptimizerV3",
                       "keras3": "LossScaleOptimizer"}
KERAS3_LSO_OWN = {"loss_scale_optimizer_iterations": (np.int64, 0),
                  "loss_scale_optimizer_learning_rate": (np.float32, 0.0)}

# Base keys whose non-default value changes the training trajectory when dropped.
TRAJECTORY_KEYS = {"weight_decay", "use_ema", "gradient_accumulation_steps", "loss_scale_factor", "clipnorm",
                   "clipvalue", "global_clipnorm"}


@dataclasses.dataclass
class ReportItem:
    action: str
    kind: str  # "slot", "extra", "iterations", "config"
    name: str
    variable: Optional[str] = None
    source: Optional[str] = None
    target: Optional[str] = None
    detail: str = ""
    value: Any = None  # the value an assumed-default hyperparameter was given

    def to_json(self):
        return dataclasses.asdict(self)

    def __str__(self):
        where = "%s/%s" % (self.variable, self.name) if self.variable else self.name
        rename = ""
        if self.source and self.target and self.source != self.target:
            rename = " (%s -> %s)" % (self.source, self.target)
        return "%-16s %-10s %s%s%s" % (self.action, self.kind, where, rename,
                                        ": " + self.detail if self.detail else "")


@dataclasses.dataclass
class ConversionReport:
    source_optimizer: str
    source_generation: str
    target_optimizer: str
    target_generation: str
    items: List[ReportItem] = dataclasses.field(default_factory=list)
    continuation: str = EXACT
    continuation_reason: str = ""
    partial: bool = False
    target_format: Optional[str] = None
    source_candidates: List[str] = dataclasses.field(default_factory=list)  # the file could not tell which
    candidates_note: str = ""

    def add(self, *args, **kwargs):
        self.items.append(ReportItem(*args, **kwargs))

    def assumed_defaults(self):
        """{hyperparameter: value} the source did not store and that was set to a default."""
        out = {}
        for item in self.items:
            if item.action == ASSUMED:
                out[item.name] = item.value
        return out

    def counts(self):
        out = {a: 0 for a in ACTIONS}
        for item in self.items:
            out[item.action] += 1
        return out

    def to_json(self):
        return {"source": {"optimizer": self.source_optimizer, "generation": self.source_generation,
                           "candidates": list(self.source_candidates), "candidates_note": self.candidates_note},
                "target": {"optimizer": self.target_optimizer, "generation": self.target_generation},
                "continuation": self.continuation, "continuation_reason": self.continuation_reason,
                "partial": self.partial, "target_format": self.target_format, "counts": self.counts(),
                "assumed_defaults": self.assumed_defaults(), "items": [i.to_json() for i in self.items]}

    def format_text(self):
        counts = self.counts()
        lines = ["%s %s -> %s %s: %s" % (self.source_generation, self.source_optimizer, self.target_generation,
                                         self.target_optimizer,
                                         ", ".join("%d %s" % (counts[a], a) for a in ACTIONS if counts[a]) or
                                         "nothing to carry"),
                 "continuation: %s%s" % (self.continuation,
                                         " (%s)" % self.continuation_reason if self.continuation_reason else "")]
        if self.candidates_note:
            lines.append("source algorithm: %s" % self.candidates_note)
        lines.extend("  " + str(item) for item in self.items)
        return "\n".join(lines)


class _Refusals:
    """Collects everything a strict conversion cannot do, to report all of it at once."""

    def __init__(self, partial):
        self.partial = partial
        self.problems = []

    def refuse(self, message):
        self.problems.append(message)

    def raise_if_any(self, state, to):
        if self.problems and not self.partial:
            raise MappingError(
                "%d part(s) of the %s %s state cannot be carried to %s with certainty: %s; pass partial=True "
                "(CLI --partial) to convert anyway and see what was zero-initialised or dropped"
                % (len(self.problems), state.generation, state.optimizer, to, "; ".join(self.problems)))


def target_algorithm(state, to, optimizer=None):
    """(target spec, note) for converting `state` to generation `to`."""
    spec = get_spec(optimizer or state.optimizer)
    source_name = get_spec(state.optimizer).name
    if optimizer and spec.name != source_name and SUBSTITUTES.get(source_name, (None,))[0] == spec.name \
            and to in spec.layouts:
        return spec, SUBSTITUTES[source_name][1]  # the caller named the substitute itself: same verdict
    if to in spec.layouts:
        return spec, None
    if spec.name in SUBSTITUTES and not optimizer:
        name, note = SUBSTITUTES[spec.name]
        if to in get_spec(name).layouts:
            return get_spec(name), note
    raise UnknownOptimizerError(
        "the %s generation has no %s optimizer; it exists in: %s. Pick another target generation, or name a "
        "target algorithm (optimizer=...)" % (to, spec.name, ", ".join(spec.generations)))


def migrate(state, to, *, optimizer=None, config=None, partial=False):
    """Convert `state` to generation `to`; returns (new OptimizerState, ConversionReport).

    optimizer: the target algorithm when it differs from the source's (e.g. `adamw` from
        `adam` with `config={"weight_decay": ...}`); by default the same algorithm, or its
        substitute where the target generation lacks it (LazyAdam -> Adam, TF1 Momentum -> SGD).
    config: hyperparameters to set on the target (they win over the source's).
    partial: carry what can be carried and zero-initialise / drop the rest, reporting it,
        instead of raising MappingError.
    A state whose file could not tell its algorithm (`state.candidates`) is converted for every
    candidate; the result names its algorithm, so this goes ahead only where all candidates
    become the same one (`api.convert` compares what the target format stores instead).
    """
    if to not in GENERATIONS:
        raise UnknownOptimizerError("unknown target generation %r; expected one of %s" % (to, ", ".join(GENERATIONS)))
    if state.ambiguous:  # the file could not tell the algorithm: go ahead only if that changes nothing
        from .candidates import MIGRATE_ADVICE, migrate_candidates, state_signature
        return migrate_candidates(state, to, state_signature, what="the converted state", advice=MIGRATE_ADVICE,
                                  optimizer=optimizer, config=config, partial=partial)
    source_spec = get_spec(state.optimizer)
    target_spec, substitute_note = target_algorithm(state, to, optimizer)
    report = ConversionReport(state.optimizer, state.generation, target_spec.name, to, partial=partial)
    refusals = _Refusals(partial)
    target_config = _convert_config(state, to, target_spec, dict(config or {}), report, refusals)
    iterations = _convert_iterations(state, target_spec, target_config, report, refusals)
    target = OptimizerState(
        optimizer=target_spec.name, generation=to, config=target_config, iterations=iterations,
        variables=[dataclasses.replace(v) for v in state.variables],
        source={"converted_from": {"optimizer": state.optimizer, "generation": state.generation,
                                   "format": state.source.get("format"), "path": state.source.get("path")}},
        warnings=list(state.warnings))
    _convert_slots(state, source_spec, target, target_spec, report, refusals)
    _convert_extras(state, target, target_spec, report, refusals)
    _convert_loss_scale(state, target, report)
    refusals.raise_if_any(state, to)
    for problem in refusals.problems:
        target.warnings.append("partial conversion: " + problem)
    _judge_continuation(state, source_spec, target, target_spec, substitute_note, report)
    if refusals.problems:  # partial: what could not be carried with certainty changes the trajectory
        reason = "partial conversion: %s" % "; ".join(refusals.problems[:3])
        if report.continuation == DIFFERENT:
            report.continuation_reason += "; " + reason
        else:
            report.continuation, report.continuation_reason = DIFFERENT, reason
    _flag_recomputed_u_product(state, report)
    _note_assumptions(report)
    if any(i.action == "zero-initialised" and i.name == "loss_scale" for i in report.items):
        note = "the loss scale restarts at initial_scale: the weights continue alike while no scaled gradient overflows"
        report.continuation_reason = "%s; %s" % (report.continuation_reason, note) if report.continuation_reason \
            else note
    return target, report


def _note_assumptions(report):
    """The verdict holds only if the run used the assumed defaults; a stand-in for an unknown value breaks it."""
    assumed = report.assumed_defaults()
    if not assumed:
        return
    stand_ins = [i.name for i in report.items if i.action == ASSUMED and "stands in" in i.detail]
    if stand_ins:
        reason = "%s unknown (a default stands in)" % ", ".join(stand_ins)
        if report.continuation == DIFFERENT:
            report.continuation_reason += "; " + reason
        else:
            report.continuation, report.continuation_reason = DIFFERENT, reason
        return
    note = "if the run used the defaults assumed for %s" % ", ".join(sorted(assumed))
    report.continuation_reason = "%s; %s" % (report.continuation_reason, note) if report.continuation_reason else note


def _flag_recomputed_u_product(state, report):
    """A 2.11+ Nadam's `_u_product` recomputed from the formula is not the one the run had.

    The tf_keras 2.11+ Nadam multiplies `_u_product` under a Python-side counter, so inside a
    compiled train step it is multiplied once per variable rather than once per step (observed:
    4.1e-05 after 3 steps where the formula gives 0.080). Files without `_u_product` (.h5,
    .keras) therefore cannot be continued exactly, whatever the target.
    """
    if state.optimizer != "nadam" or state.generation != "experimental" or "u_product" in state.extra:
        return
    reason = ("the 2.11+ Nadam's running _u_product is not in the source file and its real value drifts from the "
              "schedule formula (it is updated once per variable in compiled steps), so it cannot be recomputed")
    if report.continuation == DIFFERENT:
        report.continuation_reason += "; " + reason
    else:
        report.continuation, report.continuation_reason = DIFFERENT, reason


# -- config -------------------------------------------------------------------------------

def _schedule_is(lr, class_name):
    return isinstance(lr, dict) and lr.get("class_name", "").split(">")[-1] == class_name


def _convert_config(state, to, target_spec, overrides, report, refusals):
    config = canonical_config(state.config)
    for own, keras in TF1_HYPERPARAMETERS.get(state.optimizer, {}).items():
        if state.generation == "tf1" and own in config and keras not in config:
            config[keras] = config.pop(own)
            report.add("renamed", "config", keras, source=own, target=keras,
                       detail="TF1 %s calls it %r" % (state.optimizer, own))
    lr = config.get("learning_rate")
    if "learning_rate" in state.extra and not isinstance(lr, dict):
        current = float(materialize(state.extra["learning_rate"]))
        if lr is None or not math.isclose(current, float(lr), rel_tol=1e-6):
            report.add("derived", "config", "learning_rate", source="learning_rate variable", target="learning_rate",
                       detail="the learning-rate variable (%g) wins over the config (%s)" % (current, lr))
        config["learning_rate"] = current
    decay = config.get("decay") or 0.0
    if state.generation in LR_DECAY_GENERATIONS and to not in LR_DECAY_GENERATIONS:
        config.pop("decay", None)
        if decay:
            if isinstance(config.get("learning_rate"), dict):
                refusals.refuse("both a learning-rate schedule and decay=%g: %s has no way to express both" % (decay, to))
            else:
                config["learning_rate"] = {"class_name": "InverseTimeDecay", "config": {
                    "initial_learning_rate": config.get("learning_rate", 0.001), "decay_steps": 1,
                    "decay_rate": decay, "staircase": False}}
                report.add("derived", "config", "learning_rate", source="decay", target="learning_rate",
                           detail="decay=%g becomes InverseTimeDecay(decay_steps=1, decay_rate=%g): "
                                  "lr / (1 + decay * iterations), the same values" % (decay, decay))
    elif to in LR_DECAY_GENERATIONS and state.generation not in LR_DECAY_GENERATIONS:
        lr = config.get("learning_rate")
        if isinstance(lr, dict) and to == "v1":
            if _schedule_is(lr, "InverseTimeDecay") and lr["config"].get("decay_steps") == 1 and \
                    not lr["config"].get("staircase"):
                config["learning_rate"] = lr["config"]["initial_learning_rate"]
                config["decay"] = lr["config"]["decay_rate"]
                report.add("derived", "config", "decay", source="learning_rate", target="decay",
                           detail="InverseTimeDecay(decay_steps=1) is Keras v1's decay")
            else:
                refusals.refuse("Keras v1 optimizers take no learning-rate schedule (%s)" % lr.get("class_name"))
        config.setdefault("decay", 0.0)
    if "schedule_decay" in config and to not in LR_DECAY_GENERATIONS:
        # Keras v1 Nadam's momentum-schedule decay; the 2.11+ and Keras 3 Nadam fix it (and take no such key)
        report.add("dropped", "config", "schedule_decay",
                   detail="%s Nadam takes no schedule_decay (was %r)" % (to, config.pop("schedule_decay")))
    if to == "v1" and config.get("epsilon") is None and "epsilon" in config:
        config["epsilon"] = 1e-7
    all_base = set().union(*BASE_KEYS.values())
    for key in sorted(k for k in config if k in all_base and k not in BASE_KEYS[to]):
        value = config.pop(key)
        if key == "name" or value in (None, False, 0, 0.0) or (key == "ema_momentum" and not config.get("use_ema")):
            continue
        if key in TRAJECTORY_KEYS:
            refusals.refuse("%s=%r has no equivalent in %s" % (key, value, to))
        report.add("dropped", "config", key, detail="%s optimizers take no %s (was %r)" % (to, key, value))
    for key, value in overrides.items():
        if config.get(key) != value:
            report.add("derived", "config", key, detail="set by the caller: %r (was %r)" % (value, config.get(key)))
        config[key] = value
    _fill_defaults(state, to, target_spec, config, report, refusals)
    return config


def hyperparameter_defaults(algorithm, generation):
    """{key: default} of the hyperparameters `generation`'s `algorithm` class takes (REQUIRED: no default)."""
    out = dict(HYPERPARAMETER_DEFAULTS.get(algorithm, {}))
    out.update(GENERATION_DEFAULTS.get((generation, algorithm), {}))
    return {k: v for k, v in out.items() if not (isinstance(v, str) and v == ABSENT)}


def unstored_hyperparameters(state, algorithm, generation, known):
    """The entries of `known` (a real optimizer's `get_config()`) for the hyperparameters the
    `generation` `algorithm` takes and `state` does not hold: what a restore into that
    optimizer takes from it instead of assuming defaults."""
    config = canonical_config(state.config)
    if state.generation == "tf1":
        for own, keras in TF1_HYPERPARAMETERS.get(state.optimizer, {}).items():
            if own in config:
                config[keras] = config.pop(own)
    if "learning_rate" in state.extra:
        config["learning_rate"] = None
    return {k: known[k] for k in hyperparameter_defaults(algorithm, generation) if k in known and k not in config}


def _flags_from_slots(state):
    """{flag: (value, why)} for layout-deciding flags the slots the state holds prove."""
    if not state.slots or state.generation not in ("v2", "experimental", "keras3"):
        return {}
    held = set(state.slot_names())
    out = {}
    for flag, slot, present, absent in FLAGS_FROM_SLOTS.get(state.optimizer, ()):
        if slot in held and present == REQUIRED:
            out[flag] = (present, "the file holds %s slots, which the %s %s keeps only with %s > 0, but not the %s "
                                  "value" % (slot, state.generation, state.optimizer, flag, flag))
        elif slot in held:
            out[flag] = (present, "the file holds %s slots, which the %s %s keeps only with %s=%r"
                         % (slot, state.generation, state.optimizer, flag, present))
        else:
            out[flag] = (absent, "the file holds no %s slots, which the %s %s would keep with %s"
                         % (slot, state.generation, state.optimizer,
                            "%s > 0" % flag if present == REQUIRED else "%s=%r" % (flag, present)))
    return out


def _schedule_proven(state):
    """Why the source's learning rate must have been a schedule, or None.

    v2, 2.11+ and Keras 3 optimizers keep a constant learning rate as a checkpointed
    variable; a TF checkpoint of theirs without one was written with a schedule (the 2.11+
    optimizer then keeps the last step's rate as `_current_learning_rate`).
    """
    if state.source.get("format") not in LR_VARIABLE_FORMATS or state.generation not in ("v2", "experimental", "keras3"):
        return None
    if "learning_rate" in state.extra or "learning_rate" in state.config:
        return None
    why = "the checkpoint keeps no constant learning-rate variable, so the run used a learning-rate schedule, which " \
          "TF checkpoints do not store"
    if "current_learning_rate" in state.extra:
        why += " (it keeps the last step's rate, %g)" % float(materialize(state.extra["current_learning_rate"]))
    return why


def _fill_defaults(state, to, target_spec, config, report, refusals):
    """Give every hyperparameter the file does not store a value, and say which were assumed.

    Flags the slots prove (amsgrad from velocity_hat slots, ...) are derived. The rest take
    the source generation's default (what the run used unless its code said otherwise) and
    are reported as `assumed-default`. A key the source class takes without a default gets
    the target's default, reported as unknown (the continuation is then `different`); a
    default the file proves wrong (a schedule, RMSprop's momentum) is refused unless `partial`.
    """
    source = hyperparameter_defaults(state.optimizer, state.generation)
    target = hyperparameter_defaults(target_spec.name, to)
    proven = _flags_from_slots(state)
    hint = "pass config={'%s': ...} (CLI --config '{\"%s\": ...}')"
    for key, default in source.items():
        if key in config or key not in target:
            continue
        if key in proven:
            value, why = proven[key]
            if not (isinstance(value, str) and value == REQUIRED):
                config[key] = value
                report.add("derived", "config", key, detail="%r: %s" % (value, why))
                continue
            refusals.refuse("%s; %s" % (why, hint % (key, key)))
            default = why
        elif key == "learning_rate" and _schedule_proven(state):
            why = _schedule_proven(state)
            refusals.refuse("%s; %s with the schedule's config" % (why, hint % (key, key)))
            default = why
        elif isinstance(default, str) and default == REQUIRED:
            default = "the %s %s takes it without a default and the file does not store it" % (
                state.generation, state.optimizer)
        else:
            config[key] = default
            report.add(ASSUMED, "config", key, value=default,
                       detail="not in the source file; the %s %s default %r is assumed"
                              % (state.generation, state.optimizer, default))
            continue
        # unknown: the target's own default stands in (after a refusal, only with partial=True)
        value = target[key]
        if isinstance(value, str) and value == REQUIRED:
            continue
        config[key] = value
        report.add(ASSUMED, "config", key, value=value,
                   detail="unknown (%s); the %s default %r stands in" % (default, to, value))


# -- iterations ---------------------------------------------------------------------------

def _iterations_from_beta_power(state):
    for power, beta in (("beta1_power", "beta_1"), ("beta2_power", "beta_2")):
        if power in state.extra and isinstance(state.config.get(beta), (int, float)):
            p, b = float(materialize(state.extra[power])), float(state.config[beta])
            if 0 < p < 1 and 0 < b < 1:
                return int(round(math.log(p) / math.log(b))) - 1, power
    return None, None


def _needs_iterations(spec, config):
    """Whether the target update rule reads the step counter."""
    lr = config.get("learning_rate")
    return (spec.name in ("adam", "adamw", "lazyadam", "nadam", "adamax", "adafactor", "lamb")
            or isinstance(lr, dict) or bool(config.get("decay")) or bool(config.get("use_ema")))


def _convert_iterations(state, target_spec, target_config, report, refusals):
    if state.iterations is not None:
        report.add("mapped", "iterations", "iterations", detail=str(state.iterations))
        return int(state.iterations)
    derived, power = _iterations_from_beta_power(state)
    if derived is not None:
        report.add("derived", "iterations", "iterations", source=power,
                   detail="%d, from %s = beta ** (iterations + 1)" % (derived, power))
        return derived
    if _needs_iterations(target_spec, target_config):
        refusals.refuse("the file keeps no step counter and the target's update rule reads one")
        report.add("zero-initialised", "iterations", "iterations", detail="unknown in the source; set to 0")
    else:
        report.add("zero-initialised", "iterations", "iterations",
                   detail="the source keeps no counter; this update rule does not read it, so 0 is exact")
    return 0


# -- slots --------------------------------------------------------------------------------

def _expected_slots(spec, generation, config, variables):
    if generation == "tf1":
        # TF1 optimizers create their slots per variable; RMSProp's `mg` only when centered
        slots = spec.tf1_suffix(config) if spec.tf1_suffix else tuple(spec.names.get("tf1", {}))
        return {i: {s: tuple(v.shape) for s in slots} for i, v in enumerate(variables)}
    expected = {}
    for entry in positional_layout(spec, generation, config, [v.shape for v in variables],
                                   [v.dtype for v in variables]):
        if entry.kind == "slot":
            expected.setdefault(entry.var_index, {})[entry.name] = entry.shape
    return expected


def _own_name(spec, generation, slot):
    return spec.names.get(generation, {}).get(slot, slot)


def _is_placeholder(spec, state, slot, tensor):
    """Slots that carry no information: v1 Adam's (1,) vhats without amsgrad, rank<2 Adafactor r/c."""
    if spec.name == "adam" and state.generation == "v1" and slot == "velocity_hat" and \
            not state.config.get("amsgrad") and tuple(tensor.shape) == (1,):
        return True
    if spec.name == "adafactor" and slot in ("r", "c") and tuple(tensor.shape) == ():
        return True
    return False


def _convert_slots(state, source_spec, target, target_spec, report, refusals):
    expected = _expected_slots(target_spec, target.generation, target.config, target.variables)
    for i, var in enumerate(state.variables):
        have = dict(state.slots.get(var.name, {}))
        for slot, shape in expected.get(i, {}).items():
            src_name = _own_name(source_spec, state.generation, slot)
            dst_name = _own_name(target_spec, target.generation, slot)
            if slot in have and not _is_placeholder(source_spec, state, slot, have[slot]):
                tensor = have.pop(slot)
                if tuple(tensor.shape) != tuple(shape):
                    refusals.refuse("%s/%s has shape %s, %s needs %s" % (var.name, slot, tuple(tensor.shape),
                                                                         target.generation, tuple(shape)))
                    continue
                if source_spec.name == "momentum" and target_spec.name == "sgd":
                    tensor = _velocity_from_tf1_accum(state, tensor, var, report, refusals)
                else:
                    report.add("renamed" if src_name != dst_name else "mapped", "slot", slot, var.name,
                               src_name, dst_name)
                target.slots.setdefault(var.name, {})[slot] = tensor
                continue
            have.pop(slot, None)
            fill, detail, certain = _fill_missing(target_spec, target, slot, shape, var)
            if not certain:
                refusals.refuse("%s needs %s/%s, which the %s state does not have"
                                % (target.generation, var.name, slot, state.generation))
            report.add("zero-initialised", "slot", slot, var.name, None, dst_name, detail)
            target.slots.setdefault(var.name, {})[slot] = fill
        for slot, tensor in have.items():
            certain, detail = _drop_is_safe(source_spec, state, slot, tensor)
            if not certain:
                refusals.refuse("%s keeps no %s/%s: %s" % (target.generation, var.name, slot, detail))
            report.add("dropped", "slot", slot, var.name, _own_name(source_spec, state.generation, slot), None, detail)


def _velocity_from_tf1_accum(state, accum, var, report, refusals):
    lr = state.config.get("learning_rate")
    if not isinstance(lr, (int, float)):
        refusals.refuse("TF1 Momentum's accumulator becomes a velocity only with a constant learning rate")
        lr = 0.0
    velocity = LazyTensor.derived(accum, lambda value: (-np.asarray(lr, value.dtype) * value).astype(value.dtype))
    report.add("derived", "slot", "momentum", var.name, "momentum", "momentum",
               "velocity = -learning_rate * accumulator (learning_rate %g)" % lr)
    return velocity


def _fill_missing(spec, target, slot, shape, var):
    """(initial value, why, certain) for a slot the target keeps and the source does not."""
    dtype = np.dtype(var.dtype if var.dtype else "float32")
    # fills are LazyTensors, made when written, so a large state is never held whole
    if slot == "gradient_accumulator":
        return (LazyTensor.filled(shape, dtype, 0), "no partially accumulated gradient: the state is at an update "
                "boundary", True)
    if slot == "clipping_factor":
        return LazyTensor.filled(shape, dtype, 1), "ClippyAdagrad's exported clipping factor is output only", True
    unread = spec.unread.get(slot)
    why = unread(target.generation, target.config) if unread else None
    if why:
        return LazyTensor.filled(shape, dtype, 0), why + ", so 0 is exact", True
    if spec.name == "adafactor" and slot in ("r", "c") and tuple(shape) == ():
        return np.zeros(shape, np.int32 if target.generation == "keras3" else dtype), "placeholder", True
    if spec.name == "adam" and target.generation == "v1" and slot == "velocity_hat" and \
            not target.config.get("amsgrad"):
        return np.zeros(shape, dtype), "Keras v1 keeps a (1,) placeholder when amsgrad is off", True
    init = spec.slot_init.get(slot, 0.0)
    if isinstance(init, str):
        init = target.config.get(init, 0.1)
    return LazyTensor.filled(shape, dtype, init), "initial value %g: no such state in the source" % float(init), False


def _drop_is_safe(spec, state, slot, tensor):
    if _is_placeholder(spec, state, slot, tensor):
        return True, "placeholder without information"
    if slot == "clipping_factor":
        return True, "ClippyAdagrad's exported clipping factor is output only"
    if slot == "gradient_accumulator":
        if not np.any(materialize(tensor)):
            return True, "all zero: no partially accumulated gradient"
        return False, "holds a partially accumulated gradient"
    if slot == "average":
        return False, "the EMA of the weights would be lost (keep use_ema in the target config)"
    return False, "the target algorithm keeps no such slot"


# -- non-slot state -----------------------------------------------------------------------

def _u_product(rule, beta_1, iterations, schedule_decay=0.004):
    """Nadam's running product of momentum-schedule factors after `iterations` steps, in float32."""
    u = np.float32(1.0)
    for t in range(1, iterations + 1):
        power = np.float32(schedule_decay) * np.float32(t) if rule == "schedule-0.004" else np.float32(t)
        u = np.float32(u * np.float32(np.float32(beta_1) * (np.float32(1.0) - np.float32(0.5) *
                                                            np.power(np.float32(0.96), power, dtype=np.float32))))
    return np.asarray(u, np.float32)


def _beta_power(beta, iterations):
    p = np.float32(beta)
    for _ in range(iterations):
        p = np.float32(p * np.float32(beta))
    return np.asarray(p, np.float32)


def _convert_extras(state, target, target_spec, report, refusals):
    extras = dict(state.extra)
    # Nadam: the target's own schedule product, recomputed from the step count.
    if target_spec.name == "nadam" and target.generation in ("v1", "v2", "experimental", "keras3"):
        rule = target_spec.update_rule(target.generation, target.config)
        beta_1 = float(target.config.get("beta_1", 0.9))
        decay = 0.004
        if target.generation == "v2" and isinstance(target.config.get("decay"), (int, float)):
            decay = float(target.config["decay"]) or 0.004
        value = _u_product(rule, beta_1, target.iterations or 0, decay)
        source_value = extras.pop("u_product", None)
        same_rule = (get_spec(state.optimizer).update_rule(state.generation, state.config) == rule)
        if source_value is not None and same_rule:
            target.extra["u_product"] = source_value
            report.add("mapped", "extra", "u_product",
                       source=get_spec(state.optimizer).extra_key(state.generation, "u_product"),
                       target=target_spec.extra_key(target.generation, "u_product"))
        else:
            target.extra["u_product"] = value
            report.add("derived", "extra", "u_product",
                       source=None if source_value is None else "u_product",
                       target=target_spec.extra_key(target.generation, "u_product"),
                       detail="recomputed from iterations=%d with the target's schedule" % (target.iterations or 0))
    if target_spec.name == "adam" and target.generation == "tf1":
        for power, beta in (("beta1_power", "beta_1"), ("beta2_power", "beta_2")):
            default = 0.9 if beta == "beta_1" else 0.999
            value = _beta_power(float(target.config.get(beta, default)), target.iterations or 0)
            if power in extras and np.array_equal(materialize(extras[power]), value):
                report.add("mapped", "extra", power)
            else:
                report.add("derived", "extra", power, detail="%s ** (iterations + 1)" % beta)
            extras.pop(power, None)
            target.extra[power] = value
    for power in ("beta1_power", "beta2_power"):
        if power in extras:
            extras.pop(power)
            report.add("dropped", "extra", power, detail="carried as iterations=%s" % target.iterations)
    if "learning_rate" in extras:
        extras.pop("learning_rate")
        lr = target.config.get("learning_rate")
        if target.generation in ("keras3", "experimental") and not isinstance(lr, dict):
            target.extra["learning_rate"] = np.asarray(lr, np.float32)
            report.add("mapped", "extra", "learning_rate")
        else:
            report.add("dropped", "extra", "learning_rate", detail="kept in the config instead")
    elif target.generation == "keras3" and not isinstance(target.config.get("learning_rate"), dict):
        target.extra["learning_rate"] = np.asarray(target.config.get("learning_rate", 0.001), np.float32)
        report.add("derived", "extra", "learning_rate", detail="from the config")
    if "gradient_accumulation_iterations" in extras and not (
            target.generation == "keras3" and target.config.get("gradient_accumulation_steps")):
        extras.pop("gradient_accumulation_iterations")
        report.add("dropped", "extra", "gradient_accumulation_iterations",
                   detail="Keras 3's batch counter under gradient accumulation; the target counts updates "
                          "(iterations=%s)" % target.iterations)
    for name, value in extras.items():
        if name in KERAS3_LSO_OWN:
            continue  # _convert_loss_scale
        target.extra[name] = value
        report.add("mapped", "extra", name,
                   detail="carried; written where the target format has a place for it" if name.startswith("loss_scale")
                   else "")


# -- the loss-scale wrapper ---------------------------------------------------------------

def _wrapper_of(state):
    """(class name, config) of the state's loss-scale wrapper, or (None, {})."""
    wrapper = state.source.get("wrapper")
    if isinstance(wrapper, dict):
        name, config = wrapper.get("class_name"), dict(wrapper.get("config") or {})
    else:
        name, config = wrapper, {}
    if name in LOSS_SCALE_WRAPPERS.values() or "loss_scale" in state.extra:
        return name or "LossScaleOptimizer", config
    return None, {}


def _convert_loss_scale(state, target, report):
    """Carry a loss-scale wrapper: its class for the target generation, its config, Keras 3's own variables.

    Readers record the wrapper in `source["wrapper"]` and its state in `extra` (`loss_scale`,
    `loss_scale_good_steps`; Keras 3 also lists the wrapper's own, unused `iteration` and
    `learning_rate`). The target keeps the wrapper as `source["wrapper"]` = {class_name,
    config: {initial_scale, dynamic_growth_steps}}, which the writers lay out.
    """
    name, config = _wrapper_of(state)
    own = {k: target.extra.pop(k) for k in KERAS3_LSO_OWN if k in target.extra}
    own.update({k: state.extra[k] for k in KERAS3_LSO_OWN if k in state.extra})
    if name is None:
        return
    wrapper = LOSS_SCALE_WRAPPERS.get(target.generation)
    if wrapper is None:
        report.add("dropped", "wrapper", name, source=name,
                   detail="%s optimizers have no loss-scale wrapper" % target.generation)
        for key in own:
            report.add("dropped", "extra", key, detail="the Keras 3 LossScaleOptimizer's own unused variable")
        return
    settings = {}
    for key, default in LOSS_SCALE_DEFAULTS.items():
        if key in config:
            settings[key] = config[key]
        else:
            settings[key] = default
            report.add(ASSUMED, "config", "%s.%s" % (wrapper, key), value=default,
                       detail="the source does not store the wrapper's config; the default %r is assumed" % default)
    target.source["wrapper"] = {"class_name": wrapper, "config": settings}
    report.add("renamed" if wrapper != name else "mapped", "wrapper", wrapper, source=name, target=wrapper)
    if target.generation == "keras3":
        for key, (dtype, value) in KERAS3_LSO_OWN.items():
            if key in own:
                target.extra[key] = own[key]
                report.add("mapped", "extra", key)
            else:
                target.extra[key] = np.asarray(value, dtype)
                report.add("derived", "extra", key, detail="%r: the Keras 3 LossScaleOptimizer's own variable, "
                                                           "unused (its inner optimizer counts the steps)" % value)
        for key, dtype, value in (("loss_scale", np.float32, settings["initial_scale"]),
                                  ("loss_scale_good_steps", np.int64, 0)):
            if key not in target.extra:
                target.extra[key] = np.asarray(value, dtype)
                report.add("zero-initialised", "extra", key,
                           detail="%r: the source file does not store the loss scale (Keras 2 keeps it only in TF "
                                  "checkpoints), so it restarts as it would in the source's own version" % value)
    else:
        for key in own:
            report.add("dropped", "extra", key, detail="the Keras 3 LossScaleOptimizer's own unused variable")


# -- continuation -------------------------------------------------------------------------

KERAS3_SPARSE_CAVEAT = ("for variables with sparse gradients (embeddings) the continuation differs: Keras 3 applies an "
                        "IndexedSlices gradient without summing repeated ids first, the other generations sum them")


def _crosses_keras3_sparse_rule(state, target, target_spec):
    return (state.generation == "keras3") != (target.generation == "keras3") and target_spec.name in SQUARES_GRADIENTS


def _judge_continuation(state, source_spec, target, target_spec, substitute_note, report):
    source_rule = source_spec.update_rule(state.generation, state.config)
    target_rule = target_spec.update_rule(target.generation, target.config)
    if report.partial and any(i.action == "zero-initialised" and i.kind != "iterations" and "exact" not in i.detail
                              and "placeholder" not in i.detail and "boundary" not in i.detail
                              and "output only" not in i.detail for i in report.items):
        report.continuation, report.continuation_reason = DIFFERENT, "some state was zero-initialised"
    elif substitute_note:
        report.continuation, report.continuation_reason = FLOAT_TOLERANCE, substitute_note
        if _crosses_keras3_sparse_rule(state, target, target_spec):
            report.continuation_reason += "; " + KERAS3_SPARSE_CAVEAT
    elif source_spec.name != target_spec.name:
        report.continuation = DIFFERENT
        report.continuation_reason = "a different algorithm (%s -> %s)" % (source_spec.name, target_spec.name)
    elif state.generation == target.generation:
        report.continuation, report.continuation_reason = EXACT, "same generation and update rule"
    elif source_rule is None or target_rule is None:
        report.continuation = DIFFERENT
        report.continuation_reason = "no record that %s and %s %s update alike" % (
            state.generation, target.generation, target_spec.name)
    elif source_rule == target_rule:
        report.continuation = FLOAT_TOLERANCE
        report.continuation_reason = "same update rule; the generations' kernels may round differently"
        if _crosses_keras3_sparse_rule(state, target, target_spec):
            report.continuation_reason += "; " + KERAS3_SPARSE_CAVEAT
    else:
        notes = target_spec.rule_notes
        report.continuation = DIFFERENT
        report.continuation_reason = "%s %s %s; %s %s" % (
            state.generation, source_spec.name, notes.get(source_rule, source_rule), target.generation,
            notes.get(target_rule, target_rule))
