"""The 2.11+ optimizers: hyperparameters, `build` (slot creation order = `variables` order),
`update_step` (tf_keras' exact op sequence, `reference_ops=True`) and `_fast_update_step`
(the default: the same rule through a fused TF kernel, XLA, or fewer ops; see `base` and
`fast`). The math lives in the algorithm modules (`..adam`, `..sgd`, ...).
Slot names and orders are tf_keras 2.21's (see each algorithm's `SPEC.names["experimental"]`).

Fast paths (each algorithm's rule checked against the kernel's formula):
  SGD       ResourceApplyKerasMomentum (m = momentum * m - lr * g; var += m, or Nesterov)
  Adadelta  ResourceApplyAdadelta
  Adamax    ResourceApplyAdaMax
  RMSprop   ResourceApply(Centered)RMSProp with momentum > 0 (epsilon inside the root, as
            2.11+); without momentum there is no `momentum` slot for the kernel: XLA
  Ftrl      ResourceApplyFtrl / FtrlV2 (beta folded into l2, as 2.11+)
  Adam(W)   XLA. ResourceApplyAdam has the same formula and runs ~1.4x faster still, but it
            forms 1 - beta_1 and 1 - beta_2 in float32 where tf_keras uses Python doubles
            (0.1 vs 0.10000002): over 20 steps of the parity problem AMSGrad drifted 1.2e-6
            from tf_keras, past the 1e-6 bound. XLA keeps tf_keras' constants (~1e-7).
  Adagrad   XLA (no kernel divides by sqrt(accumulator + epsilon): AdagradV2 adds epsilon
            outside the root); sparse gradients keep the reference ops, which touch only
            their rows
  Nadam, Lion  XLA (no kernel has their rules)
  Adafactor fewer ops (`adafactor.fast_update`); XLA was slower on CPU
  ClippyAdagrad  none (reference ops)
Sparse gradients (except Adagrad's) are densified first: the 2.11+ rules decay or rewrite
every row of the slots anyway, and with unique indices the dense form is the same rule.
"""

import tensorflow as tf

from .. import adadelta, adafactor, adagrad, adam, adamax, ftrl, lion, nadam, rmsprop, schedules, sgd
from . import fast
from .base import Optimizer

BASE_DEFAULTS = dict(weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                     ema_momentum=0.99, ema_overwrite_frequency=None, jit_compile=True, reference_ops=False)


def _base(kwargs, **overrides):
    """The base-class keyword arguments with this optimizer's defaults."""
    out = dict(BASE_DEFAULTS, **overrides)
    out.update({k: kwargs.pop(k) for k in list(kwargs) if k in BASE_DEFAULTS or k in ("mesh",)})
    return out


def _adam_xla(var, m, v, grad, lr, iterations, beta_1, beta_2, epsilon, vhat, adaptive_epsilon, weight_decay):
    fast.decay_in_graph(var, weight_decay, lr)
    adam.update(var, m, v, grad, lr, iterations, beta_1, beta_2, epsilon, vhat, adaptive_epsilon)


def _adagrad_xla(var, accum, grad, lr, epsilon, weight_decay):
    fast.decay_in_graph(var, weight_decay, lr)
    adagrad.update(var, accum, grad, lr, epsilon)


def _nadam_xla(var, m, v, grad, lr, beta_1, beta_2, epsilon, u_t, u_t_1, u_product_t, beta_2_power, weight_decay):
    fast.decay_in_graph(var, weight_decay, lr)
    nadam.apply_step(var, m, v, grad, lr, beta_1, beta_2, epsilon, u_t, u_t_1, u_product_t, beta_2_power)


def _rmsprop_xla(var, velocity, grad, lr, rho, epsilon, average_grad, weight_decay):
    fast.decay_in_graph(var, weight_decay, lr)
    rmsprop.update(var, velocity, grad, lr, rho, epsilon, 0.0, None, average_grad)


def _lion_variable_xla(var, m, grad, lr, beta_1, weight_decay):
    fast.decay_in_graph(var, weight_decay, lr)
    lion.update_variable(var, m, grad, lr, beta_1)


