"""`TFOptimizer`: Keras' wrapper around a `tf.compat.v1.train` optimizer, with its state exposed.

The math is the wrapped TF1 optimizer's own (it runs eagerly); this class adds what Keras'
`optimizer_v1.TFOptimizer` could not do (its `weights` and `get_config` raise):

* the object graph Keras' wrapper has: the TF1 optimizer tracked as `optimizer`, the step
  counter as `global_step`, so `tf.train.Checkpoint(model=..., optimizer=ours)` writes the
  keys Keras did (`<var>/.OPTIMIZER_SLOT/optimizer/optimizer/m`, `optimizer/optimizer/beta1_power`,
  `optimizer/global_step`); checkpoint `ours.optimizer` for a bare TF1 layout;
* slots under both TF1 checkpoint styles: object-based slot names (`m`, `v`, `accum`, ...)
  and name-based keys (`<var>/Adam`, `<var>/Adam_1`, ...) through `namebased_variables()`,
  a `{key: variable}` dict that `tf.compat.v1.train.Saver(var_list=...)` saves and restores;
* non-slot variables (`beta1_power`, `beta2_power`) and `global_step`;
* `to_state()` / `from_state()` under canonical slot names, `iterations` from `global_step`
  or, when that is all a file has, from the beta powers.
"""

import inspect
import logging

import numpy as np
import tensorflow as tf

from ...errors import KerasOptMigrateError, MappingError, UnknownOptimizerError
from ...schema import OptimizerState, materialize
from .._common import assign_weight_list, gradients_of
from ..registry import spec_for_class
from . import state_io
from .attach import match_variables, variable_name

log = logging.getLogger("keras_opt_migrate")

TF1_CLASSES = ("GradientDescentOptimizer", "MomentumOptimizer", "AdamOptimizer", "AdagradOptimizer",
               "AdadeltaOptimizer", "RMSPropOptimizer", "FtrlOptimizer", "ProximalGradientDescentOptimizer",
               "ProximalAdagradOptimizer")
# Keras spellings of TF1 constructor arguments, for state written by another generation.
# (TF1 RMSProp's `decay` is Keras' `rho`; Keras' `decay` of the learning rate has no TF1 form.)
TF1_ALIASES = {"beta_1": "beta1", "beta_2": "beta2", "lr": "learning_rate", "nesterov": "use_nesterov"}
RMSPROP_ALIASES = {"rho": "decay"}
NON_SLOT = ("beta1_power", "beta2_power")


def _tf1_class(name):
    if name not in TF1_CLASSES:
        raise UnknownOptimizerError("%r is not a supported tf.compat.v1.train optimizer; expected one of: %s"
                                    % (name, ", ".join(TF1_CLASSES)))
    return getattr(tf.compat.v1.train, name)


def tf1_config(optimizer):
    """The constructor arguments of a live TF1 optimizer (they are kept as `_<argument>`)."""
    config = {}
    for arg in inspect.signature(type(optimizer).__init__).parameters:
        if arg == "self":
            continue
        if arg == "name":
            config[arg] = optimizer.get_name()
            continue
        attrs = ("_learning_rate", "_lr") if arg == "learning_rate" else ("_" + arg,)
        for attr in attrs:
            if hasattr(optimizer, attr):
                value = getattr(optimizer, attr)
                config[arg] = value.item() if isinstance(value, np.generic) else value
                break
    return config


