"""The 2.11+ generation: `tf.keras.optimizers.*` of tf_keras (Keras 2.11 to 2.21), plus
tensorflow-recommenders' ClippyAdagrad and (in `dtensor`) the DTensor SGD."""

from ...errors import UnknownOptimizerError
from .._common import get_optimizer
from .base import Optimizer
from .optimizers import (ALL, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, ClippyAdagrad, Ftrl, Lion,
                         Nadam, RMSprop)

CLASSES = {cls.__name__.lower(): cls for cls in ALL}

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Adafactor", "Ftrl", "Nadam",
           "RMSprop", "Lion", "ClippyAdagrad", "serialize", "deserialize", "get"]


def serialize(optimizer):
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__,
            "config": optimizer.get_config(), "registered_name": None}


def deserialize(config, custom_objects=None):
    """An optimizer from `{"class_name": ..., "config": {...}}` (`Custom>` prefixes accepted)."""
    custom_objects = dict(custom_objects or {})
    name = config["class_name"]
    cls = custom_objects.get(name) or CLASSES.get(name.split(">")[-1].lower())
    if cls is None:
        raise UnknownOptimizerError("unknown 2.11+ optimizer %r; expected one of %s" % (
            name, ", ".join(sorted(c.__name__ for c in ALL))))
    return cls.from_config(dict(config.get("config", {})), custom_objects=custom_objects)


def get(identifier):
    """An optimizer from an instance, a name, a serialized config dict, or a `tf.compat.v1.train.Optimizer`
    (wrapped in our v1 `TFOptimizer`)."""
    return get_optimizer(identifier, Optimizer, deserialize)
