"""Optimizer algorithms: their state as data (`registry`, one module per algorithm) and our
implementations per generation (`v2`, `experimental`), imported on demand because they need
TensorFlow.
"""

import inspect

# Our implementation of a state written by a generation we do not implement.
NEAREST_GENERATION = {"v1": "v2", "tf1": "v2", "v2": "v2", "experimental": "experimental", "keras3": "experimental"}


def _classes(generation):
    if generation == "v2":
        from . import v2
        return v2.ALL
    if generation == "experimental":
        from . import experimental
        return experimental.ALL
    from ..errors import UnknownOptimizerError
    raise UnknownOptimizerError("no optimizers of generation %r here; expected 'v2' or 'experimental'" % generation)


def optimizer_class(algorithm, generation):
    """Our class for a canonical algorithm name (or alias) in `generation`."""
    from ..errors import UnknownOptimizerError
    from .registry import get_spec
    spec = get_spec(algorithm)
    for cls in _classes(generation):
        if cls.SPEC is spec:
            return cls
    raise UnknownOptimizerError("%s has no %s implementation here; available: %s" % (
        spec.name, generation, ", ".join(sorted(c.SPEC.name for c in _classes(generation)))))


def _accepted_config(cls, config):
    """The part of a (possibly other-generation) config that `cls` accepts."""
    config = dict(config or {})
    if "lr" in config and "learning_rate" not in config:
        config["learning_rate"] = config.pop("lr")
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    if cls.GENERATION == "experimental":
        names |= {"weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
                  "ema_overwrite_frequency", "jit_compile"}
    else:
        names |= {"clipnorm", "clipvalue", "global_clipnorm", "decay"}
    names.discard("self")
    return {k: v for k, v in config.items() if k in names and v is not None}


def from_state(state, generation=None):
    """Our optimizer for `state`'s algorithm, configured from `state.config`, holding the state.

    generation: 'v2' or 'experimental'; default: the state's own generation (v1/TF1 states get
    the v2 class, Keras 3 states the 2.11+ class). The state is attached when the optimizer
    creates its slots (the first `apply_gradients`, or `restore_into(opt, state, var_list)`),
    by variable name or else by build order and shape.
    """
    from ..restore import restore_into
    if generation in ("v1", "tf1"):  # Keras optimizer_v1 classes / TFOptimizer (optimizers.v1)
        from . import v1
        return v1.from_state(state, generation)
    generation = generation or NEAREST_GENERATION.get(state.generation, state.generation)
    cls = optimizer_class(state.optimizer, generation)
    optimizer = cls.from_config(_accepted_config(cls, state.config))
    restore_into(optimizer, state)
    return optimizer