def _lion_momentum_xla(m, grad, beta_2):
    # A second compiled function: in one, XLA copies m to keep its old value for the variable
    # half (measured: 1.6x the CPU time of the two functions).
    lion.update_momentum(m, grad, beta_2)


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum. Slot `m` for every variable, even with momentum 0."""

    SPEC = sgd.SPEC
    SLOT_LISTS = {"m": "momentums"}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.momentum = momentum
        self.nesterov = nesterov
        if isinstance(momentum, (int, float)) and (momentum < 0 or momentum > 1):
            raise ValueError("`momentum` must be between [0, 1]. Received: momentum=%s" % momentum)

    def _build_slots(self, var_list):
        self._add_interleaved_slots(var_list, "m")

    def update_step(self, gradient, variable):
        sgd.update(variable, self._slot("momentums", variable), gradient, tf.cast(self.learning_rate, variable.dtype),
                   tf.cast(self.momentum, variable.dtype), self.nesterov)

    def _fast_update_step(self, gradient, variable, weight_decay):
        lr = tf.cast(self.learning_rate, variable.dtype)
        fast.decay(variable, weight_decay, lr)
        sgd.apply_fused(variable, gradient, lr, tf.cast(self.momentum, variable.dtype),
                        self._slot("momentums", variable), self.nesterov)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "momentum": self.momentum, "nesterov": self.nesterov})
        return config


class Adam(Optimizer):
    """Adam (AMSGrad optional). Slots `m`, `v` interleaved per variable, then all `vhat`."""

    SPEC = adam.SPEC
    SLOT_LISTS = {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, adaptive_epsilon=False,
                 amsgrad=False, name="Adam", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.adaptive_epsilon = adaptive_epsilon
        self.amsgrad = amsgrad

    def _build_slots(self, var_list):
        self._add_interleaved_slots(var_list, "m", "v")
        if self.amsgrad:
            self._velocity_hats = [self.add_variable_from_reference(var, "vhat") for var in var_list]

    def update_step(self, gradient, variable):
        vhat = self._slot("_velocity_hats", variable) if self.amsgrad else None
        adam.update(variable, self._slot("_momentums", variable), self._slot("_velocities", variable), gradient,
                    tf.cast(self.learning_rate, variable.dtype), self.iterations, self.beta_1, self.beta_2,
                    self.epsilon, vhat, getattr(self, "adaptive_epsilon", False))

    def _fast_update_step(self, gradient, variable, weight_decay):
        vhat = self._slot("_velocity_hats", variable) if self.amsgrad else None
        step = self._xla(_adam_xla, variable)
        step(variable, self._slot("_momentums", variable), self._slot("_velocities", variable), gradient,
             tf.cast(self.learning_rate, variable.dtype), self.iterations, self.beta_1, self.beta_2, self.epsilon,
             vhat, getattr(self, "adaptive_epsilon", False), weight_decay)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        if self.adaptive_epsilon:  # tf_keras leaves it out of its config; keep it when it matters
            config["adaptive_epsilon"] = True
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay (`weight_decay` required; applied by the base before
    each step as var -= var * weight_decay * lr). Same slots as Adam."""

    SPEC = adam.ADAMW_SPEC

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="AdamW", **kwargs):
        kwargs["weight_decay"] = weight_decay
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
                         name=name, **kwargs)
        if self.weight_decay is None:
            raise ValueError("Missing value of `weight_decay` which is required and must be a float value.")

class Adagrad(Optimizer):
    """Adagrad. Slot `accumulator` (initial_accumulator_value); epsilon inside the square root."""

    SPEC = adagrad.SPEC
    SLOT_LISTS = {"accumulator": "_accumulators"}

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="Adagrad", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def _build_slots(self, var_list):
        self._accumulators = [self.add_variable_from_reference(
            v, "accumulator", initial_value=tf.fill(v.shape, tf.cast(self.initial_accumulator_value, v.dtype)))
            for v in var_list]

    def update_step(self, gradient, variable):
        adagrad.update(variable, self._slot("_accumulators", variable), gradient,
                       tf.cast(self.learning_rate, variable.dtype), self.epsilon)

    FAST_SPARSE = False  # the reference's sparse step touches only the gradient's rows

    def _fast_update_step(self, gradient, variable, weight_decay):
        step = self._xla(_adagrad_xla, variable)
        step(variable, self._slot("_accumulators", variable), gradient, tf.cast(self.learning_rate, variable.dtype),
             self.epsilon, weight_decay)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon})
        return config


