"""The DTensor SGD (`tf.keras.dtensor.experimental.optimizers.SGD`).

The 2.11+ SGD whose variables live on a `tf.experimental.dtensor` mesh: the iteration
counter and learning rate are replicated scalars, and each slot is created with
`zeros_like(model variable)`, so it takes that variable's layout. Gradient aggregation is
skipped: DTensor reduces replicated gradients in the backward pass.

The signature is the seed's (TF 2.11): `gradients_clip_option` (anything with `clipnorm`,
`clipvalue`, `global_clipnorm` attributes or keys) and `ema_option` (`use_ema`,
`ema_momentum`, `ema_overwrite_frequency`); the later flat keywords (`clipnorm=`, ...)
are accepted too.
"""

from .optimizers import SGD as _SGD

CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")
EMA_KEYS = ("use_ema", "ema_momentum", "ema_overwrite_frequency")


def _option(option, keys):
    if option is None:
        return {}
    if isinstance(option, dict):
        return {k: option[k] for k in keys if k in option}
    return {k: getattr(option, k) for k in keys if hasattr(option, k)}


class SGD(_SGD):
    """SGD (optionally Nesterov momentum) whose variables are DTensor variables on `mesh`."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, amsgrad=False, gradients_clip_option=None,
                 ema_option=None, jit_compile=False, name="SGD", mesh=None, **kwargs):
        if mesh is None:
            raise ValueError("The DTensor SGD needs a `mesh` (tf.experimental.dtensor.Mesh); received mesh=None")
        del amsgrad  # accepted and ignored by the reference too
        kwargs.update(_option(gradients_clip_option, CLIP_KEYS))
        kwargs.update(_option(ema_option, EMA_KEYS))
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name,
                         jit_compile=jit_compile, mesh=mesh, **kwargs)

    @property
    def mesh(self):
        return self._mesh
