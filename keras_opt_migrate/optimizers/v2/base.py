"""The OptimizerV2 base class (`tf.keras.optimizers.legacy.Optimizer`), on plain TensorFlow.

What a subclass provides: its hyperparameters through `_set_hyper`, its slots in
`_create_slots` (creation order is the `get_weights()` order), per-step coefficients in
`_prepare_local`, and `_resource_apply_dense` / `_resource_apply_sparse` that call the math
in the algorithm module (`..adam`, `..sgd`, ...).

What this base reproduces, because checkpoints and resumed runs depend on it:
* `get_weights()` order: `iter`, then slots in creation order (plus Nadam's momentum cache);
* the TF checkpoint object graph: `iter` and every float hyperparameter are tracked
  variables (`optimizer/iter`, `optimizer/learning_rate`, ...), slots are exposed through
  `get_slot_names` / `get_slot`, so the checkpointer writes `<var>/.OPTIMIZER_SLOT/optimizer/<slot>`;
* deferred slot restoration: a checkpoint restored before a slot exists is queued in
  `_deferred_slot_restorations` and applied by `add_slot`; a slot whose variable already
  exists is created at restore time from the checkpointed value;
* hyperparameters as attributes (`opt.learning_rate = 0.05` takes effect on the next
  step), `lr` alias, inverse-time `decay`, schedules and zero-argument callables;
* gradient processing order: aggregation, `clipvalue`, `clipnorm`, `global_clipnorm`,
  then `gradient_transformers`.
"""

import functools

import numpy as np
import tensorflow as tf

from ...errors import KerasOptMigrateError
from .. import schedules
from .._common import (all_reduce_sum_gradients, deduplicate_indexed_slices, filter_empty_gradients, gradients_of,
                       to_snake_case)

ALLOWED_KWARGS = ("clipnorm", "clipvalue", "lr", "decay", "global_clipnorm")
_CKPT_INITIAL_VALUE = tf.__internal__.tracking.CheckpointInitialValueCallable
VALID_DTYPES = frozenset([tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.complex64, tf.complex128])


def _var_key(var):
    """Identity of a model variable (the distributed container's, under a strategy)."""
    if hasattr(var, "_distributed_container"):
        var = var._distributed_container()
    if getattr(var, "_in_graph_mode", False):
        return var._shared_name
    return var._unique_id


def _initial_value(initializer, shape, dtype):
    """A tf.Variable initial value from 'zeros'/'ones', a callable(shape, dtype) or a value."""
    if isinstance(initializer, str):
        fill = {"zeros": tf.zeros, "ones": tf.ones}.get(initializer.lower())
        if fill is None:
            raise KerasOptMigrateError("unknown initializer %r; expected 'zeros', 'ones' or a callable" % initializer)
        return functools.partial(fill, shape, dtype=dtype)
    if callable(initializer):
        return functools.partial(initializer, shape, dtype=dtype)
    return initializer


def _make_variable(name, shape=None, dtype=None, initializer=None, trainable=False,
                   aggregation=tf.VariableAggregation.NONE):
    """Getter for `_add_variable_with_custom_getter`: a plain value keeps its own dtype."""
    if initializer is not None and not callable(initializer) and not isinstance(initializer, str):
        return tf.Variable(initializer, name=name, trainable=trainable, aggregation=aggregation)
    return tf.Variable(_initial_value(initializer, shape, dtype), name=name, dtype=dtype, trainable=trainable,
                       aggregation=aggregation)


def _scope_only_in_graph(name):
    """Name scope inside tf.function / graphs only: eager name scopes cost time and name nothing."""
    if not tf.executing_eagerly():
        return tf.name_scope(name)
    return _NULL_CONTEXT


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL_CONTEXT = _NullContext()


