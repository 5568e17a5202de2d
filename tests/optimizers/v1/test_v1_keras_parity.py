"""Keras v1 parity: ours (eager) against the real `optimizer_v1` classes (graph mode), >= 20 steps (Nadam 50).

Every case uses non-default hyperparameters on a model with dense and sparse (`IndexedSlices`)
gradients. Required: max |difference| <= 1e-6 after every step, `get_weights()` equal to the
real list element for element (count, order, shape, dtype, value), and the same `get_config()`.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate.optimizers import v1
from v1_reference import batches, initial_values, loss_fn, run_keras_v1

STEPS = 20
TOL = 1e-6

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.7, nesterov=True, decay=0.05, clipvalue=0.4)),
    ("SGD", dict(lr=0.1, clipnorm=0.5)),
    ("RMSprop", dict(lr=0.01, rho=0.8, epsilon=1e-6, decay=0.1)),
    ("Adagrad", dict(lr=0.05, epsilon=1e-6, decay=0.02, clipnorm=1.0)),
    ("Adadelta", dict(lr=0.5, rho=0.8, epsilon=1e-6, decay=0.03)),
    ("Adam", dict(lr=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6, decay=0.05)),
    ("Adam", dict(lr=0.01, beta_1=0.85, beta_2=0.9, amsgrad=True, clipvalue=0.3)),
    ("Adamax", dict(lr=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6, decay=0.05)),
    ("Nadam", dict(lr=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6, schedule_decay=0.01)),
    # Nadam's warming schedule over longer runs (issue 12 reported a 6.4e-2 gap after 25 steps, which
    # we could not reproduce: ours is bit-equal to the real class over 50 steps here, with resource and
    # ref variables, one or several executor threads, ours eager or in a tf.function, and also against
    # tf_keras `train_on_batch` with eager execution disabled), defaults included.
    ("Nadam", dict()),
    ("Nadam", dict(lr=0.005, schedule_decay=0.004, clipnorm=1.0)),
    ("Nadam", dict(lr=0.02, beta_1=0.95, beta_2=0.99, epsilon=1e-5, schedule_decay=0.05)),
]
# cases run for more steps than STEPS (the schedule's product only drifts over long runs)
LONG_RUNS = {"Nadam": 50}


def _id(case):
    return case[0] + "-" + "-".join("%s=%s" % kv for kv in sorted(case[1].items()))


def run_ours(class_name, kwargs, steps):
    params = [tf.Variable(v, name=n) for (n, _), v in zip(__import__("v1_reference").SHAPES, initial_values())]
    opt = getattr(v1, class_name)(**kwargs)
    x, ids, y = batches(steps)
    trajectory = []
    for i in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(params, x[i], ids[i], y[i])
        grads = tape.gradient(loss, params)
        assert isinstance(grads[2], tf.IndexedSlices)  # the sparse path is exercised
        opt.apply_gradients(zip(grads, params))
        trajectory.append([p.numpy() for p in params])
    return trajectory, opt


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_trajectory_weights_and_config_match_the_real_class(case):
    class_name, kwargs = case
    steps = LONG_RUNS.get(class_name, STEPS)
    got_traj, opt = run_ours(class_name, kwargs, steps)
    # Keras v1 Adam/Adamax/Nadam read `iterations` for `decay` with no control dependency on its
    # increment: a race in the real graph. The single-threaded executor almost always reads after the
    # increment (what we implement, and what wrote the fixtures); under heavy load it was seen once
    # to read before (3.7e-4 apart). Such a reference run is repeated, at most twice more.
    racy = class_name in ("Adam", "Adamax", "Nadam") and kwargs.get("decay")
    for _ in range(3 if racy else 1):
        want_traj, want_weights, want_config = run_keras_v1(class_name, kwargs, steps)
        worst = max(float(np.max(np.abs(g - w))) for gs, ws in zip(got_traj, want_traj) for g, w in zip(gs, ws))
        if worst <= TOL:
            break
    assert len(got_traj) == len(want_traj) == steps
    assert worst <= TOL, "max |ours - real| over %d steps = %g" % (steps, worst)
    moved = max(float(np.max(np.abs(g - w))) for g, w in zip(got_traj[-1], initial_values()))
    assert moved > 1e-2, "the parameters barely moved; the comparison would prove nothing"

    got_weights = opt.get_weights()
    assert len(got_weights) == len(want_weights)
    for i, (g, w) in enumerate(zip(got_weights, want_weights)):
        assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype, w.dtype)
        assert np.max(np.abs(g.astype(np.float64) - w)) <= TOL, (i, np.max(np.abs(g - w)))
    assert opt.get_config() == want_config


def test_weight_lists_have_the_v1_content():
    """The exceptional v1 layouts, spelled out: no iterations, (1,) vhat dummies, m_schedule second."""
    shapes = [s for _, s in __import__("v1_reference").SHAPES]
    expectations = {
        "Adagrad": shapes, "RMSprop": shapes, "Adadelta": shapes + shapes,
        "Adam": [()] + shapes + shapes + [(1,)] * 5, "Nadam": [(), ()] + shapes + shapes,
        "SGD": [()] + shapes, "Adamax": [()] + shapes + shapes,
    }
    for name, want in expectations.items():
        _, opt = run_ours(name, {}, 1)
        assert [w.shape for w in opt.get_weights()] == [tuple(s) for s in want], name
    _, opt = run_ours("Nadam", {}, 3)
    assert opt.weights[1] is opt.m_schedule and 0 < opt.get_weights()[1] < 1
    _, opt = run_ours("Adam", {"amsgrad": True}, 1)
    assert [w.shape for w in opt.get_weights()][-5:] == [tuple(s) for s in shapes]