class Adadelta(Optimizer):
    """Adadelta. Slots `accumulated_grad`, `accumulated_delta_var`, interleaved."""

    SPEC = adadelta.SPEC
    SLOT_LISTS = {"accumulated_grad": "_accumulated_grads", "accumulated_delta_var": "_accumulated_delta_vars"}

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="Adadelta", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.rho = rho
        self.epsilon = epsilon

    def _build_slots(self, var_list):
        self._add_interleaved_slots(var_list, "accumulated_grad", "accumulated_delta_var")

    def update_step(self, gradient, variable):
        adadelta.update(variable, self._slot("_accumulated_grads", variable),
                        self._slot("_accumulated_delta_vars", variable), gradient,
                        tf.cast(self.learning_rate, variable.dtype), self.rho, self.epsilon)

    def _fast_update_step(self, gradient, variable, weight_decay):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        fast.decay(variable, weight_decay, lr)
        adadelta.v2_apply(variable, self._slot("_accumulated_grads", variable),
                          self._slot("_accumulated_delta_vars", variable), gradient, lr, tf.cast(self.rho, dtype),
                          tf.cast(self.epsilon, dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate), "rho": self.rho,
                       "epsilon": self.epsilon})
        return config


class Adamax(Optimizer):
    """Adamax. Slots `m`, `u` (infinity norm), interleaved."""

    SPEC = adamax.SPEC
    SLOT_LISTS = {"m": "_m", "u": "_u"}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Adamax", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def _build_slots(self, var_list):
        self._add_interleaved_slots(var_list, "m", "u")

    def update_step(self, gradient, variable):
        adamax.update(variable, self._slot("_m", variable), self._slot("_u", variable), gradient,
                      tf.cast(self.learning_rate, variable.dtype), self.iterations, self.beta_1, self.beta_2,
                      self.epsilon)

    def _fast_update_step(self, gradient, variable, weight_decay):
        lr = tf.cast(self.learning_rate, variable.dtype)
        fast.decay(variable, weight_decay, lr)
        adamax.fused_update(variable, self._slot("_m", variable), self._slot("_u", variable), gradient, lr,
                            self.iterations, self.beta_1, self.beta_2, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


class Nadam(Optimizer):
    """Nadam. Slots `m`, `v` interleaved; the schedule product `_u_product` is a tracked
    variable outside `variables` (TF checkpoints keep it, h5/.keras lose it)."""

    SPEC = nadam.SPEC
    SLOT_LISTS = {"m": "_momentums", "v": "_velocities"}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="Nadam", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def _build_slots(self, var_list):
        self._u_product = tf.Variable(1.0, dtype=var_list[0].dtype)
        self._u_product_counter = int(self.iterations.numpy()) + 1  # tf_keras: 1 (see apply_gradients)
        self._add_interleaved_slots(var_list, "m", "v")

    def _u_product_for_step(self, u_t):
        # See nadam.py: advanced by the first variable of a step, guarded by a Python counter.
        def cached():
            return self._u_product

        def advance():
            value = self._u_product * u_t
            self._u_product.assign(value)
            self._u_product_counter += 1
            return value

        return tf.cond(self._u_product_counter == (self.iterations + 2), true_fn=cached, false_fn=advance)

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        # Deliberate difference: tf_keras starts the Python counter at 1 whatever `iterations`
        # is, so a Nadam restored from a checkpoint advances `_u_product` once per variable
        # until the counter catches up, and its run diverges from the uninterrupted one.
        # Eagerly we re-sync the counter each step, so a restored run continues exactly.
        if tf.executing_eagerly() and getattr(self, "_built", False):
            self._u_product_counter = int(self.iterations.numpy()) + 1
        return super().apply_gradients(grads_and_vars, name, skip_gradients_aggregation, **kwargs)

    def _after_state_restored(self):
        self._u_product_counter = int(self.iterations.numpy()) + 1

    def update_step(self, gradient, variable):
        nadam.update(variable, self._slot("_momentums", variable), self._slot("_velocities", variable), gradient,
                     tf.cast(self.learning_rate, variable.dtype), self.iterations, self.beta_1, self.beta_2,
                     self.epsilon, self._u_product_for_step)

    def _fast_update_step(self, gradient, variable, weight_decay):
        dtype = variable.dtype
        u_t, u_t_1, beta_1, beta_2, beta_2_power = nadam.schedule(self.iterations, self.beta_1, self.beta_2, dtype)
        u_product_t = tf.convert_to_tensor(self._u_product_for_step(u_t))  # (eagerly, the variable itself)
        step = self._xla(_nadam_xla, variable)
        step(variable, self._slot("_momentums", variable), self._slot("_velocities", variable), gradient,
             tf.cast(self.learning_rate, dtype), beta_1, beta_2, self.epsilon, u_t, u_t_1, u_product_t, beta_2_power,
             weight_decay)

    def extra_variables(self):
        return {"u_product": self._u_product} if getattr(self, "_built", False) else {}

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


class RMSprop(Optimizer):
    """RMSprop. Slots `velocity`, then `momentum` (momentum > 0), then `average_gradient`
    (centered), slot-major. Note the 2.11+ default `ema_overwrite_frequency=100`."""

    SPEC = rmsprop.SPEC
    SLOT_LISTS = {"velocity": "_velocities", "momentum": "_momentums", "average_gradient": "_average_gradients"}

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name="RMSprop",
                 **kwargs):
        super().__init__(name=name, **_base(kwargs, ema_overwrite_frequency=100), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def _build_slots(self, var_list):
        self._velocities = [self.add_variable_from_reference(v, "velocity") for v in var_list]
        self._momentums = [self.add_variable_from_reference(v, "momentum") for v in var_list] \
            if self.momentum > 0 else []
        self._average_gradients = [self.add_variable_from_reference(v, "average_gradient") for v in var_list] \
            if self.centered else []

    def update_step(self, gradient, variable):
        mom = self._slot("_momentums", variable) if self.momentum > 0 else None
        avg = self._slot("_average_gradients", variable) if self.centered else None
        rmsprop.update(variable, self._slot("_velocities", variable), gradient,
                       tf.cast(self.learning_rate, variable.dtype), self.rho, self.epsilon, self.momentum, mom, avg)

    def _fast_update_step(self, gradient, variable, weight_decay):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        avg = self._slot("_average_gradients", variable) if self.centered else None
        if self.momentum > 0:
            fast.decay(variable, weight_decay, lr)
            coefficients = dict(lr_t=lr, rho=tf.cast(self.rho, dtype), momentum=tf.cast(self.momentum, dtype),
                                epsilon=tf.cast(self.epsilon, dtype))
            rmsprop.v2_apply_fused(variable, self._slot("_velocities", variable), self._slot("_momentums", variable),
                                   gradient, coefficients, avg)
        else:
            step = self._xla(_rmsprop_xla, variable)
            step(variable, self._slot("_velocities", variable), gradient, lr, self.rho, self.epsilon, avg,
                 weight_decay)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate), "rho": self.rho,
                       "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered})
        return config


