"""A tf_keras legacy Adam state with random weights and slots, written by real tf_keras.

Shared by the streaming tests, their memory worker and the bundle-writer tests: a Sequential
model of Dense layers, the slots created without a training step and filled from one seeded
generator (per variable: weight, m, v), saved with `tf.train.Checkpoint` and, on request, as a
full-model `.h5`.
"""

import os

import numpy as np


def write_legacy_adam(directory, input_width, layers, *, seed, iterations, h5=False):
    """Write `directory`/src.ckpt (and m.h5 with `h5`); `layers` is [(name, units)]. Returns the model."""
    import tensorflow as tf
    import tf_keras
    model = tf_keras.Sequential([tf_keras.Input((input_width,))]
                                + [tf_keras.layers.Dense(units, name=name) for name, units in layers])
    opt = tf_keras.optimizers.legacy.Adam()
    opt._create_all_weights(model.trainable_variables)
    rng = np.random.default_rng(seed)
    for var in model.trainable_variables:
        shape = tuple(var.shape)
        var.assign(rng.standard_normal(shape, dtype=np.float32))
        opt.get_slot(var, "m").assign(rng.standard_normal(shape, dtype=np.float32))
        opt.get_slot(var, "v").assign(rng.random(shape, dtype=np.float32))
    opt.iterations.assign(iterations)
    tf.train.Checkpoint(model=model, optimizer=opt).write(os.path.join(str(directory), "src.ckpt"))
    if h5:
        model.compile(optimizer=opt, loss="mse")
        model.save(os.path.join(str(directory), "m.h5"))
    return model
