"""Shared pieces of the step-time benchmarks: a >= 10M-parameter model and a timer that
alternates the contenders round by round (so load from other processes hits all of them
alike) and reports the median."""

import time

import numpy as np
import tensorflow as tf

WIDTH = 2048
LAYERS = 3  # 3 x (2048 x 2048 + 2048) = 12.6M parameters


def initial_values(seed=0):
    """[(name, array)] of the model: LAYERS x (kernel WIDTH x WIDTH, bias WIDTH)."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(LAYERS):
        out.append(("dense_%d/kernel" % i, rng.randn(WIDTH, WIDTH).astype("float32") * 0.01))
        out.append(("dense_%d/bias" % i, np.zeros(WIDTH, "float32")))
    return out


def parameter_count():
    return sum(v.size for _, v in initial_values())


def make_variables(seed=0):
    return [tf.Variable(value, name=name) for name, value in initial_values(seed)]


def make_gradients(variables, seed=1):
    rng = np.random.RandomState(seed)
    return [tf.constant(rng.randn(*v.shape).astype("float32") * 0.01) for v in variables]


def make_step(make_optimizer, variables_fn=make_variables, warmup=3):
    """A tf.function running one `apply_gradients` of fixed gradients, built and warmed up."""
    variables = variables_fn()
    grads = make_gradients(variables)
    opt = make_optimizer()

    @tf.function
    def step():
        opt.apply_gradients(zip(grads, variables))
        return tf.convert_to_tensor(opt.iterations)

    for _ in range(warmup):
        step()
    return step


def time_steps(step, steps):
    """Mean wall time per call of `step()` over `steps` calls, in milliseconds."""
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    np.asarray(out)  # wait for the last step
    return (time.perf_counter() - start) / steps * 1000.0


def compare(timers, rounds=9, steps=10):
    """{name: [ms per step, one per round]}: every round times each contender once
    (`timers[name](steps)`), in an order rotated from round to round."""
    names = list(timers)
    results = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(timers[name](steps))
    return results


def median(values):
    return float(np.median(values)) if values else float("nan")


def bench(make_optimizer, variables_fn=make_variables, rounds=5, steps=20):
    """Median ms per step of one optimizer alone (no alternation)."""
    step = make_step(make_optimizer, variables_fn)
    return median(compare({"x": lambda n: time_steps(step, n)}, rounds, steps)["x"])


def table(rows, headers):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
