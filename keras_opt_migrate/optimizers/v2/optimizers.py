"""The v2 optimizers: constructor, slots and per-step coefficients; the math lives in the
algorithm modules (`..sgd`, `..adam`, ...). Slot names and creation order are those of
`tf.keras.optimizers.legacy` (see each algorithm's `SPEC.names["v2"]`)."""

import tensorflow as tf

from ...errors import KerasOptMigrateError
from .. import adadelta, adagrad, adam, adamax, ftrl, nadam, rmsprop, schedules, sgd
from .base import OptimizerV2

DEFAULT_EPSILON = 1e-7


def _check_momentum(momentum):
    if isinstance(momentum, (int, float)) and (momentum < 0 or momentum > 1):
        raise ValueError("`momentum` must be between [0, 1]. Received: momentum=%s (of type %s)."
                         % (momentum, type(momentum)))
    return isinstance(momentum, tf.Tensor) or callable(momentum) or momentum > 0


class SGD(OptimizerV2):
    """Gradient descent with optional (Nesterov) momentum. Slot: `momentum`, only when momentum > 0."""

    SPEC = sgd.SPEC

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._momentum = _check_momentum(momentum)
        self._set_hyper("momentum", momentum)
        self.nesterov = nesterov

    def _create_slots(self, var_list):
        if self._momentum:
            for var in var_list:
                self.add_slot(var, "momentum")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        apply_state[(var_device, var_dtype)]["momentum"] = tf.identity(self._get_hyper("momentum", var_dtype))

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        accum = self.get_slot(var, "momentum") if self._momentum else None
        return sgd.apply_fused(var, grad, c["lr_t"], c["momentum"], accum, self.nesterov,
                               use_locking=self._use_locking)

    def _resource_apply_sparse_duplicate_indices(self, grad, var, indices, apply_state=None):
        if self._momentum:
            return super()._resource_apply_sparse_duplicate_indices(grad, var, indices, apply_state=apply_state)
        # Plain SGD scatter-adds every row, duplicates included, without summing them first.
        c = self._coefficients(var, apply_state)
        return sgd.apply_fused(var, grad, c["lr_t"], indices=indices)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        return sgd.apply_fused(var, grad, c["lr_t"], c["momentum"], self.get_slot(var, "momentum"),
                               self.nesterov, indices=indices, use_locking=self._use_locking)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "momentum": self._serialize_hyperparameter("momentum"),
                       "nesterov": self.nesterov})
        return config


class Adam(OptimizerV2):
    """Adam, optionally AMSGrad. Slots `m`, `v` (+ `vhat`), slot-major. Dense steps run TF's
    fused `ResourceApplyAdam` kernel, as tf_keras' legacy Adam does."""

    SPEC = adam.SPEC

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name="Adam",
                 **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("beta_1", beta_1)
        self._set_hyper("beta_2", beta_2)
        self.epsilon = epsilon or DEFAULT_EPSILON
        self.amsgrad = amsgrad

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "m")
        for var in var_list:
            self.add_slot(var, "v")
        if self.amsgrad:
            for var in var_list:
                self.add_slot(var, "vhat")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        state = apply_state[(var_device, var_dtype)]
        state.update(adam.v2_coefficients(state["lr_t"], self._get_hyper("beta_1", var_dtype),
                                          self._get_hyper("beta_2", var_dtype), self.epsilon, self.iterations,
                                          var_dtype))

    def set_weights(self, weights):
        # A Keras v1 Adam list carries `(1,)` vhat placeholders after m and v: drop them.
        num_vars = int((len(self._weights) - 1) / 2)
        if len(weights) == 3 * num_vars + 1:
            weights = weights[:len(self._weights)]
        super().set_weights(weights)

    def _vhat(self, var):
        return self.get_slot(var, "vhat") if self.amsgrad else None

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adam.v2_apply_dense(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, c,
                                   self._vhat(var), self._use_locking)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adam.v2_apply_sparse(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, indices, c,
                                    self._vhat(var), self._use_locking)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "beta_1": self._serialize_hyperparameter("beta_1"),
                       "beta_2": self._serialize_hyperparameter("beta_2"), "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        return config


