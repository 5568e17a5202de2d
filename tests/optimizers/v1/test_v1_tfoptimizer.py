"""TFOptimizer against the real `tf.compat.v1.train` optimizers, and both TF1 checkpoint styles.

* name-based: the real optimizer trains 10 steps in graph mode and saves with `Saver`; ours
  restores the file in eager mode through `namebased_variables()` and trains 10 more. Both must
  equal the real optimizer's uninterrupted 20 steps, and the other way round (ours writes,
  the real graph-mode optimizer restores and continues).
* object-based: `tf.train.Checkpoint` written by ours is restored by Keras' own TFOptimizer
  around a real TF1 optimizer (same object graph) and by a bare TF1 optimizer (`ours.optimizer`
  layout), and the other way round; continuations must agree.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate.errors import MappingError
from keras_opt_migrate.optimizers import v1
from v1_reference import SHAPES, batches, initial_values, loss_fn, run_tf1

TOL = 1e-6
HALF, STEPS = 10, 20

CASES = [
    ("GradientDescentOptimizer", dict(learning_rate=0.05)),
    ("MomentumOptimizer", dict(learning_rate=0.02, momentum=0.7, use_nesterov=True)),
    ("AdamOptimizer", dict(learning_rate=0.01, beta1=0.8, beta2=0.95, epsilon=1e-6)),
    ("AdagradOptimizer", dict(learning_rate=0.05, initial_accumulator_value=0.2)),
    ("AdadeltaOptimizer", dict(learning_rate=0.5, rho=0.8, epsilon=1e-6)),
    ("RMSPropOptimizer", dict(learning_rate=0.01, decay=0.8, momentum=0.5, epsilon=1e-6, centered=True)),
    ("FtrlOptimizer", dict(learning_rate=0.05, learning_rate_power=-0.6, initial_accumulator_value=0.2,
                           l1_regularization_strength=0.01, l2_regularization_strength=0.02)),
    ("ProximalGradientDescentOptimizer", dict(learning_rate=0.05, l1_regularization_strength=0.01,
                                              l2_regularization_strength=0.02)),
    ("ProximalAdagradOptimizer", dict(learning_rate=0.05, initial_accumulator_value=0.2,
                                      l1_regularization_strength=0.01, l2_regularization_strength=0.02)),
]


def _id(case):
    return case[0].replace("Optimizer", "")


def make_params(values=None):
    return [tf.Variable(v, name=n) for (n, _), v in zip(SHAPES, values or initial_values())]


def train(opt, params, start, stop):
    x, ids, y = batches(STEPS)
    trajectory = []
    for i in range(start, stop):
        with tf.GradientTape() as tape:
            loss = loss_fn(params, x[i], ids[i], y[i])
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
        trajectory.append([p.numpy() for p in params])
    return trajectory


def worst(a, b):
    return max(float(np.max(np.abs(x - y))) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def saver_for(opt, params):
    return tf.compat.v1.train.Saver(var_list=dict({n: p for (n, _), p in zip(SHAPES, params)},
                                                  **opt.namebased_variables(params)))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_parity_and_namebased_checkpoints_both_ways(case, tmp_path):
    name, kwargs = case
    real_traj, real_state, real_step = run_tf1(name, kwargs, STEPS)
    assert real_step == STEPS

    # ours alone, 20 steps, eager
    ours = v1.TFOptimizer(getattr(tf.compat.v1.train, name)(**kwargs))
    params = make_params()
    ours_traj = train(ours, params, 0, STEPS)
    assert worst(ours_traj, real_traj) <= TOL
    assert worst([ours_traj[-1]], [initial_values()]) > 1e-2
    ours_keys = ours.namebased_variables(params)
    assert sorted(ours_keys) == sorted(list(real_state) + ["global_step"])
    for key, value in real_state.items():  # accumulators grow to ~30: float32 rounding is relative there
        np.testing.assert_allclose(ours_keys[key].numpy(), value, rtol=TOL, atol=TOL, err_msg=key)
    assert int(ours.iterations.numpy()) == STEPS

    # real (graph, Saver) 10 steps -> ours restores the name-based file -> 10 more
    path = str(tmp_path / "real" / "model.ckpt")
    run_tf1(name, kwargs, HALF, saver_path=path)
    ours = v1.TFOptimizer(getattr(tf.compat.v1.train, name)(**kwargs))
    params = make_params()
    ours.build(params)
    saver_for(ours, params).restore(None, path)
    assert int(ours.iterations.numpy()) == HALF
    assert worst(train(ours, params, HALF, STEPS), real_traj[HALF:]) <= TOL

    # ours 10 steps -> Saver (eager, our keys) -> real graph-mode optimizer restores -> 10 more
    path = str(tmp_path / "ours" / "model.ckpt")
    ours = v1.TFOptimizer(getattr(tf.compat.v1.train, name)(**kwargs))
    params = make_params()
    train(ours, params, 0, HALF)
    os.makedirs(os.path.dirname(path))
    saver_for(ours, params).save(None, path)
    resumed, _, step = run_tf1(name, kwargs, STEPS, start=HALF, restore_path=path)
    assert step == STEPS
    assert worst(resumed, real_traj[HALF:]) <= TOL


@pytest.mark.parametrize("case", [CASES[2], CASES[5], CASES[6]], ids=_id)
def test_objectbased_checkpoints_both_ways(case, tmp_path):
    from tf_keras.src.optimizers.optimizer_v1 import TFOptimizer as KerasTFOptimizer

    name, kwargs = case
    make_tf1 = lambda: getattr(tf.compat.v1.train, name)(**kwargs)  # noqa: E731
    reference = train(v1.TFOptimizer(make_tf1()), make_params(), 0, 6)

    pairs = [  # (writer wrapper, reader wrapper, what goes into the checkpoint)
        (lambda: v1.TFOptimizer(make_tf1()), lambda: KerasTFOptimizer(make_tf1()), lambda o: o),
        (lambda: KerasTFOptimizer(make_tf1()), lambda: v1.TFOptimizer(make_tf1()), lambda o: o),
        (lambda: v1.TFOptimizer(make_tf1()), lambda: v1.TFOptimizer(make_tf1()), lambda o: o.optimizer),
    ]
    for k, (writer, reader, tracked) in enumerate(pairs):
        opt, params = writer(), make_params()
        train(opt, params, 0, 3)
        path = tf.train.Checkpoint(vars=params, optimizer=tracked(opt)).write(str(tmp_path / ("c%d" % k)))
        opt2, params2 = reader(), make_params([np.zeros_like(v) for v in initial_values()])
        status = tf.train.Checkpoint(vars=params2, optimizer=tracked(opt2)).read(path)
        continued = train(opt2, params2, 3, 6)  # slots are created here and take the checkpointed values
        status.assert_consumed()
        assert worst(continued, reference[3:]) <= TOL, k
        if tracked(opt) is opt:
            assert int(opt2.iterations.numpy()) == 6


def test_bare_tf1_checkpoint_restores_into_ours_from_state(tmp_path):
    """A real TF1 optimizer's checkpoint (no global_step) -> OptimizerState -> ours; iterations from beta powers."""
    kwargs = dict(learning_rate=0.01, beta1=0.8, beta2=0.95, epsilon=1e-6)
    real, params = tf.compat.v1.train.AdamOptimizer(**kwargs), make_params()
    reference = train(v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs)), make_params(), 0, 6)
    train(real, params, 0, 3)
    ours = v1.TFOptimizer(real)  # a view on the real optimizer, only to export its state
    ours.build(params)
    state = ours.to_state()
    state.iterations = None  # what a TF1 file without global_step gives
    assert state.extra["beta1_power"] == pytest.approx(0.8 ** 4)

    restored = v1.TFOptimizer.from_state(state)
    params2 = make_params([p.numpy() for p in params])
    assert restored.restore_report is None  # held until the slots exist
    continued = train(restored, params2, 3, 6)
    assert restored.restore_report["iterations"] == 3 and restored.restore_report["iterations_from"] == "beta_power"
    assert worst(continued, reference[3:]) <= TOL


