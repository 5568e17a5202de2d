"""The Keras 2.11+ optimizer base (`tf.keras.optimizers.Optimizer`), on plain TensorFlow.

A subclass declares its slots in `SLOT_LISTS` ({slot name: attribute holding the per-variable
list}), creates them in `build` with `add_variable_from_reference`, and implements
`update_step(gradient, variable)` with the math of its algorithm module.

What this base reproduces, because checkpoints and resumed runs depend on it:
* `variables`: `iteration`, then the EMA averages (use_ema), then `build` order;
* the TF checkpoint object graph: an AutoTrackable whose `_variables` list is tracked first,
  so slots are keyed `optimizer/_variables/N`, the counter `optimizer/_iterations`, the
  rate `optimizer/_learning_rate` (a schedule: `optimizer/_current_learning_rate`, the rate
  of the last step); slot variables are not exposed to the checkpointer as slots;
* deferred restoration: a checkpoint restored before `build` binds to `_variables/N` as
  `build` appends them (the tracking list restores each on append);
* step order: current learning rate, build, clip (clipnorm, else global_clipnorm, else
  clipvalue), sum duplicate sparse indices, weight decay `var -= var * wd * lr`, the
  update, EMA, `iterations += 1`.

Two ways to run the update (`reference_ops`):
* default (`reference_ops=False`): each algorithm's fast path (`_fast_update_step`): a
  fused TensorFlow training kernel whose formula is the 2.11+ rule, or the algorithm's op
  sequence compiled with XLA (where XLA is available, CPU included; variables of fewer than
  `fast.XLA_MIN_ELEMENTS` elements run it uncompiled), or a shorter op sequence; sparse
  gradients are applied as the dense tensor they stand for where the 2.11+ rule touches
  every row anyway. Same rule, different rounding: over 20 steps model variables stay
  within 1e-6 of tf_keras' and slots within 1e-6 relative
  (tests/optimizers/test_experimental_parity.py), not bit for bit. Weight decay is applied
  per variable just before its own update (no update reads another variable, so the order
  is equivalent). The fast path is not used on a DTensor mesh, under a tf.distribute
  strategy, for variables that are not plain float32 / float64 resource variables, or when
  a subclass overrides `update_step` without `_fast_update_step`; those steps run the
  reference ops.
* `reference_ops=True`: tf_keras 2.21's exact op sequence (`update_step`), bit for bit.
  `get_config` carries `reference_ops` only when it is True, so default configs equal
  tf_keras'.
"""

import logging
import re

import numpy as np
import tensorflow as tf

from .. import schedules
from . import fast
from .._common import all_reduce_sum_gradients, filter_empty_gradients, gradients_of

log = logging.getLogger("keras_opt_migrate")

LEGACY_KWARGS = ("decay", "gradient_aggregator", "gradient_transformers")
LEGACY_CHECKPOINT_ERROR = (
    "You are trying to restore a checkpoint from a legacy TF-Keras optimizer into a v2.11+ Optimizer, which "
    "can cause errors. Please update the optimizer referenced in your code to be an instance of "
    "`tf.keras.optimizers.legacy.Optimizer`, e.g.: `tf.keras.optimizers.legacy.%s`; with keras_opt_migrate, "
    "use keras_opt_migrate.optimizers.v2.%s or convert the state with keras_opt_migrate.")


class CallableList(list):
    """`optimizer.variables` is both a list and (for old callers) a zero-argument callable."""

    def __call__(self):
        return self


def _can_jit():
    return bool(tf.config.list_physical_devices("GPU"))