class LazyAdam(Adam):
    """tensorflow-addons LazyAdam: Adam whose sparse steps touch only the rows in the batch.

    Same slots, names and checkpoint layout as legacy Adam; `amsgrad` is not supported.
    """

    SPEC = adam.LAZYADAM_SPEC

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 name="LazyAdam", **kwargs):
        if amsgrad:
            raise KerasOptMigrateError("LazyAdam does not support amsgrad. Received: amsgrad=True; use Adam")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        dtype = var.dtype.base_dtype
        return adam.lazy_apply_sparse(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, indices,
                                      self._decayed_lr(dtype), self._get_hyper("beta_1", dtype),
                                      self._get_hyper("beta_2", dtype), self.epsilon, self.iterations)


class Adagrad(OptimizerV2):
    """Adagrad. Slot `accumulator`, initialised to `initial_accumulator_value`."""

    SPEC = adagrad.SPEC

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="Adagrad", **kwargs):
        if initial_accumulator_value < 0.0:
            raise ValueError("initial_accumulator_value must be non-negative: %s" % initial_accumulator_value)
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon or DEFAULT_EPSILON

    def _create_slots(self, var_list):
        for var in var_list:
            value = self._initial_accumulator_value
            self.add_slot(var, "accumulator", lambda shape, dtype: tf.fill(shape, tf.cast(value, dtype)))

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        state = apply_state[(var_device, var_dtype)]
        state.update(epsilon=tf.convert_to_tensor(self.epsilon, var_dtype), neg_lr_t=-state["lr_t"])

    def set_weights(self, weights):
        super().set_weights(self._prepend_missing_iterations(weights))

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.setdefault("initial_accumulator_value", 0.1)
        return super().from_config(config, custom_objects)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adagrad.v2_apply(var, self.get_slot(var, "accumulator"), grad, c["lr_t"], c["epsilon"],
                                use_locking=self._use_locking)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adagrad.v2_apply(var, self.get_slot(var, "accumulator"), grad, c["lr_t"], c["epsilon"],
                                indices=indices, use_locking=self._use_locking)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "initial_accumulator_value": self._initial_accumulator_value,
                       "epsilon": self.epsilon})
        return config


class RMSprop(OptimizerV2):
    """RMSprop. Slots `rms`, then `momentum` (momentum > 0), then `mg` (centered), slot-major."""

    SPEC = rmsprop.SPEC

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name="RMSprop",
                 **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("rho", rho)
        self._momentum = _check_momentum(momentum)
        self._set_hyper("momentum", momentum)
        self.epsilon = epsilon or DEFAULT_EPSILON
        self.centered = centered

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "rms")
        if self._momentum:
            for var in var_list:
                self.add_slot(var, "momentum")
        if self.centered:
            for var in var_list:
                self.add_slot(var, "mg")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        state = apply_state[(var_device, var_dtype)]
        rho = tf.identity(self._get_hyper("rho", var_dtype))
        state.update(neg_lr_t=-state["lr_t"], epsilon=tf.convert_to_tensor(self.epsilon, var_dtype), rho=rho,
                     momentum=tf.identity(self._get_hyper("momentum", var_dtype)), one_minus_rho=1.0 - rho)

    def _slots_of(self, var):
        mom = self.get_slot(var, "momentum") if self._momentum else None
        mg = self.get_slot(var, "mg") if self.centered else None
        return self.get_slot(var, "rms"), mom, mg

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        rms, mom, mg = self._slots_of(var)
        if mom is not None:
            return rmsprop.v2_apply_fused(var, rms, mom, grad, c, mg, use_locking=self._use_locking)
        return rmsprop.v2_apply_dense(var, rms, grad, c, mg, self._use_locking)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        rms, mom, mg = self._slots_of(var)
        if mom is not None:
            return rmsprop.v2_apply_fused(var, rms, mom, grad, c, mg, indices, self._use_locking)
        return rmsprop.v2_apply_sparse(var, rms, grad, indices, c, mg, self._use_locking)

    def set_weights(self, weights):
        super().set_weights(self._prepend_missing_iterations(weights))

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "rho": self._serialize_hyperparameter("rho"),
                       "momentum": self._serialize_hyperparameter("momentum"), "epsilon": self.epsilon,
                       "centered": self.centered})
        return config


RMSProp = RMSprop