def test_iterations_give_beta_powers_and_refusals():
    kwargs = dict(learning_rate=0.01, beta1=0.8, beta2=0.95)
    src = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs))
    params = make_params()
    train(src, params, 0, 4)
    state = src.to_state()
    del state.extra["beta1_power"], state.extra["beta2_power"]
    dst = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs))
    report = dst.restore_state(state, var_list=make_params())
    assert report["iterations"] == 4
    assert dst.non_slot_variables()["beta1_power"].numpy() == pytest.approx(0.8 ** 5, rel=1e-6)
    assert dst.non_slot_variables()["beta2_power"].numpy() == pytest.approx(0.95 ** 5, rel=1e-6)

    # a different algorithm's state, and a state whose variables cannot be told apart, are refused
    with pytest.raises(Exception, match="algorithms differ"):
        v1.TFOptimizer(tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)).restore_state(state)
    twins = [tf.Variable(tf.zeros((3,)), name="a"), tf.Variable(tf.zeros((3,)), name="b")]
    src2 = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs))
    src2.apply_gradients([(tf.ones((3,)), twins[0]), (2 * tf.ones((3,)), twins[1])])
    other = [tf.Variable(tf.zeros((3,)), name="c"), tf.Variable(tf.zeros((3,)), name="d")]
    dst2 = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs))
    dst2.restore_state(src2.to_state())
    with pytest.raises(MappingError, match="ambiguous"):
        dst2.apply_gradients([(tf.ones((3,)), other[0]), (tf.ones((3,)), other[1])])
    # confirmed by var_list: attached by build order
    dst3 = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(**kwargs))
    assert dst3.restore_state(src2.to_state(), var_list=other)["method"] == "build_order"
    assert np.allclose(dst3.slots(other[1])["momentum"].numpy(), src2.slots(twins[1])["momentum"].numpy())


def test_config_round_trip():
    ours = v1.TFOptimizer(tf.compat.v1.train.FtrlOptimizer(0.05, l1_regularization_strength=0.01, beta=0.1))
    again = v1.TFOptimizer.from_config(ours.get_config())
    assert again.get_config() == ours.get_config()
    assert ours.get_config()["optimizer"]["config"]["beta"] == 0.1