class Ftrl(Optimizer):
    """FTRL-proximal. Slots `accumulator` (initial_accumulator_value) and `linear`, interleaved."""

    SPEC = ftrl.SPEC
    SLOT_LISTS = {"accumulator": "_accumulators", "linear": "_linears"}

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, name="Ftrl", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        for key, value in (("initial_accumulator_value", initial_accumulator_value),
                           ("l1_regularization_strength", l1_regularization_strength),
                           ("l2_regularization_strength", l2_regularization_strength),
                           ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength)):
            if value < 0.0:
                raise ValueError("`%s` needs to be positive or zero. Received: %s=%s." % (key, key, value))
        if learning_rate_power > 0.0:
            raise ValueError("`learning_rate_power` needs to be negative or zero. Received: learning_rate_power=%s."
                             % learning_rate_power)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1_regularization_strength = l1_regularization_strength
        self.l2_regularization_strength = l2_regularization_strength
        self.l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength
        self.beta = beta

    def _build_slots(self, var_list):
        self._accumulators, self._linears = [], []
        for var in var_list:
            self._accumulators.append(self.add_variable_from_reference(
                var, "accumulator",
                initial_value=tf.cast(tf.fill(dims=var.shape, value=self.initial_accumulator_value), var.dtype)))
            self._linears.append(self.add_variable_from_reference(var, "linear"))

    def update_step(self, gradient, variable):
        ftrl.update(variable, self._slot("_accumulators", variable), self._slot("_linears", variable), gradient,
                    tf.cast(self.learning_rate, variable.dtype), self.learning_rate_power,
                    self.l1_regularization_strength, self.l2_regularization_strength,
                    self.l2_shrinkage_regularization_strength, self.beta)

    def _fast_update_step(self, gradient, variable, weight_decay):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        fast.decay(variable, weight_decay, lr)
        shrinkage = self.l2_shrinkage_regularization_strength
        ftrl.v2_apply(variable, self._slot("_accumulators", variable), self._slot("_linears", variable), gradient,
                      lr, tf.cast(self.l1_regularization_strength, dtype),
                      ftrl.adjusted_l2(self.l2_regularization_strength, self.beta, lr),
                      tf.cast(self.learning_rate_power, dtype),
                      tf.cast(shrinkage, dtype) if shrinkage else None)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "learning_rate_power": self.learning_rate_power,
                       "initial_accumulator_value": self.initial_accumulator_value,
                       "l1_regularization_strength": self.l1_regularization_strength,
                       "l2_regularization_strength": self.l2_regularization_strength,
                       "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                       "beta": self.beta})
        return config