class Adadelta(OptimizerV2):
    """Adadelta. Slots `accum_grad`, `accum_var`, slot-major."""

    SPEC = adadelta.SPEC

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="Adadelta", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("rho", rho)
        self.epsilon = epsilon or DEFAULT_EPSILON

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "accum_grad")
        for var in var_list:
            self.add_slot(var, "accum_var")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        apply_state[(var_device, var_dtype)].update(epsilon=tf.convert_to_tensor(self.epsilon, var_dtype),
                                                    rho=tf.identity(self._get_hyper("rho", var_dtype)))

    def set_weights(self, weights):
        super().set_weights(self._prepend_missing_iterations(weights))

    def _apply(self, grad, var, apply_state, indices=None):
        c = self._coefficients(var, apply_state)
        return adadelta.v2_apply(var, self.get_slot(var, "accum_grad"), self.get_slot(var, "accum_var"), grad,
                                 c["lr_t"], c["rho"], c["epsilon"], indices, self._use_locking)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        return self._apply(grad, var, apply_state)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        return self._apply(grad, var, apply_state, indices)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "rho": self._serialize_hyperparameter("rho"),
                       "epsilon": self.epsilon})
        return config


class Adamax(OptimizerV2):
    """Adamax. Slots `m` and `v` (the infinity norm), slot-major."""

    SPEC = adamax.SPEC

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Adamax", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("beta_1", beta_1)
        self._set_hyper("beta_2", beta_2)
        self.epsilon = epsilon or DEFAULT_EPSILON

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "m")
        for var in var_list:
            self.add_slot(var, "v")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        local_step = tf.cast(self.iterations + 1, var_dtype)
        beta_1_t = tf.identity(self._get_hyper("beta_1", var_dtype))
        beta_2_t = tf.identity(self._get_hyper("beta_2", var_dtype))
        beta_1_power = tf.pow(beta_1_t, local_step)
        lr_t = apply_state[(var_device, var_dtype)]["lr_t"]
        apply_state[(var_device, var_dtype)].update(
            neg_scaled_lr=-lr_t / (1 - beta_1_power), epsilon=tf.convert_to_tensor(self.epsilon, var_dtype),
            beta_1_t=beta_1_t, beta_1_power=beta_1_power, one_minus_beta_1_t=1 - beta_1_t, beta_2_t=beta_2_t,
            zero=tf.zeros((), dtype=tf.int64))

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adamax.v2_apply_dense(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, c,
                                     self._use_locking)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        return adamax.v2_apply_sparse(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, indices, c)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "beta_1": self._serialize_hyperparameter("beta_1"),
                       "beta_2": self._serialize_hyperparameter("beta_2"), "epsilon": self.epsilon})
        return config


class Nadam(OptimizerV2):
    """Nadam. Weights: `iter`, `momentum_cache` (the schedule product), then slots `m`, `v`.

    `schedule_decay` (default 0.004) is stored as `decay` but only shapes the momentum
    schedule; the learning rate itself is not decayed, and schedules are refused.
    """

    SPEC = nadam.SPEC

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Nadam", **kwargs):
        kwargs["decay"] = kwargs.pop("schedule_decay", 0.004)
        learning_rate = kwargs.get("lr", learning_rate)
        if schedules.is_schedule(learning_rate):
            raise ValueError("The Nadam optimizer does not support tf.keras.optimizers.LearningRateSchedules as "
                             "the learning rate.")
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", learning_rate)
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("beta_1", beta_1)
        self._set_hyper("beta_2", beta_2)
        self.epsilon = epsilon or DEFAULT_EPSILON
        self._m_cache = None

    def _create_slots(self, var_list):
        if self._m_cache is None:
            self._m_cache = self.add_weight("momentum_cache", shape=[], dtype=var_list[0].dtype.base_dtype,
                                            initializer="ones",
                                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._weights.append(self._m_cache)
        for var in var_list:
            self.add_slot(var, "m")
        for var in var_list:
            self.add_slot(var, "v")

    def _prepare(self, var_list):
        self._m_cache_read = tf.identity(self._m_cache)
        return super()._prepare(var_list)

    def _prepare_local(self, var_device, var_dtype, apply_state):
        apply_state[(var_device, var_dtype)] = nadam.v2_coefficients(
            tf.identity(self._get_hyper("learning_rate", var_dtype)),
            tf.identity(self._get_hyper("beta_1", var_dtype)), tf.identity(self._get_hyper("beta_2", var_dtype)),
            self.epsilon, self.iterations, self._initial_decay, self._m_cache, self._m_cache_read, var_dtype,
            self._use_locking)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        c = self._coefficients(var, apply_state)
        return nadam.v2_apply_dense(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, c,
                                    self._use_locking)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        c = self._coefficients(var, apply_state)
        return nadam.v2_apply_sparse(var, self.get_slot(var, "m"), self.get_slot(var, "v"), grad, indices, c,
                                     self._use_locking)

    def extra_variables(self):
        return {} if self._m_cache is None else {"u_product": self._m_cache}

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter("learning_rate"),
                       "decay": self._initial_decay, "beta_1": self._serialize_hyperparameter("beta_1"),
                       "beta_2": self._serialize_hyperparameter("beta_2"), "epsilon": self.epsilon})
        return config


