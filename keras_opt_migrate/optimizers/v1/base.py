"""The Keras `optimizer_v1.Optimizer` base class, eager.

The real classes (`tf_keras.src.optimizers.optimizer_v1`) only build graph-mode update ops
(`get_updates`). This base keeps their observable contract and runs the same arithmetic
eagerly:

* constructor: only `clipnorm` / `clipvalue` besides each class's own arguments; the
  learning rate is `lr`; hyperparameters the real class keeps as float32 backend variables
  (`lr`, `decay`, `momentum`, `beta_1`, ...) are float32 `tf.Variable`s here too, because the
  arithmetic's rounding depends on it;
* `weights` / `get_weights()` / `set_weights()`: the real list, in the real order. The order
  is not written here but replayed from the algorithm's `v1` layout in its `AlgorithmSpec`
  (`[iterations] + ms + vs + vhats` for Adam, accumulators only for Adagrad, ...), the same
  description the format adapters use to read v1 files;
* gradients are clipped per tensor (`clip_by_norm`, then `clip_by_value`) before anything
  else, sparse gradients included, then used densely, as the graph ops did;
* the slots exist from the first `apply_gradients` (or `build(var_list)`), for exactly
  the variables of that call.

Restoring: `restore_state(state)` holds an `OptimizerState` until the slots exist, then
attaches it by name or build order (see `attach.py`); `to_state()` / `from_state()`
convert to and from the schema under canonical slot names.
"""

import tensorflow as tf

from ...errors import KerasOptMigrateError
from .._common import assign_weight_list, gradients_of
from ..spec import positional_layout
from . import state_io

FLOATX = "float32"
EPSILON = 1e-7  # tf_keras backend.epsilon() default


def backend_sqrt(x):
    """`backend.sqrt`: negative values are clipped to 0 before the square root."""
    return tf.sqrt(tf.maximum(x, tf.constant(0.0, x.dtype)))


def _dense(grad):
    return tf.convert_to_tensor(grad) if isinstance(grad, tf.IndexedSlices) else grad


