"""Shared problems for optimizer parity tests: the same gradients through ours and the reference."""

import numpy as np
import tensorflow as tf

STEPS = 20
SPARSE_INDICES = [0, 2, 2, 5, 0, 7]  # duplicate indices; rows 8..11 never touched


def gradient_stream(seed, steps=STEPS, sparse=False):
    """[(initial values), [per-step gradients]] with a dense (5,4) kernel, a (4,) bias and a (12,3) table."""
    rng = np.random.RandomState(seed)
    init = [rng.randn(5, 4).astype("float32"), rng.randn(4).astype("float32"), rng.randn(12, 3).astype("float32")]
    steps_out = []
    for _ in range(steps):
        g = [rng.randn(5, 4).astype("float32"), rng.randn(4).astype("float32")]
        if sparse:
            g.append(("sparse", rng.randn(len(SPARSE_INDICES), 3).astype("float32")))
        else:
            g.append(rng.randn(12, 3).astype("float32"))
        steps_out.append(g)
    return init, steps_out


def to_tensor(g):
    if isinstance(g, tuple):
        return tf.IndexedSlices(tf.constant(g[1]), tf.constant(SPARSE_INDICES), tf.constant([12, 3]))
    return tf.constant(g)


def make_vars(init):
    return [tf.Variable(v, name=n) for v, n in zip(init, ("kernel", "bias", "emb"))]


def run(optimizer, init, steps, use_function=False, between=None):
    """Apply every step's gradients; returns (variables, optimizer)."""
    variables = make_vars(init)

    def step(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if use_function:
        step = tf.function(step)
    for t, grads in enumerate(steps):
        if between is not None:
            between(optimizer, t)
        step([to_tensor(g) for g in grads])
    return variables, optimizer


def max_abs_diff(a, b):
    assert len(a) == len(b), "lists differ in length: %d != %d" % (len(a), len(b))
    out = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, "shape %s != %s" % (x.shape, y.shape)
        assert x.dtype == y.dtype, "dtype %s != %s" % (x.dtype, y.dtype)
        if x.size:
            out = max(out, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return out


def values(variables):
    return [v.numpy() for v in variables]
