"""Learning-rate schedules with the Keras arithmetic, so a run resumes with the same rates.

Both optimizer generations accept any schedule object: ours, tf_keras' or Keras 3's (duck
typed: callable on a step and has `get_config`). The classes here re-create the common
tf_keras schedules from their serialized config without importing Keras; a config naming
another class needs `custom_objects`.
"""

import math

import tensorflow as tf

from ..errors import KerasOptMigrateError

SCHEDULE_MODULE = "keras.optimizers.schedules"


class LearningRateSchedule:
    """Base class: `schedule(step) -> learning rate tensor`."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _StepDecay(LearningRateSchedule):
    """The schedules driven by `p = step / decay_steps` (floored if staircase); `_decay` is the formula."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or type(self).__name__) as name:
            initial = tf.convert_to_tensor(self.initial_learning_rate, name="initial_learning_rate")
            dtype = initial.dtype
            p = tf.cast(step, dtype) / tf.cast(self.decay_steps, dtype)
            if self.staircase:
                p = tf.floor(p)
            return self._decay(initial, tf.cast(self.decay_rate, dtype), p, name)

    def _decay(self, initial, rate, p, name):
        raise NotImplementedError

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_StepDecay):
    """`initial_learning_rate * decay_rate ** (step / decay_steps)` (floored if staircase)."""

    def _decay(self, initial, rate, p, name):
        return tf.multiply(initial, tf.pow(rate, p), name=name)


class InverseTimeDecay(_StepDecay):
    """`initial_learning_rate / (1 + decay_rate * step / decay_steps)`."""

    def _decay(self, initial, rate, p, name):
        denom = tf.add(tf.cast(tf.constant(1), initial.dtype), tf.multiply(rate, p))
        return tf.divide(initial, denom, name=name)


class PiecewiseConstantDecay(LearningRateSchedule):
    """`values[i]` for `boundaries[i-1] < step <= boundaries[i]`."""

    def __init__(self, boundaries, values, name=None):
        if len(boundaries) != len(values) - 1:
            raise KerasOptMigrateError(
                "PiecewiseConstantDecay needs len(boundaries) == len(values) - 1. Received: %d boundaries, %d values"
                % (len(boundaries), len(values)))
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "PiecewiseConstant"):
            step = tf.convert_to_tensor(step)
            bounds = [tf.cast(tf.convert_to_tensor(b), step.dtype) for b in self.boundaries]
            values = [tf.convert_to_tensor(v) for v in self.values]
            pairs = [(step <= bounds[0], lambda: values[0]), (step > bounds[-1], lambda: values[-1])]
            for low, high, v in zip(bounds[:-1], bounds[1:], values[1:-1]):
                pairs.append(((step > low) & (step <= high), lambda v=v: v))
            return tf.case(pairs, lambda: values[0], exclusive=True)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay to `alpha * initial_learning_rate` over `decay_steps` (no warmup)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name=None, warmup_target=None, warmup_steps=0):
        if warmup_target is not None:
            raise KerasOptMigrateError("CosineDecay with warmup is not implemented here; pass the schedule object "
                                       "itself (tf_keras or Keras 3) instead of its config")
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "CosineDecay"):
            initial = tf.convert_to_tensor(self.initial_learning_rate, name="initial_learning_rate")
            dtype = initial.dtype
            decay_steps = tf.cast(self.decay_steps, dtype)
            fraction = tf.minimum(tf.cast(step, dtype), decay_steps) / decay_steps
            cosine = 0.5 * (1.0 + tf.cos(tf.constant(math.pi, dtype=dtype) * fraction))
            return tf.multiply(initial, (1 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": None, "warmup_steps": 0}


SCHEDULES = {c.__name__: c for c in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay)}


def is_schedule(value):
    """True for a learning-rate schedule object (ours, tf_keras', Keras 3's)."""
    if isinstance(value, LearningRateSchedule):
        return True
    if isinstance(value, (tf.Variable, tf.Tensor)) or not callable(value) or not hasattr(value, "get_config"):
        return False
    return any(c.__name__ == "LearningRateSchedule" for c in type(value).__mro__)


def serialize(schedule):
    """The Keras serialized form `{"module", "class_name", "config", "registered_name"}`."""
    return {"module": SCHEDULE_MODULE, "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config, custom_objects=None):
    """A schedule from its serialized dict (new `module`/`class_name` or legacy `class_name` form)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasOptMigrateError("a serialized schedule must be a dict with `class_name`; received %r" % (config,))
    name = config["class_name"]
    cls = (custom_objects or {}).get(name) or SCHEDULES.get(name.split(">")[-1])
    if cls is None:
        raise KerasOptMigrateError(
            "unknown learning-rate schedule %r; expected one of %s, or pass it in custom_objects"
            % (name, ", ".join(sorted(SCHEDULES))))
    inner = dict(config.get("config", {}))
    return cls.from_config(inner) if hasattr(cls, "from_config") else cls(**inner)
