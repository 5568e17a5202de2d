"""Shared pieces of the step-time benchmarks: a >= 10M-parameter model and a timer."""

import time

import numpy as np
import tensorflow as tf

WIDTH = 2048
LAYERS = 3  # 3 x (2048 x 2048 + 2048) = 12.6M parameters


def make_variables(seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for i in range(LAYERS):
        out.append(tf.Variable(rng.randn(WIDTH, WIDTH).astype("float32") * 0.01, name="dense_%d/kernel" % i))
        out.append(tf.Variable(np.zeros(WIDTH, "float32"), name="dense_%d/bias" % i))
    return out


def make_gradients(variables, seed=1):
    rng = np.random.RandomState(seed)
    return [tf.constant(rng.randn(*v.shape).astype("float32") * 0.01) for v in variables]


def time_steps(apply, warmup=3, steps=20, repeats=3):
    """Median over `repeats` of the mean time per call of `apply()`, in milliseconds."""
    for _ in range(warmup):
        apply()
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = apply()
        if out is not None and hasattr(out, "numpy"):
            out.numpy()
        results.append((time.perf_counter() - start) / steps * 1000.0)
    return float(np.median(results))


def bench(make_optimizer, variables_fn=make_variables):
    variables = variables_fn()
    grads = make_gradients(variables)
    opt = make_optimizer()

    @tf.function
    def step():
        opt.apply_gradients(zip(grads, variables))
        return opt.iterations.read_value() if hasattr(opt.iterations, "read_value") else opt.iterations

    return time_steps(step)


def table(rows, headers):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