class Lion(Optimizer):
    """Lion (sign of an interpolated momentum). Slot `m`."""

    SPEC = lion.SPEC
    SLOT_LISTS = {"m": "momentums"}

    def __init__(self, learning_rate=0.0001, beta_1=0.9, beta_2=0.99, name="Lion", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError("`beta_1`={} must be between ]0, 1]. Otherwise, the optimizer degenerates to SignSGD."
                             .format(beta_1))

    def _build_slots(self, var_list):
        self._add_interleaved_slots(var_list, "m")

    def update_step(self, gradient, variable):
        lion.update(variable, self._slot("momentums", variable), gradient,
                    tf.cast(self.learning_rate, variable.dtype), self.beta_1, self.beta_2)

    def _fast_update_step(self, gradient, variable, weight_decay):
        dtype = variable.dtype
        m = self._slot("momentums", variable)
        self._xla(_lion_variable_xla, variable)(variable, m, gradient, tf.cast(self.learning_rate, dtype),
                                                tf.cast(self.beta_1, dtype), weight_decay)
        self._xla(_lion_momentum_xla, variable)(m, gradient, tf.cast(self.beta_2, dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "beta_1": self.beta_1, "beta_2": self.beta_2})
        return config


class Adafactor(Optimizer):
    """Adafactor. Per variable of rank >= 2: `r` (shape[:-1]), `c` (shape[:-2] + shape[-1:]),
    `v`; rank < 2: only `v` (the `r`/`c` entries are untracked-by-`variables` int scalars,
    checkpointed as `optimizer/_r/<i>`, `optimizer/_c/<i>`, as in tf_keras)."""

    SPEC = adafactor.SPEC
    SLOT_LISTS = {"r": "_r", "c": "_c", "v": "_v"}

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0,
                 relative_step=True, name="Adafactor", **kwargs):
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_2_decay = beta_2_decay
        self.epsilon_1 = epsilon_1
        self.epsilon_2 = epsilon_2
        self.clip_threshold = clip_threshold
        self.relative_step = relative_step

    def _build_slots(self, var_list):
        self._r, self._c, self._v = [], [], []
        for var in var_list:
            if len(var.shape) < 2:
                # placeholders, as tf_keras keeps them (both named r/...)
                self._r.append(tf.Variable(0, name="r/%s" % var._shared_name))
                self._c.append(tf.Variable(0, name="r/%s" % var._shared_name))
            else:
                self._r.append(self.add_variable(shape=var.shape[:-1], dtype=var.dtype, name="r/%s" % var._shared_name))
                self._c.append(self.add_variable(shape=var.shape[:-2] + var.shape[-1], dtype=var.dtype,
                                                 name="c/%s" % var._shared_name))
            self._v.append(self.add_variable_from_reference(var, "v"))

    def _is_real_slot(self, own, var):
        return own == "v" or len(var.shape) >= 2

    def update_step(self, gradient, variable):
        lr = tf.cast(self.learning_rate, variable.dtype)
        relative = self.relative_step and not schedules.is_schedule(self._learning_rate)
        adafactor.update(variable, self._slot("_r", variable), self._slot("_c", variable),
                         self._slot("_v", variable), gradient, lr, self.iterations, self.beta_2_decay, self.epsilon_1,
                         self.epsilon_2, self.clip_threshold, relative)

    def _fast_update_step(self, gradient, variable, weight_decay):
        lr = tf.cast(self.learning_rate, variable.dtype)
        fast.decay(variable, weight_decay, lr)
        relative = self.relative_step and not schedules.is_schedule(self._learning_rate)
        adafactor.fast_update(variable, self._slot("_r", variable), self._slot("_c", variable),
                              self._slot("_v", variable), gradient, lr, self.iterations, self.beta_2_decay,
                              self.epsilon_1, self.epsilon_2, self.clip_threshold, relative)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "beta_2_decay": self.beta_2_decay, "epsilon_1": self.epsilon_1, "epsilon_2": self.epsilon_2,
                       "clip_threshold": self.clip_threshold, "relative_step": self.relative_step})
        return config