class OptimizerV2(tf.__internal__.tracking.Trackable):
    """Base class of the v2 generation; see the module docstring."""

    SPEC = None  # the algorithm's AlgorithmSpec; set by each subclass
    GENERATION = "v2"
    _HAS_AGGREGATE_GRAD = True

    def __init__(self, name, gradient_aggregator=None, gradient_transformers=None, **kwargs):
        for key, value in kwargs.items():
            if key not in ALLOWED_KWARGS:
                raise TypeError("Unexpected keyword argument passed to optimizer: %s. Allowed kwargs are %s."
                                % (key, set(ALLOWED_KWARGS)))
            if value is not None and not callable(value) and not tf.is_tensor(value) and value < 0:
                raise ValueError("Expected %s >= 0, received: %s" % (key, value))
        self._use_locking = True
        self._name = name or to_snake_case(type(self).__name__)
        self._hyper = {}
        self._slots = {}
        self._slot_names = []
        self._slot_owners = {}  # var key -> model variable, in slot-creation order
        self._weights = []
        self._iterations = None
        self._deferred_slot_restorations = {}
        self._pending_state = None
        decay = kwargs.pop("decay", 0.0)
        if decay < 0.0:
            raise ValueError("decay cannot be less than 0. Received: decay=%s." % decay)
        self._initial_decay = decay
        self._hypers_created = False
        self._distribution_strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        self.gradient_aggregator = gradient_aggregator or all_reduce_sum_gradients
        self.gradient_transformers = list(gradient_transformers or [])
        self.clipnorm = kwargs.pop("clipnorm", None)
        self.global_clipnorm = kwargs.pop("global_clipnorm", None)
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("Cannot accept both `clipnorm` and `global_clipnorm`. Received: `clipnorm`=%s, "
                             "`global_clipnorm`=%s." % (self.clipnorm, self.global_clipnorm))
        self.clipvalue = kwargs.pop("clipvalue", None)

    # -- clipping -----------------------------------------------------------------
    def _check_no_transformers(self, what, value):
        if value is not None and self.gradient_transformers:
            raise ValueError("`%s` cannot be set when `gradient_transformers` is set. Instead, use the "
                             "`gradient_transformers` to specify clipping. Received: val=%s." % (what, value))

    @property
    def clipnorm(self):
        return self._clipnorm

    @clipnorm.setter
    def clipnorm(self, value):
        self._check_no_transformers("clipnorm", value)
        self._clipnorm = value

    @property
    def global_clipnorm(self):
        return self._global_clipnorm

    @global_clipnorm.setter
    def global_clipnorm(self, value):
        self._check_no_transformers("global_clipnorm", value)
        self._global_clipnorm = value

    @property
    def clipvalue(self):
        return self._clipvalue

    @clipvalue.setter
    def clipvalue(self, value):
        self._check_no_transformers("clipvalue", value)
        self._clipvalue = value

    def _transform_gradients(self, grads_and_vars):
        if self._clipvalue is not None:
            grads_and_vars = [(tf.clip_by_value(g, -self._clipvalue, self._clipvalue), v) for g, v in grads_and_vars]
        if self._clipnorm is not None:
            grads_and_vars = [(tf.clip_by_norm(g, self._clipnorm), v) for g, v in grads_and_vars]
        if self._global_clipnorm is not None:
            grads, variables = zip(*grads_and_vars)
            grads, _ = tf.clip_by_global_norm(grads, self._global_clipnorm)
            grads_and_vars = list(zip(grads, variables))
        for fn in self.gradient_transformers:
            grads_and_vars = fn(grads_and_vars)
        return grads_and_vars

    # -- gradients ----------------------------------------------------------------
    def minimize(self, loss, var_list, grad_loss=None, name=None, tape=None):
        """Compute gradients of `loss` (a tensor with `tape`, or a callable) and apply them."""
        grads_and_vars = self._compute_gradients(loss, var_list=var_list, grad_loss=grad_loss, tape=tape)
        return self.apply_gradients(grads_and_vars, name=name)

    def _compute_gradients(self, loss, var_list, grad_loss=None, tape=None):
        grads, var_list = gradients_of(loss, var_list, tape, grad_loss, scope=self._name + "/gradients")
        grads_and_vars = list(zip(grads, var_list))
        self._assert_valid_dtypes([v for g, v in grads_and_vars if g is not None and v.dtype != tf.resource])
        return grads_and_vars

    def get_gradients(self, loss, params):
        """Symbolic gradients of `loss` (graph mode, as Keras' `get_updates` path uses)."""
        params = tf.nest.flatten(params)
        grads = tf.compat.v1.gradients(loss, params)
        for grad, param in zip(grads, params):
            if grad is None:
                raise ValueError("Variable %s has `None` for gradient. Please make sure that all of your ops have "
                                 "a gradient defined (i.e. are differentiable)." % param)
        return grads

    def get_updates(self, loss, params):
        grads = self.get_gradients(loss, params)
        return [self.apply_gradients(list(zip(grads, params)))]

    def _assert_valid_dtypes(self, tensors):
        for t in tensors:
            if t.dtype.base_dtype not in VALID_DTYPES:
                raise ValueError("Invalid type %s for %s, expected: %s." % (t.dtype, t.name, sorted(
                    d.name for d in VALID_DTYPES)))

    def apply_gradients(self, grads_and_vars, name=None, experimental_aggregate_gradients=True):
        """Apply (gradient, variable) pairs; dense tensors or `tf.IndexedSlices`. Returns the step op."""
        grads_and_vars = filter_empty_gradients(grads_and_vars)
        var_list = [v for _, v in grads_and_vars]
        with tf.name_scope(self._name):
            with tf.init_scope():
                self._create_all_weights(var_list)
            if not grads_and_vars:
                return tf.no_op()
            apply_state = self._prepare(var_list)
            if experimental_aggregate_gradients:
                grads_and_vars = self.gradient_aggregator(grads_and_vars)
            grads_and_vars = self._transform_gradients(grads_and_vars)
            return self._distributed_apply(grads_and_vars, apply_state, name)

    def _distributed_apply(self, grads_and_vars, apply_state, name):
        update_ops = []
        with _scope_only_in_graph(name or self._name):
            for grad, var in grads_and_vars:
                with _scope_only_in_graph("update"):
                    update_ops.append(self._apply_one(var, grad, apply_state))
            if not tf.executing_eagerly():
                with tf.control_dependencies([tf.group(update_ops)]):
                    return self.iterations.assign_add(1, read_value=False)
            return self.iterations.assign_add(1)

    def _apply_one(self, var, grad, apply_state):
        if isinstance(grad, tf.IndexedSlices):
            if var.constraint is not None:
                raise RuntimeError("Cannot use a constraint function on a sparse variable. Received: grad=%s, "
                                   "var.constraint=%s." % (grad, var.constraint))
            return self._resource_apply_sparse_duplicate_indices(grad.values, var, grad.indices,
                                                                 apply_state=apply_state)
        update_op = self._resource_apply_dense(grad, var, apply_state=apply_state)
        if var.constraint is not None:
            with tf.control_dependencies([update_op]):
                return var.assign(var.constraint(var))
        return update_op

    def _resource_apply_dense(self, grad, var, apply_state=None):
        raise NotImplementedError("`_resource_apply_dense` must be implemented in subclasses.")

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        raise NotImplementedError("`_resource_apply_sparse` must be implemented in subclasses.")

    def _resource_apply_sparse_duplicate_indices(self, grad, var, indices, apply_state=None):
        summed, unique = deduplicate_indexed_slices(grad, indices)
        return self._resource_apply_sparse(summed, var, unique, apply_state=apply_state)

    def _resource_scatter_add(self, x, i, v):
        with tf.control_dependencies([tf.raw_ops.ResourceScatterAdd(resource=x.handle, indices=i, updates=v)]):
            return x.value()

    def _resource_scatter_update(self, x, i, v):
        with tf.control_dependencies([tf.raw_ops.ResourceScatterUpdate(resource=x.handle, indices=i, updates=v)]):
            return x.value()

    # -- coefficients -------------------------------------------------------------
    def _prepare(self, var_list):
        keys = {(v.device, v.dtype.base_dtype) for v in var_list}
        apply_state = {}
        for device, dtype in keys:
            apply_state[(device, dtype)] = {}
            with tf.device(device):
                self._prepare_local(device, dtype, apply_state)
        return apply_state

    def _prepare_local(self, var_device, var_dtype, apply_state):
        if "learning_rate" in self._hyper:
            apply_state[(var_device, var_dtype)]["lr_t"] = tf.identity(self._decayed_lr(var_dtype))

    def _coefficients(self, var, apply_state):
        key = (var.device, var.dtype.base_dtype)
        found = (apply_state or {}).get(key)
        if found:
            return found
        fallback = {key: {}}
        self._prepare_local(key[0], key[1], fallback)
        return fallback[key]

    def _decayed_lr(self, var_dtype):
        """The learning rate of this step: schedule at `iterations`, then inverse-time `decay`."""
        lr_t = self._get_hyper("learning_rate", var_dtype)
        if schedules.is_schedule(lr_t):
            lr_t = tf.cast(lr_t(tf.cast(self.iterations, var_dtype)), var_dtype)
        if self._initial_decay > 0.0:
            local_step = tf.cast(self.iterations, var_dtype)
            lr_t = lr_t / (1.0 + tf.cast(self._initial_decay, var_dtype) * local_step)
        return lr_t

    # -- hyperparameters ----------------------------------------------------------
    def _set_hyper(self, name, value):
        if isinstance(value, tf.__internal__.tracking.Trackable):
            self._track_trackable(value, name, overwrite=True)
        if name not in self._hyper:
            self._hyper[name] = value
            return
        previous = self._hyper[name]
        if (callable(previous) or isinstance(previous, (tf.Tensor, int, float)) or schedules.is_schedule(previous)
                or schedules.is_schedule(value)):
            self._hyper[name] = value
        else:
            previous.assign(value)

    def _get_hyper(self, name, dtype=None):
        if not self._hypers_created:
            self._create_hypers()
        value = self._hyper[name]
        if schedules.is_schedule(value):
            return value
        if callable(value):
            value = value()
        return tf.cast(value, dtype) if dtype else value

    def _create_hypers(self):
        if self._hypers_created:
            return
        for name, value in sorted(self._hyper.items()):
            if isinstance(value, (tf.Tensor, tf.Variable)) or callable(value):
                continue
            self._hyper[name] = self.add_weight(name, shape=[], initializer=value,
                                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._hypers_created = True

    def _serialize_hyperparameter(self, name):
        value = self._hyper[name]
        if schedules.is_schedule(value):
            return schedules.serialize(value)
        if callable(value):
            return value()
        if tf.is_tensor(value):
            return value.numpy()
        return value

    def __getattr__(self, name):
        # Only called when normal lookup fails: hyperparameters read as attributes.
        if name.startswith("__") or name == "_hyper":
            raise AttributeError(name)
        hyper = self.__dict__.get("_hyper")
        if hyper is not None:
            key = "learning_rate" if name == "lr" else name
            if key in hyper:
                return self._get_hyper(key)
        raise AttributeError("%r object has no attribute %r" % (type(self).__name__, name))

    def __setattr__(self, name, value):
        if name == "lr":
            name = "learning_rate"
        if "_hyper" in self.__dict__ and name in self._hyper:
            self._set_hyper(name, value)
        else:
            super().__setattr__(name, value)

    def __dir__(self):
        result = set(super().__dir__()) | set(self.__dict__.get("_hyper", {}))
        if "learning_rate" in self.__dict__.get("_hyper", {}):
            result.add("lr")
        return sorted(result)

    # -- weights ------------------------------------------------------------------
    def add_weight(self, name, shape, dtype=None, initializer="zeros", trainable=False,
                   aggregation=tf.VariableAggregation.NONE):
        """A tracked optimizer variable (`optimizer/<name>` in checkpoints), restored on creation."""
        return self._add_variable_with_custom_getter(
            name=name, shape=shape, getter=_make_variable, overwrite=True, initializer=initializer,
            dtype=dtype or tf.float32, trainable=trainable, aggregation=aggregation)

    @property
    def iterations(self):
        """The step counter (int64 `iter`, first of `get_weights()`), created on first use."""
        if self._iterations is None:
            self._iterations = self.add_weight("iter", shape=[], dtype=tf.int64,
                                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._weights.append(self._iterations)
        return self._iterations

    @iterations.setter
    def iterations(self, variable):
        if self._iterations is not None:
            raise RuntimeError("Cannot set `iterations` to a new Variable after the Optimizer weights have been "
                               "created. Here it is attempting to set `iterations` to %s." % variable)
        self._iterations = variable
        self._weights.append(self._iterations)

    def _create_slots(self, var_list):
        pass

    def _create_all_weights(self, var_list):
        _ = self.iterations
        self._create_hypers()
        self._create_slots(var_list)
        if self._pending_state is not None:
            self._apply_pending_state(var_list)

    def get_slot_names(self):
        return self._slot_names

    def add_slot(self, var, slot_name, initializer="zeros", shape=None):
        """The slot `slot_name` of `var`, created (and restored if a checkpoint is pending) on first call."""
        if slot_name not in self._slot_names:
            self._slot_names.append(slot_name)
        key = _var_key(var)
        slot_dict = self._slots.setdefault(key, {})
        weight = slot_dict.get(slot_name)
        if weight is None:
            dtype = getattr(var, "true_dtype", None) or var.dtype
            if isinstance(initializer, (str, _CKPT_INITIAL_VALUE)) or callable(initializer):
                slot_shape = shape if (shape is not None or isinstance(initializer, _CKPT_INITIAL_VALUE)) else var.shape
                initial_value = _initial_value(initializer, slot_shape, dtype)
            else:
                initial_value = initializer
            strategy = tf.distribute.get_strategy()
            with strategy.extended.colocate_vars_with(var):
                weight = tf.Variable(name="%s/%s" % (var._shared_name, slot_name), dtype=dtype, trainable=False,
                                     initial_value=initial_value)
            slot_dict[slot_name] = weight
            self._slot_owners.setdefault(key, var)
            self._restore_slot_variable(slot_name, var, weight)
            self._weights.append(weight)
        return weight

    def get_slot(self, var, slot_name):
        return self._slots[_var_key(var)][slot_name]

    def _restore_slot_variable(self, slot_name, variable, slot_variable):
        """Apply checkpoint positions queued for this slot before it existed (newest restore last)."""
        positions = self._deferred_slot_restorations.get(slot_name, {}).pop(_var_key(variable), [])
        positions.sort(key=lambda position: position.restore_uid, reverse=True)
        for position in positions:
            position.restore(slot_variable)

    def _create_or_restore_slot_variable(self, slot_variable_position, slot_name, variable,
                                         slot_variable_shape=None):
        """Checkpoint hook: create the slot from the checkpoint now if possible, else queue it."""
        slot_variable = self._slots.get(_var_key(variable), {}).get(slot_name)
        if (slot_variable is None and tf.executing_eagerly() and slot_variable_position.is_simple_variable()
                and (not tf.compat.v1.get_default_graph()._variable_creator_stack or self._distribution_strategy)):
            initializer = _CKPT_INITIAL_VALUE(checkpoint_position=slot_variable_position)
            if slot_variable_shape is None:
                slot_variable_shape = slot_variable_position.value_shape()
            slot_variable = self.add_slot(var=variable, initializer=initializer, slot_name=slot_name,
                                          shape=slot_variable_shape)
        if slot_variable is not None:
            return slot_variable
        self._deferred_slot_restorations.setdefault(slot_name, {}).setdefault(
            _var_key(variable), []).append(slot_variable_position)
        return None

    def variables(self):
        """The optimizer's variables in `get_weights()` order."""
        return self._weights

    @property
    def weights(self):
        return self._weights

    def get_weights(self):
        return [np.asarray(w.numpy()) for w in self._weights]

    def set_weights(self, weights):
        """Assign `get_weights()`-ordered arrays; shapes must match."""
        params = self._weights
        if len(params) != len(weights):
            raise ValueError("You called `set_weights(weights)` on optimizer %s with a weight list of length %d, "
                             "but the optimizer was expecting %d weights." % (self._name, len(weights), len(params)))
        for p, w in zip(params, weights):
            if tuple(p.shape) != tuple(np.shape(w)):
                raise ValueError("Optimizer weight shape %s not compatible with provided weight shape %s."
                                 % (tuple(p.shape), tuple(np.shape(w))))
        for p, w in zip(params, weights):
            p.assign(w)

    def _prepend_missing_iterations(self, weights):
        """Keras v1 lists (Adagrad, Adadelta, RMSprop) carry no iterations: put a 0 in front."""
        if len(self._weights) == len(weights) + 1:
            weights = [np.array(0)] + list(weights)
        return weights

    # -- config -------------------------------------------------------------------
    def get_config(self):
        config = {"name": self._name}
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "lr" in config:
            config["learning_rate"] = config.pop("lr")
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"], custom_objects)
        config.pop("is_legacy_optimizer", None)
        return cls(**config)

    # -- state (schema) -----------------------------------------------------------
    def slot_variables(self):
        """[(model variable, {canonical slot: slot variable})] in slot-creation order."""
        names = self.SPEC.names[self.GENERATION]
        out = []
        for key, var in self._slot_owners.items():
            own = self._slots.get(key, {})
            out.append((var, {c: own[n] for c, n in names.items() if n in own}))
        return out

    def extra_variables(self):
        """{canonical extra name: variable} for non-slot state (Nadam's `u_product`)."""
        return {}

    def to_state(self):
        from ..state_io import export_state
        return export_state(self)

    def _apply_pending_state(self, var_list):
        from ..state_io import apply_pending_state
        apply_pending_state(self, var_list)

    def _attach_pending_state(self, var_list=None):
        """Attach `_pending_state` now if the variables are known, else at slot creation."""
        if var_list is not None:
            with tf.name_scope(self._name), tf.init_scope():
                self._create_all_weights(list(var_list))
        elif self._slot_owners:
            self._apply_pending_state(list(self._slot_owners.values()))