class Optimizer:
    """Base class of the v1 generation; see the module docstring.

    Subclasses set `SPEC` and implement `_apply(params, grads)`, which reads the slots from
    `self._slot(name, i)` and assigns every new value itself.
    """

    SPEC = None
    GENERATION = "v1"
    _HAS_AGGREGATE_GRAD = False
    # canonical extra name -> attribute holding that variable
    _EXTRA_ATTRIBUTES = {"iterations": "iterations", "u_product": "m_schedule"}

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            if key not in ("clipnorm", "clipvalue"):
                raise TypeError("Unexpected keyword argument passed to optimizer: " + str(key))
            if value < 0:
                raise ValueError("Expected %s >= 0, received: %s" % (key, value))
        # Kept as attributes only when given: the real get_config() lists them only then.
        self.__dict__.update(kwargs)
        self.weights = []
        self._params = None
        self._slots = {}
        self._pending_state = None
        self.restore_report = None

    # -- variables -----------------------------------------------------------------
    def _variable(self, value, name, dtype=FLOATX):
        return tf.Variable(value, dtype=dtype, name="%s/%s" % (type(self).__name__, name), trainable=False)

    def _iterations_variable(self):
        return self._variable(0, "iterations", dtype="int64")

    def _layout_config(self):
        """The config keys the v1 layout depends on (Adam: amsgrad)."""
        return {}

    def build(self, var_list):
        """Create the slots for `var_list` (the variables every later step must update)."""
        var_list = list(var_list)
        if self._params is None:
            self._create_all_weights(var_list)
        elif [id(v) for v in var_list] != [id(v) for v in self._params]:
            raise KerasOptMigrateError(
                "%s was built for %d variables (%s); it cannot update a different list (%s). The Keras v1 "
                "optimizers create their slots once; make a new optimizer for a new set of variables"
                % (type(self).__name__, len(self._params),
                   ", ".join(state_io.variable_name(v) for v in self._params[:4]),
                   ", ".join(state_io.variable_name(v) for v in var_list[:4])))
        if self._pending_state is not None:  # kept on failure: every later step is refused too
            self.restore_report = state_io.attach_to_v1(self, self._pending_state, var_list, confirmed=False)
            self._pending_state = None

    def _create_all_weights(self, var_list):
        """The v1 `weights` list, replayed from the algorithm's v1 layout, and the slots in it."""
        layout = positional_layout(self.SPEC, self.GENERATION, self._layout_config(),
                                   [tuple(v.shape) for v in var_list], [v.dtype.name for v in var_list])
        own_names = self.SPEC.names[self.GENERATION]
        slots = {name: [None] * len(var_list) for name in self.SPEC.slots}
        weights = []
        for entry in layout:
            if entry.kind == "extra":
                weights.append(getattr(self, self._EXTRA_ATTRIBUTES[entry.name]))
                continue
            var = var_list[entry.var_index]
            slot = tf.Variable(tf.zeros(entry.shape, entry.dtype), trainable=False, name="%s/%s/%s" % (
                type(self).__name__, state_io.variable_name(var), own_names[entry.name]))
            slots[entry.name][entry.var_index] = slot
            weights.append(slot)
        self._slots, self.weights, self._params = slots, weights, var_list

    def _slot(self, name, index):
        return self._slots[name][index]

    # -- steps ---------------------------------------------------------------------
    def _clip(self, grad):
        if hasattr(self, "clipnorm"):
            grad = tf.clip_by_norm(grad, self.clipnorm)
        if hasattr(self, "clipvalue"):
            grad = tf.clip_by_value(grad, -self.clipvalue, self.clipvalue)
        return grad

    def apply_gradients(self, grads_and_vars):
        """One update, the one `get_updates` builds, for the given (gradient, variable) pairs."""
        grads_and_vars = list(grads_and_vars)
        missing = [state_io.variable_name(v) for g, v in grads_and_vars if g is None]
        if missing:
            raise ValueError("An operation has `None` for gradient (variables %s). Please make sure that all "
                             "of your ops have a gradient defined (i.e. are differentiable)." % missing)
        params = [v for _, v in grads_and_vars]
        self.build(params)
        grads = [_dense(self._clip(g)) for g, _ in grads_and_vars]
        self._apply(params, grads)

    def minimize(self, loss, var_list, grad_loss=None, tape=None):
        """`OptimizerV2.minimize`'s signature: a callable loss, or a tensor with its `tape`."""
        grads, var_list = gradients_of(loss, var_list, tape, grad_loss)
        self.apply_gradients(zip(grads, var_list))

    def _apply(self, params, grads):
        raise NotImplementedError

    def _uses_iterations(self):
        """Whether a step depends on the counter (bias correction, schedule or `decay`)."""
        return True

    def _decayed_lr(self):
        """`lr / (1 + decay * iterations)` with the counter as it is now (subclasses decide before or after
        the step's increment, as their graph-mode originals ended up doing)."""
        lr = self.lr
        if self.initial_decay > 0:
            lr = lr * (1.0 / (1.0 + self.decay * tf.cast(self.iterations, self.decay.dtype)))
        return lr

    @staticmethod
    def _assign(param, new_value):
        constraint = getattr(param, "constraint", None)
        param.assign(constraint(new_value) if constraint is not None else new_value)

    # -- weights -------------------------------------------------------------------
    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        assign_weight_list(self.weights, weights)

    # -- config --------------------------------------------------------------------
    def get_config(self):
        config = {}
        for key in ("clipnorm", "clipvalue"):
            if hasattr(self, key):
                config[key] = getattr(self, key)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @staticmethod
    def _float(variable):
        return float(variable.numpy())

    # -- OptimizerState ------------------------------------------------------------
    def to_state(self):
        """This optimizer's state as an `OptimizerState` (generation `v1`, canonical names)."""
        return state_io.export_v1(self)

    @classmethod
    def from_state(cls, state, **overrides):
        """A new optimizer of this class configured from `state`, its tensors restored once built.

        overrides: constructor arguments that replace the state's (e.g. `lr=`).
        """
        opt = cls(**state_io.v1_constructor_args(cls, state, overrides))
        opt.restore_state(state)
        return opt

    def restore_state(self, state, var_list=None):
        """Put `state` (same algorithm) into this optimizer, now if its slots exist, else once they do.

        var_list: the model's trainable variables in the state's order; builds the slots now and
        confirms build order where names cannot decide. Returns the report dict once attached.
        """
        state_io.check_algorithm(self, state)
        if var_list is not None:
            self.build(var_list)
            self.restore_report = state_io.attach_to_v1(self, state, list(var_list), confirmed=True)
            return self.restore_report
        if self._params is not None:
            self.restore_report = state_io.attach_to_v1(self, state, self._params, confirmed=False)
            return self.restore_report
        self._pending_state = state
        return None