class Ftrl(OptimizerV2):
    """FTRL-proximal. Slots `accumulator` and `linear`, created per variable (interleaved)."""

    SPEC = ftrl.SPEC

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0, name="Ftrl",
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, **kwargs):
        super().__init__(name, **kwargs)
        for key, value, rule in (
                ("initial_accumulator_value", initial_accumulator_value, "positive or zero"),
                ("learning_rate_power", -learning_rate_power, "negative or zero"),
                ("l1_regularization_strength", l1_regularization_strength, "positive or zero"),
                ("l2_regularization_strength", l2_regularization_strength, "positive or zero"),
                ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength, "positive or zero")):
            if value < 0.0:
                raise ValueError("`%s` needs to be %s. Received: %s=%s."
                                 % (key, rule, key, learning_rate_power if key == "learning_rate_power" else value))
        self._set_hyper("learning_rate", learning_rate)
        self._set_hyper("decay", self._initial_decay)
        self._set_hyper("learning_rate_power", learning_rate_power)
        self._set_hyper("l1_regularization_strength", l1_regularization_strength)
        self._set_hyper("l2_regularization_strength", l2_regularization_strength)
        self._set_hyper("beta", beta)
        self._initial_accumulator_value = initial_accumulator_value
        self._l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength

    def _create_slots(self, var_list):
        value = self._initial_accumulator_value
        for var in var_list:
            self.add_slot(var, "accumulator", lambda shape, dtype: tf.fill(shape, tf.cast(value, dtype)))
            self.add_slot(var, "linear")

    def _prepare_local(self, var_device, var_dtype, apply_state):
        super()._prepare_local(var_device, var_dtype, apply_state)
        hyper = {k: tf.identity(self._get_hyper(k, var_dtype)) for k in (
            "learning_rate_power", "l1_regularization_strength", "l2_regularization_strength", "beta")}
        hyper["l2_shrinkage_regularization_strength"] = tf.cast(self._l2_shrinkage_regularization_strength,
                                                                var_dtype)
        apply_state[(var_device, var_dtype)].update(hyper)

    def _apply(self, grad, var, apply_state, indices=None):
        c = self._coefficients(var, apply_state)
        shrinkage = (c["l2_shrinkage_regularization_strength"]
                     if self._l2_shrinkage_regularization_strength > 0.0 else None)
        return ftrl.v2_apply(var, self.get_slot(var, "accumulator"), self.get_slot(var, "linear"), grad, c["lr_t"],
                             c["l1_regularization_strength"],
                             ftrl.adjusted_l2(c["l2_regularization_strength"], c["beta"], c["lr_t"]),
                             c["learning_rate_power"], shrinkage, indices, self._use_locking)

    def _resource_apply_dense(self, grad, var, apply_state=None):
        return self._apply(grad, var, apply_state)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        return self._apply(grad, var, apply_state, indices)

    def get_config(self):
        config = super().get_config()
        config.update({
            "learning_rate": self._serialize_hyperparameter("learning_rate"), "decay": self._initial_decay,
            "initial_accumulator_value": self._initial_accumulator_value,
            "learning_rate_power": self._serialize_hyperparameter("learning_rate_power"),
            "l1_regularization_strength": self._serialize_hyperparameter("l1_regularization_strength"),
            "l2_regularization_strength": self._serialize_hyperparameter("l2_regularization_strength"),
            "beta": self._serialize_hyperparameter("beta"),
            "l2_shrinkage_regularization_strength": self._l2_shrinkage_regularization_strength})
        return config


ALL = (SGD, Adam, LazyAdam, Adagrad, RMSprop, Adadelta, Adamax, Nadam, Ftrl)
