"""The v2 generation: `tf.keras.optimizers.legacy.*` (OptimizerV2) and tfa's LazyAdam.

`serialize`, `deserialize` and `get` follow `keras.optimizers` of that era: names are
case-insensitive, configs are `{"class_name", "config"}` dicts.
"""

from ...errors import UnknownOptimizerError
from .._common import get_optimizer
from .base import OptimizerV2
from .optimizers import ALL, SGD, Adadelta, Adagrad, Adam, Adamax, Ftrl, LazyAdam, Nadam, RMSprop, RMSProp

Optimizer = OptimizerV2
CLASSES = {cls.__name__.lower(): cls for cls in ALL}
CLASSES.update({"rmsprop": RMSprop, "addons>lazyadam": LazyAdam})

__all__ = ["Optimizer", "OptimizerV2", "SGD", "Adam", "LazyAdam", "Adagrad", "Adadelta", "Adamax", "Nadam",
           "RMSprop", "RMSProp", "Ftrl", "serialize", "deserialize", "get"]


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config, custom_objects=None):
    """An optimizer from `{"class_name": ..., "config": {...}}` (class name case-insensitive)."""
    custom_objects = dict(custom_objects or {})
    name = config["class_name"]
    cls = custom_objects.get(name) or CLASSES.get(name.lower()) or CLASSES.get(name.split(">")[-1].lower())
    if cls is None:
        raise UnknownOptimizerError("unknown v2 optimizer %r; expected one of %s" % (name, ", ".join(
            sorted(c.__name__ for c in ALL))))
    return cls.from_config(dict(config.get("config", {})), custom_objects=custom_objects)


def get(identifier):
    """An optimizer from an instance, a name (`"adam"`), a serialized config dict, or a
    `tf.compat.v1.train.Optimizer` (wrapped in our v1 `TFOptimizer`)."""
    return get_optimizer(identifier, OptimizerV2, deserialize)
