"""2.11+ parity: the same gradients through ours and tf_keras.optimizers.* (tf-keras 2.21).

Every algorithm writes out the reference's exact TF-op sequence, so trajectories and
`variables` are required to be bit-identical (stricter than the issue's 1e-6), eagerly and
inside tf.function. tf_keras has every algorithm here, so Keras 3 is not needed as a reference.
"""

import numpy as np
import pytest

from keras_opt_migrate.optimizers import experimental as ex
from opt_problems import gradient_stream, max_abs_diff, run, values

tf_keras = pytest.importorskip("tf_keras")

CASES = [
    ("SGD", dict(learning_rate=0.05)),
    ("SGD", dict(learning_rate=0.05, momentum=0.7, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-5)),
    ("Adam", dict(learning_rate=0.01, amsgrad=True, adaptive_epsilon=True, global_clipnorm=1.0)),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.05, beta_1=0.85)),
    ("Adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.2, epsilon=1e-6)),
    ("Adadelta", dict(learning_rate=0.5, rho=0.9, epsilon=1e-6)),
    ("Adamax", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99)),
    ("Nadam", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.95)),
    ("RMSprop", dict(learning_rate=0.01, rho=0.8)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True, clipvalue=0.5)),
    ("Ftrl", dict(learning_rate=0.1, learning_rate_power=-0.6, initial_accumulator_value=0.2,
                  l1_regularization_strength=0.01, l2_regularization_strength=0.02, beta=0.1,
                  l2_shrinkage_regularization_strength=0.01)),
    ("Lion", dict(learning_rate=0.01, beta_1=0.8, beta_2=0.95)),
    ("Adafactor", dict(learning_rate=0.05, beta_2_decay=-0.7, epsilon_2=1e-2, clip_threshold=0.8)),
    ("Adafactor", dict(learning_rate=0.05, relative_step=False)),
    ("Adam", dict(learning_rate=0.01, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3, clipnorm=0.5)),
]


def _id(case):
    name, kwargs = case
    return name + "-" + "-".join("%s=%s" % kv for kv in sorted(kwargs.items()))


def _variables(opt):
    return [v.numpy() for v in opt.variables]


@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_trajectory_and_variables_bit_identical(case, sparse, use_function):
    name, kwargs = case
    init, steps = gradient_stream(seed=len(name) + sparse, sparse=sparse)
    ours_vars, ours = run(getattr(ex, name)(**kwargs), init, steps, use_function=use_function)
    ref_vars, ref = run(getattr(tf_keras.optimizers, name)(**kwargs), init, steps, use_function=use_function)
    assert max_abs_diff(values(ours_vars), values(ref_vars)) == 0.0
    assert max_abs_diff(_variables(ours), _variables(ref)) == 0.0
    assert [v.name for v in ours.variables] == [v.name for v in ref.variables]


def test_schedule_learning_rate_and_exclusions():
    from keras_opt_migrate.optimizers.schedules import ExponentialDecay
    init, steps = gradient_stream(seed=11)
    ours = ex.AdamW(ExponentialDecay(0.05, 3, 0.5), weight_decay=0.1)
    ref = tf_keras.optimizers.AdamW(tf_keras.optimizers.schedules.ExponentialDecay(0.05, 3, 0.5), weight_decay=0.1)
    ours.exclude_from_weight_decay(var_names=["bias"])
    ref.exclude_from_weight_decay(var_names=["bias"])
    ours_vars, _ = run(ours, init, steps)
    ref_vars, _ = run(ref, init, steps)
    assert max_abs_diff(values(ours_vars), values(ref_vars)) == 0.0
    assert ours.learning_rate.numpy() == ref.learning_rate.numpy()
    with pytest.raises(ValueError, match="before the optimizer is built"):
        ours.exclude_from_weight_decay(var_names=["kernel"])
    with pytest.raises(TypeError, match="not settable"):
        ours.learning_rate = 0.1


def test_learning_rate_set_between_steps_and_finalize_ema():
    def change(opt, t):
        if t == 7:
            opt.learning_rate = 0.002

    init, steps = gradient_stream(seed=12)
    ours_vars, ours = run(ex.SGD(0.05, momentum=0.5, use_ema=True), init, steps, between=change)
    ref_vars, ref = run(tf_keras.optimizers.SGD(0.05, momentum=0.5, use_ema=True), init, steps, between=change)
    ours.finalize_variable_values(ours_vars)
    ref.finalize_variable_values(ref_vars)
    assert max_abs_diff(values(ours_vars), values(ref_vars)) == 0.0
    assert ours.learning_rate.numpy() == np.float32(0.002)