class TFOptimizer(tf.__internal__.tracking.Trackable):
    """Eager Keras `TFOptimizer`; see the module docstring."""

    GENERATION = "tf1"

    def __init__(self, optimizer, iterations=None):
        if not isinstance(optimizer, tf.compat.v1.train.Optimizer):
            raise KerasOptMigrateError("TFOptimizer wraps a tf.compat.v1.train optimizer; received %r"
                                       % type(optimizer).__name__)
        class_name = type(optimizer).__name__
        _tf1_class(class_name)
        self.SPEC = spec_for_class(class_name, "tf1")
        self.optimizer = optimizer
        self._track_trackable(optimizer, name="optimizer")
        if iterations is None:
            iterations = tf.Variable(0, dtype="int64", name="TFOptimizer/iterations", trainable=False)
        self.iterations = iterations
        self._track_trackable(iterations, name="global_step")
        self._params = None
        self._pending_state = None
        self.restore_report = None

    # -- steps ---------------------------------------------------------------------
    def build(self, var_list):
        """Create the TF1 optimizer's slots and non-slot variables for `var_list` now."""
        var_list = list(var_list)
        with tf.init_scope():
            self.optimizer._create_slots(var_list)
        known = {id(v) for v in self._params or []}
        self._params = (self._params or []) + [v for v in var_list if id(v) not in known]
        if self._pending_state is not None:  # kept on failure: every later step is refused too
            self.restore_report = self._attach(self._pending_state, var_list, confirmed=False)
            self._pending_state = None

    def apply_gradients(self, grads_and_vars):
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        if self._params is None or self._pending_state is not None:
            self.build([v for _, v in grads_and_vars])
        self.optimizer.apply_gradients(grads_and_vars, global_step=self.iterations)

    def minimize(self, loss, var_list, grad_loss=None, tape=None):
        """`OptimizerV2.minimize`'s signature: a callable loss, or a tensor with its `tape`."""
        grads, var_list = gradients_of(loss, var_list, tape, grad_loss)
        self.apply_gradients(zip(grads, var_list))

    # -- slots and keys ------------------------------------------------------------
    def _tf1_layout_config(self):
        return {"centered": bool(getattr(self.optimizer, "_centered", False))}

    def _slot_order(self):
        """Canonical slots in TF1 creation order (= the name-based `_k` suffix order)."""
        return tuple(self.SPEC.tf1_namebased_suffixes(self._tf1_layout_config(), "-"))

    def slots(self, var):
        """{canonical slot: TF1 slot variable} of one model variable (empty before `build`)."""
        out = {}
        for canonical in self._slot_order():
            slot = self.optimizer.get_slot(var, self.SPEC.names["tf1"][canonical])
            if slot is not None:
                out[canonical] = slot
        return out

    def non_slot_variables(self):
        """{`beta1_power` / `beta2_power`: variable} (Adam only), as checkpointed."""
        names = {v.name.split(":")[0].split("/")[-1]: v for v in self.optimizer._non_slot_variables()}
        return {k: names[k] for k in NON_SLOT if k in names}

    def namebased_suffixes(self):
        """{canonical slot: name-based key suffix}: `Adam`, `Adam_1`, ... (Ftrl honours accum_name/linear_name)."""
        name = self.optimizer.get_name()
        out = self.SPEC.tf1_namebased_suffixes(self._tf1_layout_config(), name)
        if type(self.optimizer).__name__ == "FtrlOptimizer":
            accum, linear = getattr(self.optimizer, "_accum_name", None), getattr(self.optimizer, "_linear_name", None)
            if accum or linear:  # each slot is then named on its own, so no `_1` suffix
                out = {"accumulator": accum or name, "linear": linear or (name if accum else name + "_1")}
        return out

    def namebased_variables(self, var_list=None, names=None):
        """{name-based checkpoint key: variable} for the optimizer's state, as a TF1 Saver keys it.

        var_list: the model variables (default: those the optimizer was built with); names: their
        checkpoint names (default: the variables' names without `:0`). Includes `global_step`.
        """
        var_list = list(self._params if var_list is None else var_list)
        names = [variable_name(v) for v in var_list] if names is None else list(names)
        suffixes = self.namebased_suffixes()
        out = {}
        for name, var in zip(names, var_list):
            for canonical, slot in self.slots(var).items():
                out["%s/%s" % (name, suffixes[canonical])] = slot
        out.update(self.non_slot_variables())
        out["global_step"] = self.iterations
        return out

    def variables(self):
        """The TF1 optimizer's variables (sorted by name, as TF1 lists them), then `global_step`."""
        return list(self.optimizer.variables()) + [self.iterations]

    @property
    def weights(self):
        return self.variables()

    def get_weights(self):
        return [v.numpy() for v in self.variables()]

    def set_weights(self, weights):
        assign_weight_list(self.variables(), weights)

    # -- config --------------------------------------------------------------------
    def get_config(self):
        return {"optimizer": {"class_name": type(self.optimizer).__name__, "config": tf1_config(self.optimizer)}}

    @classmethod
    def from_config(cls, config):
        inner = config["optimizer"]
        return cls(_tf1_class(inner["class_name"])(**inner["config"]))

    # -- OptimizerState ------------------------------------------------------------
    def to_state(self):
        """The wrapped optimizer's state (generation `tf1`, canonical slot names, TF1 config names)."""
        params = self._params or []
        variables, warnings = state_io.variable_specs(params)
        suffixes = self.namebased_suffixes()
        slots, keys = {}, {}
        for spec, var in zip(variables, params):
            for canonical, slot in self.slots(var).items():
                slots.setdefault(spec.name, {})[canonical] = slot.numpy()
                keys["slots/%s/%s" % (spec.name, canonical)] = "%s/%s" % (spec.name, suffixes[canonical])
        extra = {k: v.numpy() for k, v in self.non_slot_variables().items()}
        keys.update({"extra/%s" % k: k for k in extra})
        keys["iterations"] = "global_step"
        return OptimizerState(
            optimizer=self.SPEC.name, generation=self.GENERATION, config=tf1_config(self.optimizer),
            iterations=int(self.iterations.numpy()), variables=variables, slots=slots, extra=extra,
            source={"format": "live", "class": "keras_opt_migrate.optimizers.v1.TFOptimizer",
                    "wrapped": type(self.optimizer).__name__, "keys": keys}, warnings=warnings).validate()

    @classmethod
    def from_state(cls, state, **overrides):
        """A TFOptimizer around a new TF1 optimizer configured from `state`; tensors restored once built.

        overrides: TF1 constructor arguments that replace the state's (e.g. `learning_rate=`).
        """
        from ..registry import get_spec
        spec = get_spec(state.optimizer)
        names = spec.class_names.get("tf1")
        if not names:
            raise UnknownOptimizerError("TF1 has no %r optimizer; expected one of the algorithms of: %s"
                                        % (state.optimizer, ", ".join(TF1_CLASSES)))
        tf1 = _tf1_class(names[0])
        accepted = set(inspect.signature(tf1.__init__).parameters) - {"self"}
        aliases = dict(TF1_ALIASES)
        if names[0] == "RMSPropOptimizer" and state.generation != "tf1":
            aliases.update(RMSPROP_ALIASES, decay=None)  # Keras' `decay` (of the lr) has no TF1 form
        args = {}
        for key, value in state.config.items():
            own = aliases.get(key, key)
            if own in accepted and own not in args and not (own == "name" and state.generation != "tf1"):
                args[own] = value
        if isinstance(args.get("learning_rate"), dict):
            raise KerasOptMigrateError("the state's learning rate is a serialized schedule; pass learning_rate=... "
                                       "to from_state")
        args.update(overrides)
        opt = cls(tf1(**args))
        opt.restore_state(state)
        return opt

    def restore_state(self, state, var_list=None):
        """Put `state` (same algorithm) into the wrapped optimizer, now if built, else at the first step.

        var_list: the model's trainable variables in the state's order; builds the slots now and
        confirms build order where names cannot decide. Returns the report dict once attached.
        """
        state_io.check_algorithm(self, state)
        if var_list is not None:
            self.build(var_list)
            self.restore_report = self._attach(state, list(var_list), confirmed=True)
            return self.restore_report
        if self._params is not None:
            self.restore_report = self._attach(state, self._params, confirmed=False)
            return self.restore_report
        self._pending_state = state
        return None

    def _attach(self, state, params, confirmed):
        names, method = match_variables(state, params, confirmed)
        problems, plan, warnings = [], [], []
        for name, var in zip(names, params):
            own = self.slots(var)
            theirs = state.slots.get(name, {})
            for canonical, slot in own.items():
                if canonical not in theirs:
                    problems.append("no %s for %s" % (canonical, name))
                elif tuple(np.shape(theirs[canonical])) != tuple(slot.shape):
                    problems.append("%s of %s has shape %s, the slot %s" % (
                        canonical, name, tuple(np.shape(theirs[canonical])), tuple(slot.shape)))
                else:
                    plan.append((slot, theirs[canonical]))
            for canonical in theirs:
                if canonical not in own:
                    problems.append("the state's %s of %s has no place in %s" % (
                        canonical, name, type(self.optimizer).__name__))
        iterations, how = state_io.derive_iterations(state)
        config = tf1_config(self.optimizer)
        for power, beta_key in zip(NON_SLOT, ("beta1", "beta2")):
            var = self.non_slot_variables().get(power)
            if var is None:
                continue
            if power in state.extra:
                plan.append((var, state.extra[power]))
            elif iterations is not None:
                # TF1 multiplies the power by beta after each step: beta ** (t + 1) after t steps.
                plan.append((var, np.float32(config[beta_key]) ** np.float32(iterations + 1)))
                warnings.append("%s derived from iterations=%d" % (power, iterations))
            else:
                problems.append("neither %s nor a step count is in the state" % power)
        if problems:
            raise MappingError("%d problem(s) restoring %s state (%s, %d variables) into TFOptimizer(%s): %s" % (
                len(problems), state.optimizer, state.generation, len(state.variables),
                type(self.optimizer).__name__, "; ".join(problems[:6])
                + (" (and %d more)" % (len(problems) - 6) if len(problems) > 6 else "")))
        if iterations is None:
            warnings.append("the state records no step count; global_step stays %d" % int(self.iterations.numpy()))
        rule = state_io.rule_warning(self.SPEC, state, self.GENERATION, config)
        if rule:
            warnings.append(rule)
        for var, value in plan:
            var.assign(np.asarray(materialize(value), dtype=var.dtype.as_numpy_dtype))
        if iterations is not None:
            self.iterations.assign(iterations)
        for w in warnings:
            log.warning("TFOptimizer.restore_state: %s", w)
        return {"method": method, "assigned": len(plan), "iterations": iterations, "iterations_from": how,
                "variables": dict(zip([variable_name(p) for p in params], names)), "warnings": warnings}