class ClippyAdagrad(Optimizer):
    """tensorflow-recommenders ClippyAdagrad: Adagrad whose per-variable update is scaled down
    so no element moves more than `absolute_threshold + variable_relative_threshold * |var| +
    accumulator_relative_threshold * rsqrt(accumulator)`. Slots `accumulator`, and a scalar
    `clipping_factor` per variable when `export_clipping_factors` (interleaved); the factors are
    also the `clipping_factors` attribute (empty otherwise)."""

    SPEC = adagrad.CLIPPYADAGRAD_SPEC
    SLOT_LISTS = {"accumulator": "_accumulators", "clipping_factor": "clipping_factors"}

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, variable_relative_threshold=0.1,
                 accumulator_relative_threshold=0.0, absolute_threshold=1e-7, epsilon=1e-7,
                 export_clipping_factors=False, clip_accumulator_update=False, use_standard_accumulator_update=False,
                 name="ClippyAdagrad", **kwargs):
        if clip_accumulator_update and use_standard_accumulator_update:
            raise ValueError("clip_accumulator_update and use_standard_accumulator_update cannot both be set to "
                             "True.")
        super().__init__(name=name, **_base(kwargs), **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.initial_accumulator_value = initial_accumulator_value
        self.variable_relative_threshold = variable_relative_threshold
        self.accumulator_relative_threshold = accumulator_relative_threshold
        self.absolute_threshold = absolute_threshold
        self.epsilon = epsilon
        self.export_clipping_factors = export_clipping_factors
        self.clip_accumulator_update = clip_accumulator_update
        self.use_standard_accumulator_update = use_standard_accumulator_update
        self.clipping_factors = []

    def _build_slots(self, var_list):
        self._accumulators, self.clipping_factors = [], []
        for var in var_list:
            self._accumulators.append(self.add_variable_from_reference(
                var, "accumulator", initial_value=tf.fill(var.shape, tf.cast(self.initial_accumulator_value,
                                                                             var.dtype))))
            if self.export_clipping_factors:
                self.clipping_factors.append(self.add_variable_from_reference(var, "clipping_factor", shape=()))

    def update_step(self, gradient, variable):
        factor = self._slot("clipping_factors", variable) if self.export_clipping_factors else None
        adagrad.clippy_update(variable, self._slot("_accumulators", variable), gradient,
                              tf.cast(self.learning_rate, variable.dtype), tf.cast(self.epsilon, variable.dtype),
                              self.variable_relative_threshold, self.accumulator_relative_threshold,
                              self.absolute_threshold, self.clip_accumulator_update,
                              self.use_standard_accumulator_update, factor)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "initial_accumulator_value": self.initial_accumulator_value,
                       "variable_relative_threshold": self.variable_relative_threshold,
                       "absolute_threshold": self.absolute_threshold,
                       "accumulator_relative_threshold": self.accumulator_relative_threshold,
                       "epsilon": self.epsilon, "export_clipping_factors": self.export_clipping_factors,
                       "clip_accumulator_update": self.clip_accumulator_update,
                       "use_standard_accumulator_update": self.use_standard_accumulator_update})
        return config


ALL = (SGD, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam, RMSprop, Ftrl, Lion, Adafactor, ClippyAdagrad)