class Optimizer(tf.__internal__.tracking.AutoTrackable):
    """Base class of the 2.11+ generation; see the module docstring."""

    SPEC = None
    GENERATION = "experimental"
    SLOT_LISTS = {}  # the generation's slot name -> attribute holding the per-variable list

    def __init__(self, name, weight_decay=0, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, jit_compile=True, mesh=None, reference_ops=False,
                 **kwargs):
        self._mesh = mesh
        self.reference_ops = bool(reference_ops)
        # XLA for the fast path wherever it runs, CPU included; independent of `jit_compile`,
        # which (as in tf_keras) means XLA for the reference ops on a GPU and reads False on CPU.
        self._xla_allowed = fast.xla_available()
        self.name = name
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        self.clipvalue = clipvalue
        self.use_ema = use_ema
        self.jit_compile = bool(jit_compile and _can_jit())
        if use_ema:
            if ema_momentum > 1 or ema_momentum < 0:
                raise ValueError("`ema_momentum` must be in the range [0, 1]. Received: ema_momentum=%s"
                                 % ema_momentum)
            if ema_overwrite_frequency and (not isinstance(ema_overwrite_frequency, int)
                                            or ema_overwrite_frequency < 1):
                raise ValueError("`ema_overwrite_frequency` must be an integer > 1 or None. Received: "
                                 "ema_overwrite_frequency=%s" % ema_overwrite_frequency)
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("At most one of `clipnorm` and `global_clipnorm` can be set. Received: clipnorm=%s, "
                             "global_clipnorm=%s." % (self.clipnorm, self.global_clipnorm))
        self._variables = []
        self._create_iteration_variable()
        kwargs.pop("is_legacy_optimizer", None)
        if kwargs.pop("lr", None):
            log.warning("`lr` is deprecated in the 2.11+ optimizer; use `learning_rate`.")
        for key in kwargs:
            if key in LEGACY_KWARGS:
                raise ValueError("%s is deprecated in the new TF-Keras optimizer, please check the docstring for "
                                 "valid arguments, or use the legacy optimizer (keras_opt_migrate.optimizers.v2)."
                                 % key)
            raise TypeError("%s is not a valid argument, kwargs should be empty for `%s`."
                            % (key, type(self).__name__))
        self._built_vars = self._no_dependency([])
        self._pending_state = None
        self._xla_update = None
        self._compiled = self._no_dependency({})

    # -- variables ----------------------------------------------------------------
    def _replicated(self, value, rank):
        return tf.experimental.dtensor.copy_to_mesh(value, tf.experimental.dtensor.Layout.replicated(
            self._mesh, rank=rank))

    def _create_iteration_variable(self):
        with tf.init_scope():
            if self._mesh is not None:
                self._iterations = tf.experimental.dtensor.DVariable(
                    self._replicated(tf.constant(0, dtype=tf.int64), 0), name="iteration")
            else:
                self._iterations = tf.Variable(0, name="iteration", dtype=tf.int64, trainable=False)
        self._variables.append(self._iterations)

    def _build_learning_rate(self, learning_rate):
        """The `_learning_rate` attribute: a float32 variable, or the schedule itself (then the
        rate of the current step lives in `_current_learning_rate`)."""
        with tf.init_scope():
            if schedules.is_schedule(learning_rate):
                current = tf.convert_to_tensor(learning_rate(self.iterations))
                if self._mesh is not None:
                    self._current_learning_rate = tf.experimental.dtensor.DVariable(
                        self._replicated(current, 0), name="learning_rate", dtype=tf.float32)
                else:
                    self._current_learning_rate = tf.Variable(current, name="current_learning_rate",
                                                              dtype=current.dtype, trainable=False)
                return learning_rate
            if self._mesh is not None:
                return tf.experimental.dtensor.DVariable(
                    self._replicated(tf.constant(learning_rate, dtype=tf.float32), 0), name="learning_rate",
                    dtype=tf.float32, trainable=False)
            return tf.Variable(learning_rate, name="learning_rate", dtype=tf.float32, trainable=False)

    @property
    def iterations(self):
        return self._iterations

    @iterations.setter
    def iterations(self, variable):
        if getattr(self, "_built", False):
            raise RuntimeError("Cannot set `iterations` to a new Variable after the Optimizer weights have been "
                               "created. Here it is attempting to set `iterations` to %s." % variable)
        self._iterations = variable

    @property
    def learning_rate(self):
        lr = getattr(self, "_learning_rate", None)
        if lr is None:
            raise ValueError("Missing learning rate, please set self.learning_rate at optimizer creation time.")
        return self._current_learning_rate if schedules.is_schedule(lr) else lr

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if schedules.is_schedule(learning_rate):
            self._learning_rate = learning_rate
            return
        if schedules.is_schedule(self._learning_rate):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                            "`learning_rate` constructor argument, hence its learning rate is not settable.")
        self._learning_rate.assign(learning_rate)

    @property
    def lr(self):
        return self.learning_rate

    @lr.setter
    def lr(self, learning_rate):
        self.learning_rate = learning_rate

    def _compute_current_learning_rate(self):
        if schedules.is_schedule(self._learning_rate):
            self._current_learning_rate.assign(self._learning_rate(self.iterations))

    def add_variable(self, shape, dtype=None, initializer="zeros", name=None):
        """A new optimizer variable, appended to `variables`."""
        if isinstance(initializer, str):
            initializer = {"zeros": tf.zeros, "ones": tf.ones}[initializer]
        variable = tf.Variable(initial_value=initializer(shape or [], dtype or tf.float32), name=name,
                               trainable=False)
        self._variables.append(variable)
        return variable

    def add_variable_from_reference(self, model_variable, variable_name, shape=None, initial_value=None):
        """A slot for `model_variable` named `{variable_name}/{model variable}`; zeros of its shape
        (or of `shape`) unless `initial_value`; on a DTensor mesh, with the variable's layout."""
        dtype = getattr(model_variable, "true_dtype", None) or model_variable.dtype
        if self._mesh is not None:
            if initial_value is None:
                initial_value = tf.zeros_like(model_variable)
            elif isinstance(initial_value, tf.Tensor):
                initial_value = self._replicated(initial_value, initial_value.shape.rank)
            variable = tf.experimental.dtensor.DVariable(initial_value=initial_value, name="%s/%s" % (
                variable_name, model_variable._shared_name), dtype=dtype, trainable=False)
        else:
            if initial_value is None:
                initial_value = tf.zeros(model_variable.shape if shape is None else shape, dtype=dtype)
            with tf.distribute.get_strategy().extended.colocate_vars_with(model_variable):
                variable = tf.Variable(initial_value=initial_value, trainable=False, dtype=dtype,
                                       name="%s/%s" % (variable_name, model_variable._shared_name))
        self._variables.append(variable)
        return variable

    def _var_key(self, variable):
        if hasattr(variable, "_distributed_container"):
            variable = variable._distributed_container()
        return variable._unique_id

    def build(self, var_list):
        """Create the optimizer's variables for `var_list` (once); attach any held state."""
        if getattr(self, "_built", False):
            return
        var_list = list(var_list)
        self._index_dict = {self._var_key(v): i for i, v in enumerate(var_list)}
        if self.use_ema:
            self._model_variables_moving_average = [
                self.add_variable_from_reference(v, "average", initial_value=v) for v in var_list]
        self._build_slots(var_list)
        self._built = True
        self._built_vars.extend(var_list)
        if self._pending_state is not None:
            from ..state_io import apply_pending_state
            apply_pending_state(self, var_list)

    def _build_slots(self, var_list):
        pass

    def _create_or_restore_slot_variable(self, **kwargs):
        raise ValueError(LEGACY_CHECKPOINT_ERROR % (type(self).__name__, type(self).__name__))

    @property
    def variables(self):
        return CallableList(self._variables)

    def set_weights(self, weights):
        """Assign arrays in `variables` order (the optimizer must be built)."""
        if not getattr(self, "_built", False):
            raise ValueError("You are calling `set_weights()` on an optimizer that has not yet been built. Please "
                             "call `optimizer.build(trainable_variables)` to create the optimizer weights before "
                             "calling `set_weights()`.")
        for variable, weight in zip(self._variables, weights):
            if tuple(variable.shape) != tuple(np.shape(weight)):
                raise ValueError("Optimizer variable %s has shape %s not compatible with provided weight shape %s."
                                 % (variable.name, tuple(variable.shape), tuple(np.shape(weight))))
        for variable, weight in zip(self._variables, weights):
            variable.assign(weight)

    def save_own_variables(self, store):
        for i, variable in enumerate(self.variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        if len(store.keys()) != len(self.variables):
            log.warning("Skipping variable loading for optimizer '%s', because it has %d variables whereas the "
                        "saved optimizer has %d variables.", self.name, len(self.variables), len(store.keys()))
            return
        for i, variable in enumerate(self.variables):
            variable.assign(store[str(i)])

    # -- weight decay -------------------------------------------------------------
    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exclude variables (or names matching any regex in `var_names`) from weight decay."""
        if getattr(self, "_built", False):
            raise ValueError("`exclude_from_weight_decay()` can only be configued before the optimizer is built.")
        self._exclude_from_weight_decay = [self._var_key(v) for v in var_list] if var_list else []
        self._exclude_from_weight_decay_names = list(var_names or [])

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_exclude_from_weight_decay", []):
            return False
        return not any(re.search(name, variable.name) for name in getattr(self, "_exclude_from_weight_decay_names",
                                                                            []))

    def _apply_weight_decay(self, variables):
        # tf_keras runs `var -= var * 0 * lr` too when weight_decay is 0: an exact no-op for
        # finite values, so it is skipped here.
        if not self.weight_decay:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                lr = tf.cast(self.learning_rate, variable.dtype)
                wd = tf.cast(self.weight_decay, variable.dtype)
                variable.assign_sub(variable * wd * lr)

    # -- steps --------------------------------------------------------------------
    def compute_gradients(self, loss, var_list, tape=None):
        grads, var_list = gradients_of(loss, var_list, tape)
        return list(zip(grads, var_list))

    def minimize(self, loss, var_list, tape=None):
        self.apply_gradients(self.compute_gradients(loss, var_list, tape))

    def aggregate_gradients(self, grads_and_vars):
        if self._mesh is not None:
            return grads_and_vars  # DTensor reduces replicated gradients in the backward pass
        return all_reduce_sum_gradients(grads_and_vars)

    def _clip_gradients(self, grads):
        if self.clipnorm and self.clipnorm > 0:
            return [None if g is None else tf.clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return tf.clip_by_global_norm(grads, self.global_clipnorm)[0]
        if self.clipvalue and self.clipvalue > 0:
            return [None if g is None else tf.clip_by_value(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    @staticmethod
    def _deduplicate_sparse_grad(grads):
        out = []
        for grad in grads:
            if isinstance(grad, tf.IndexedSlices):
                unique, positions = tf.unique(grad.indices)
                summed = tf.math.unsorted_segment_sum(grad.values, positions, tf.shape(unique)[0])
                grad = tf.IndexedSlices(summed, unique, grad.dense_shape)
            out.append(grad)
        return out

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        """Apply (gradient, variable) pairs; builds on first call. Returns the iterations variable."""
        if not kwargs.pop("experimental_aggregate_gradients", True):
            skip_gradients_aggregation = True
        if kwargs:
            raise TypeError("apply_gradients() got unexpected keyword arguments %s" % sorted(kwargs))
        grads_and_vars = list(grads_and_vars)
        if not skip_gradients_aggregation:
            grads_and_vars = self.aggregate_gradients(grads_and_vars)
        self._compute_current_learning_rate()
        if not grads_and_vars:
            return self._iterations
        with tf.name_scope(name or self.name or "optimizer"):
            with tf.init_scope():
                self.build([v for _, v in grads_and_vars])
            grads_and_vars = filter_empty_gradients(grads_and_vars)
            grads, variables = zip(*grads_and_vars)
            grads = self._deduplicate_sparse_grad(self._clip_gradients(grads))
            if self._fast_path_enabled():
                for grad, var in zip(grads, variables):
                    self._fast_step(grad, var)
            else:
                self._apply_weight_decay(variables)
                for grad, var in zip(grads, variables):
                    self._update_step(grad, var)
            if self.use_ema:
                self._update_model_variables_moving_average(variables)
                if self.ema_overwrite_frequency:
                    overwrite = (self.iterations + 1) % self.ema_overwrite_frequency == 0
                    tf.cond(tf.cast(overwrite, tf.bool),
                            true_fn=lambda: self._overwrite_model_variables_with_average_value(variables),
                            false_fn=lambda: None)
            iteration = self.iterations.assign_add(1)
            for variable in variables:
                if getattr(variable, "constraint", None) is not None:
                    variable.assign(variable.constraint(variable))
            return iteration

    def _check_known(self, variable):
        if self._var_key(variable) not in self._index_dict:
            raise KeyError("The optimizer cannot recognize variable %s. It was built on %d other variables; "
                           "call `optimizer.build(variables)` with the full list of trainable variables first."
                           % (variable.name, len(self._index_dict)))

    def _update_step(self, gradient, variable):
        if getattr(variable, "_unique_id", None) is None:
            return  # e.g. a DTensor packed variable seen while tracing
        self._check_known(variable)
        if self.jit_compile:
            if self._xla_update is None:
                self._xla_update = self._no_dependency(
                    tf.function(lambda g, v, key: self.update_step(g, v), jit_compile=True))
            return self._xla_update(gradient, variable, id(self._var_key(variable)))
        return self.update_step(gradient, variable)

    def update_step(self, gradient, variable):
        """One step of tf_keras' exact op sequence (the `reference_ops=True` path)."""
        raise NotImplementedError("`update_step` must be implemented by subclasses.")

    # -- the fast path --------------------------------------------------------------
    # A subclass with a fast path defines `_fast_update_step(gradient, variable, weight_decay)`:
    # a dense gradient of the variable's dtype; `weight_decay` (a tensor, or None when the
    # variable is not decayed) is applied by it before the update. FAST_SPARSE = False keeps
    # sparse gradients on the reference ops (e.g. Adagrad's reference touches only their rows).
    _fast_update_step = None
    FAST_SPARSE = True

    def _fast_path_enabled(self):
        if self.reference_ops or self._mesh is not None or self._fast_update_step is None:
            return False
        if tf.distribute.has_strategy():
            return False
        cls = type(self)
        fast_owner = next(k for k in cls.__mro__ if "_fast_update_step" in vars(k))
        step_owner = next(k for k in cls.__mro__ if "update_step" in vars(k))
        return issubclass(fast_owner, step_owner)  # update_step not overridden below the fast path

    def _xla(self, body, variable):
        """`body` compiled with XLA (once per optimizer and shape, see `fast.jit`), or as it is
        when XLA is not available or `variable` is small (`fast.XLA_MIN_ELEMENTS`)."""
        size = variable.shape.num_elements()
        if not self._xla_allowed or size is None or size < fast.XLA_MIN_ELEMENTS:
            return body
        compiled = self._compiled.get(body)
        if compiled is None:
            compiled = self._compiled[body] = fast.jit(body)
        return compiled

    @tf.autograph.experimental.do_not_convert
    def _fast_step(self, gradient, variable):
        if getattr(variable, "_unique_id", None) is None:
            return
        self._check_known(variable)
        sparse = isinstance(gradient, tf.IndexedSlices)
        if (not fast.is_plain_variable(variable) or gradient.dtype != variable.dtype
                or (sparse and (not self.FAST_SPARSE or gradient.dense_shape is None))):
            self._apply_weight_decay([variable])
            return self._update_step(gradient, variable)
        if sparse:
            gradient = fast.densify(gradient, variable)
        weight_decay = None
        if self.weight_decay and self._use_weight_decay(variable):
            weight_decay = tf.cast(self.weight_decay, variable.dtype)
        self._fast_update_step(gradient, variable, weight_decay)

    def _add_interleaved_slots(self, var_list, *slots):
        """For each variable in turn, one zero slot per name in `slots` (tf_keras' interleaved build order),
        kept in the per-variable lists `SLOT_LISTS` names."""
        lists = {slot: [] for slot in slots}
        for var in var_list:
            for slot in slots:
                lists[slot].append(self.add_variable_from_reference(var, slot))
        for slot, values in lists.items():
            setattr(self, self.SLOT_LISTS[slot], values)

    def _slot(self, attribute, variable):
        return getattr(self, attribute)[self._index_dict[self._var_key(variable)]]

    # -- EMA ----------------------------------------------------------------------
    def _update_model_variables_moving_average(self, var_list):
        for var in var_list:
            average = self._model_variables_moving_average[self._index_dict[self._var_key(var)]]
            average.assign(self.ema_momentum * average + (1 - self.ema_momentum) * var)

    def _overwrite_model_variables_with_average_value(self, var_list):
        for var in var_list:
            var.assign(self._model_variables_moving_average[self._index_dict[self._var_key(var)]])

    def finalize_variable_values(self, var_list):
        """With EMA, overwrite the model variables with their moving averages (end of training)."""
        if self.use_ema:
            self._overwrite_model_variables_with_average_value(var_list)

    # -- config -------------------------------------------------------------------
    def _serialize_hyperparameter(self, hyperparameter):
        if schedules.is_schedule(hyperparameter):
            return schedules.serialize(hyperparameter)
        if isinstance(hyperparameter, tf.Variable):
            return hyperparameter.numpy()
        if callable(hyperparameter):
            return hyperparameter()
        return hyperparameter

    def get_config(self):
        config = {"name": self.name, "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                  "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                  "ema_momentum": self.ema_momentum, "ema_overwrite_frequency": self.ema_overwrite_frequency,
                  "jit_compile": self.jit_compile, "is_legacy_optimizer": False}
        if self.reference_ops:  # only when set, so that a default config equals tf_keras'
            config["reference_ops"] = True
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)

    # -- state (schema) -----------------------------------------------------------
    def slot_variables(self):
        """[(model variable, {canonical slot: variable})] in build order (EMA averages as `average`)."""
        out = []
        for i, var in enumerate(self._built_vars):
            per = {}
            if self.use_ema:
                per["average"] = self._model_variables_moving_average[i]
            for own, attribute in self.SLOT_LISTS.items():
                slots = getattr(self, attribute, None)
                if slots and self._is_real_slot(own, var):
                    per[self.SPEC.canonical_slot(self.GENERATION, own) or own] = slots[i]
            out.append((var, per))
        return out

    def _is_real_slot(self, own, var):
        return True

    def extra_variables(self):
        return {}

    def to_state(self):
        from ..state_io import export_state
        return export_state(self)

    def _attach_pending_state(self, var_list=None):
        """Attach `_pending_state` now if the variables are known, else at `build`."""
        if getattr(self, "_built", False):
            from ..state_io import apply_pending_state
            apply_pending_state(self, list(var_list) if var_list is not None else list(self._built_vars))
        elif var_list is not None:
            with tf.name_scope(self.name):
                self.build(list(var_list))
