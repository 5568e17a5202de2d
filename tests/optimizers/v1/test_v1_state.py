"""Keras v1 classes <-> OptimizerState: round trips, held restores, refusals, config."""

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate.errors import KerasOptMigrateError, MappingError
from keras_opt_migrate.optimizers import v1
from keras_opt_migrate.restore import restore_into
from v1_reference import SHAPES, batches, initial_values, loss_fn

KWARGS = {
    "SGD": dict(lr=0.05, momentum=0.7, nesterov=True, decay=0.05),
    "RMSprop": dict(lr=0.01, rho=0.8, decay=0.1),
    "Adagrad": dict(lr=0.05, decay=0.02),
    "Adadelta": dict(lr=0.5, rho=0.8, decay=0.03),
    "Adam": dict(lr=0.01, beta_1=0.8, beta_2=0.95, amsgrad=True, decay=0.05),
    "Adamax": dict(lr=0.01, beta_1=0.8, decay=0.05),
    "Nadam": dict(lr=0.01, beta_1=0.8, schedule_decay=0.01),
}


def make_params(names=None):
    names = names or [n for n, _ in SHAPES]
    return [tf.Variable(v, name=n) for n, v in zip(names, initial_values())]


def train(opt, params, start, stop):
    x, ids, y = batches(stop)
    for i in range(start, stop):
        with tf.GradientTape() as tape:
            loss = loss_fn(params, x[i], ids[i], y[i])
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
    return [p.numpy() for p in params]


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_state_round_trip_continues_the_run(name):
    cls = getattr(v1, name)
    straight = train(cls(**KWARGS[name]), make_params(), 0, 8)

    opt, params = cls(**KWARGS[name]), make_params()
    train(opt, params, 0, 4)
    state = opt.to_state()
    assert state.generation == "v1" and state.iterations == 4 and state.config["learning_rate"] > 0
    assert set(state.slot_names()) <= set(cls.SPEC.slots)

    again = cls.from_state(state)
    assert again.get_config() == opt.get_config()
    params2 = [tf.Variable(p.numpy(), name=p.name.split(":")[0]) for p in params]
    assert again.restore_report is None  # held: no slots yet
    resumed = train(again, params2, 4, 8)
    assert again.restore_report["method"] == "by_name" and again.restore_report["iterations"] == 4
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, straight)) == 0.0
    assert [w.shape for w in again.get_weights()] == [w.shape for w in opt.get_weights()]


def test_config_round_trip_and_constructor_checks():
    for name, kwargs in KWARGS.items():
        opt = getattr(v1, name)(clipnorm=1.5, **kwargs)
        assert type(opt).from_config(opt.get_config()).get_config() == opt.get_config()
        assert opt.get_config()["clipnorm"] == 1.5 and "clipvalue" not in opt.get_config()
    with pytest.raises(TypeError, match="Unexpected keyword argument"):
        v1.Adam(learning_rate=0.1)
    with pytest.raises(ValueError, match="clipvalue >= 0"):
        v1.SGD(clipvalue=-1)


def test_set_weights_checks_count_and_shape():
    opt, params = v1.Adam(), make_params()
    train(opt, params, 0, 1)
    weights = opt.get_weights()
    with pytest.raises(ValueError, match="Length of the specified weight list"):
        opt.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="not compatible"):
        opt.set_weights(weights[:-1] + [np.zeros((2, 2), np.float32)])
    weights[1] = weights[1] + 1
    opt.set_weights(weights)
    assert np.array_equal(opt.get_weights()[1], weights[1])


def test_nadam_schedule_is_recomputed_when_the_state_lacks_it():
    opt, params = v1.Nadam(**KWARGS["Nadam"]), make_params()
    train(opt, params, 0, 5)
    state = opt.to_state()
    expected = state.extra.pop("u_product")
    again = v1.Nadam.from_state(state)
    report = again.restore_state(state, var_list=make_params())
    assert any("recomputed" in w for w in report["warnings"])
    assert again.m_schedule.numpy() == pytest.approx(float(expected), rel=1e-6)


def test_refusals_leave_the_optimizer_untouched():
    opt, params = v1.Adam(lr=0.01, amsgrad=True), make_params()
    train(opt, params, 0, 2)
    state = opt.to_state()

    plain = v1.Adam(lr=0.01)  # amsgrad off: the state's full-size velocity_hat has no place
    with pytest.raises(MappingError, match="velocity_hat"):
        plain.restore_state(state, var_list=make_params())
    assert int(plain.iterations.numpy()) == 0 and not np.any(plain.get_weights()[1])

    with pytest.raises(KerasOptMigrateError, match="algorithms differ"):
        v1.Adamax().restore_state(state)

    renamed = make_params(["a", "b", "c", "d", "e"])
    ok = v1.Adam(lr=0.01, amsgrad=True)  # no names match, all shapes differ: build order is proven
    assert ok.restore_state(state, var_list=None) is None
    train(ok, renamed, 2, 3)
    assert ok.restore_report["method"] == "build_order"

    partly = make_params(["hidden/kernel", "hidden/bias", "x", "y", "z"])
    held = v1.Adam(lr=0.01, amsgrad=True)
    held.restore_state(state)
    with pytest.raises(MappingError, match="ambiguous mapping: 2 of"):
        train(held, partly, 2, 3)
    assert all(not np.any(w) for w in held.get_weights()[1:])  # nothing half-applied
    with pytest.raises(MappingError):  # and still refused: the held state is not dropped by a failure
        train(held, partly, 2, 3)


def test_same_shapes_without_names_are_refused_unless_confirmed():
    twins = [tf.Variable(tf.ones((3,)), name="p"), tf.Variable(tf.ones((3,)), name="q")]
    src = v1.RMSprop(lr=0.1)
    src.apply_gradients([(tf.ones((3,)), twins[0]), (3 * tf.ones((3,)), twins[1])])
    state = src.to_state()
    others = [tf.Variable(tf.ones((3,)), name="r"), tf.Variable(tf.ones((3,)), name="s")]
    held = v1.RMSprop(lr=0.1)
    restore_into(held, state)
    with pytest.raises(MappingError, match="build order is not proven"):
        held.apply_gradients([(tf.ones((3,)), others[0]), (tf.ones((3,)), others[1])])
    confirmed = v1.RMSprop(lr=0.1)
    restore_into(confirmed, state, var_list=others)
    assert np.array_equal(confirmed.get_weights()[1], src.get_weights()[1])


def test_state_from_the_tf1_generation_and_schedules():
    """Same algorithm, other generation: TF1 Adam's state into v1 Adam (same update rule)."""
    tf1 = v1.TFOptimizer(tf.compat.v1.train.AdamOptimizer(0.01, beta1=0.8, beta2=0.95, epsilon=1e-7))
    params = make_params()
    train(tf1, params, 0, 3)
    state = tf1.to_state()
    state.iterations = None  # only the beta powers tell the step count
    ours = v1.Adam.from_state(state)
    assert ours.get_config()["beta_1"] == pytest.approx(0.8) and ours.get_config()["lr"] == pytest.approx(0.01)
    params2 = [tf.Variable(p.numpy(), name=p.name.split(":")[0]) for p in params]
    train(ours, params2, 3, 6)
    assert ours.restore_report["iterations"] == 3
    straight = train(tf1, params, 3, 6)
    assert max(float(np.max(np.abs(a - b.numpy()))) for a, b in zip(straight, params2)) < 1e-5

    state.config["learning_rate"] = {"class_name": "ExponentialDecay", "config": {}}
    with pytest.raises(KerasOptMigrateError, match="schedule"):
        v1.Adam.from_state(state)
