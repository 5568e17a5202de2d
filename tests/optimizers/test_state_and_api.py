"""Schema round trips (to_state / from_state / restore_into) and the API surface: config,
serialization, validation, set_weights, own-variable IO, DTensor SGD."""

import numpy as np
import pytest
import tensorflow as tf

import keras_opt_migrate
from keras_opt_migrate.errors import MappingError, UnknownOptimizerError
from keras_opt_migrate.optimizers import experimental as ex
from keras_opt_migrate.optimizers import from_state, v2
from keras_opt_migrate.optimizers.experimental import dtensor
from opt_problems import gradient_stream, make_vars, max_abs_diff, run, to_tensor, values

tf_keras = pytest.importorskip("tf_keras")

STATE_CASES = [
    (v2.Adam, dict(learning_rate=0.01, amsgrad=True)), (v2.Nadam, dict(learning_rate=0.01)),
    (v2.Ftrl, dict(learning_rate=0.1)), (v2.RMSprop, dict(learning_rate=0.01, momentum=0.2, centered=True)),
    (v2.LazyAdam, dict(learning_rate=0.01)), (v2.SGD, dict(learning_rate=0.1, momentum=0.5)),
    (ex.Adam, dict(learning_rate=0.01, amsgrad=True)), (ex.Nadam, dict(learning_rate=0.01)),
    (ex.Adafactor, dict(learning_rate=0.05)), (ex.ClippyAdagrad, dict(learning_rate=0.1, export_clipping_factors=True)),
    (ex.RMSprop, dict(learning_rate=0.01, centered=True)), (ex.Lion, dict(learning_rate=0.01, use_ema=True)),
]


def _continue(opt, variables, steps):
    for grads in steps:
        opt.apply_gradients(zip([to_tensor(g) for g in grads], variables))


@pytest.mark.parametrize("cls,kwargs", STATE_CASES, ids=["%s-%s" % (c.GENERATION, c.__name__) for c, _ in STATE_CASES])
def test_export_from_state_and_resume_exactly(cls, kwargs):
    init, steps = gradient_stream(seed=21, steps=6, sparse=True)
    variables, opt = run(cls(**kwargs), init, steps[:3])
    state = opt.to_state()
    assert state.optimizer == cls.SPEC.name and state.generation == cls.GENERATION
    assert state.iterations == 3 and [v.name for v in state.variables] == ["kernel", "bias", "emb"]
    assert set(state.slots["kernel"]) <= set(cls.SPEC.slots) | {"average"}
    resumed_vars = make_vars(values(variables))
    resumed = from_state(state)
    assert type(resumed) is cls
    _continue(opt, variables, steps[3:])
    _continue(resumed, resumed_vars, steps[3:])  # state attached at the first apply_gradients
    assert max_abs_diff(values(variables), values(resumed_vars)) == 0.0
    assert int(resumed.iterations.numpy()) == 6


def test_restore_into_by_order_when_names_differ_and_refusals():
    init, steps = gradient_stream(seed=22, steps=4)
    variables, opt = run(v2.Adam(0.01), init, steps[:2])
    state = opt.to_state()
    renamed = [tf.Variable(v.numpy(), name="other_%d" % i) for i, v in enumerate(variables)]
    target = v2.Adam(0.01)
    keras_opt_migrate.restore_into(target, state, var_list=renamed)  # slots created and filled now
    assert state.source["mapping"] == "order"
    np.testing.assert_array_equal(target.get_slot(renamed[0], "m").numpy(), opt.get_slot(variables[0], "m").numpy())
    # shapes that do not line up by order: refused, nothing applied
    shuffled = [tf.Variable(v.numpy(), name="x%d" % i) for i, v in enumerate(reversed(variables))]
    fresh = v2.Adam(0.01)
    with pytest.raises(MappingError, match="shapes differ"):
        keras_opt_migrate.restore_into(fresh, state, var_list=shuffled)
    assert int(fresh.iterations.numpy()) == 0
    with pytest.raises(MappingError, match="same algorithm"):
        keras_opt_migrate.restore_into(v2.SGD(0.1), state)
    with pytest.raises(MappingError, match="no slot"):
        keras_opt_migrate.restore_into(v2.Adam(0.01, amsgrad=False), v2_state_with_vhat(), var_list=make_vars(init))


def v2_state_with_vhat():
    init, steps = gradient_stream(seed=23, steps=1)
    _, opt = run(v2.Adam(0.01, amsgrad=True), init, steps)
    return opt.to_state()


def test_restore_into_from_native_file(tmp_path):
    init, steps = gradient_stream(seed=24, steps=4)
    variables, opt = run(ex.Adam(0.01), init, steps[:2])
    path = tmp_path / "state.kom"
    keras_opt_migrate.save_state(opt.to_state(), path)
    resumed_vars = make_vars(values(variables))
    target = ex.Adam(0.01)
    keras_opt_migrate.restore_into(target, str(path))
    _continue(opt, variables, steps[2:])
    _continue(target, resumed_vars, steps[2:])
    assert max_abs_diff(values(variables), values(resumed_vars)) == 0.0


@pytest.mark.parametrize("module,name,kwargs", [
    (v2, "Adam", dict(learning_rate=0.01, beta_1=0.8, amsgrad=True, decay=0.1, clipnorm=1.0)),
    (v2, "Nadam", dict(learning_rate=0.01)), (v2, "Ftrl", dict(learning_rate=0.1, beta=0.3)),
    (v2, "SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True, global_clipnorm=2.0)),
    (ex, "Adam", dict(learning_rate=0.01, weight_decay=0.1, use_ema=True)), (ex, "RMSprop", dict(centered=True)),
    (ex, "Adafactor", dict(beta_2_decay=-0.5)), (ex, "AdamW", dict(weight_decay=0.2)),
])
def test_get_config_matches_reference_and_round_trips(module, name, kwargs):
    ours = getattr(module, name)(**kwargs)
    ref_module = tf_keras.optimizers.legacy if module is v2 else tf_keras.optimizers
    ref = getattr(ref_module, name)(**kwargs)
    ours_config, ref_config = ours.get_config(), ref.get_config()
    assert set(ours_config) == set(ref_config)
    for key in ours_config:
        assert np.all(np.asarray(ours_config[key]) == np.asarray(ref_config[key])), key
    again = type(ours).from_config(ours_config)
    assert again.get_config() == ours_config
    assert type(module.deserialize(module.serialize(ours))) is type(ours)


def test_v2_lr_alias_get_and_validation():
    opt = v2.Adam.from_config({"lr": 0.5, "beta_1": 0.7})
    assert opt.learning_rate.numpy() == np.float32(0.5) and opt.lr.numpy() == np.float32(0.5)
    assert isinstance(v2.get("ADAM"), v2.Adam) and isinstance(v2.get("rmsprop"), v2.RMSprop)
    assert isinstance(v2.get({"class_name": "Addons>LazyAdam", "config": {}}), v2.LazyAdam)
    adam = v2.Adam()
    assert v2.get(adam) is adam
    with pytest.raises(ValueError, match="both `clipnorm` and `global_clipnorm`"):
        v2.SGD(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        v2.SGD(clipvalue=-1.0)
    with pytest.raises(TypeError, match="Unexpected keyword"):
        v2.SGD(weight_decay=0.1)
    with pytest.raises(ValueError, match="momentum"):
        v2.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="LearningRateSchedule"):
        from keras_opt_migrate.optimizers.schedules import ExponentialDecay
        v2.Nadam(ExponentialDecay(0.1, 2, 0.5))


def test_v2_set_weights_accepts_keras_v1_list_without_iterations():
    init, steps = gradient_stream(seed=25, steps=2)
    _, ours = run(v2.Adagrad(0.1), init, steps)
    _, ref = run(tf_keras.optimizers.legacy.Adagrad(0.1), init, steps)
    accumulators = [np.full(w.shape, 0.5, "float32") for w in ours.get_weights()[1:]]
    ours.set_weights(accumulators)
    ref.set_weights(accumulators)
    assert max_abs_diff(ours.get_weights(), ref.get_weights()) == 0.0
    with pytest.raises(ValueError, match="expecting"):
        ours.set_weights(accumulators[:1])


def test_experimental_api_set_weights_own_variables_and_kwargs():
    init, steps = gradient_stream(seed=26, steps=2)
    _, ours = run(ex.Adam(0.01), init, steps)
    store = {}
    ours.save_own_variables(store)
    assert sorted(store, key=int) == [str(i) for i in range(7)]
    fresh = ex.Adam(0.01)
    with pytest.raises(ValueError, match="not yet been built"):
        fresh.set_weights(list(store.values()))
    fresh.build(make_vars(init))
    fresh.load_own_variables(store)
    assert max_abs_diff([v.numpy() for v in fresh.variables], [store[str(i)] for i in range(7)]) == 0.0
    assert callable(fresh.variables) and fresh.variables() == fresh.variables
    with pytest.raises(ValueError, match="deprecated in the new"):
        ex.Adam(decay=0.1)
    with pytest.raises(TypeError, match="not a valid argument"):
        ex.Adam(bogus=1)
    with pytest.raises(ValueError, match="At most one"):
        ex.SGD(clipnorm=1.0, global_clipnorm=1.0)
    assert ex.Adam(jit_compile=True).get_config()["jit_compile"] == bool(tf.config.list_physical_devices("GPU"))
    assert isinstance(ex.get("custom>adamw"), ex.AdamW)


def _mesh():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.fail("needs 2 logical CPU devices: tests/conftest.py splits the CPU before TensorFlow initialises")
    return tf.experimental.dtensor.create_mesh([("batch", 2)], devices=["CPU:0", "CPU:1"])


def test_dtensor_sgd_equals_plain_sgd_and_checkpoints(tmp_path):
    mesh = _mesh()
    d = tf.experimental.dtensor
    layout = d.Layout(["batch", d.UNSHARDED], mesh)
    rng = np.random.RandomState(0)
    start = rng.randn(4, 3).astype("float32")
    grads = [rng.randn(4, 3).astype("float32") for _ in range(20)]
    dvar = d.DVariable(d.copy_to_mesh(tf.constant(start), d.Layout.replicated(mesh, 2)))
    dvar = d.DVariable(d.relayout(dvar.read_value(), layout))
    plain = tf.Variable(start)
    opt = dtensor.SGD(0.1, momentum=0.9, nesterov=True, mesh=mesh)
    ref = ex.SGD(0.1, momentum=0.9, nesterov=True)
    for g in grads:
        opt.apply_gradients([(d.relayout(d.copy_to_mesh(tf.constant(g), d.Layout.replicated(mesh, 2)), layout), dvar)])
        ref.apply_gradients([(tf.constant(g), plain)])
    np.testing.assert_allclose(d.unpack(dvar.read_value())[0].numpy(), plain.numpy()[:2], atol=1e-6)
    full = tf.concat(d.unpack(dvar.read_value()), axis=0).numpy()
    np.testing.assert_allclose(full, plain.numpy(), atol=1e-6)
    assert d.fetch_layout(opt.momentums[0]) == layout  # slot takes the variable's layout
    assert d.fetch_layout(opt.iterations).is_fully_replicated()
    path = tf.train.Checkpoint(optimizer=opt).write(str(tmp_path / "ckpt"))
    again = dtensor.SGD(0.1, momentum=0.9, nesterov=True, mesh=mesh)
    again.build([dvar])
    tf.train.Checkpoint(optimizer=again).read(path)
    assert int(again.iterations.numpy()) == 20
    np.testing.assert_array_equal(tf.concat(d.unpack(again.momentums[0].read_value()), 0).numpy(),
                                  tf.concat(d.unpack(opt.momentums[0].read_value()), 0).numpy())


@pytest.mark.parametrize("module", [v2, ex], ids=["v2", "experimental"])
def test_get_wraps_a_tf1_optimizer_like_keras(module):
    """Keras' `optimizers.get` wraps a `tf.compat.v1.train.Optimizer` in a TFOptimizer; ours wraps it in
    our v1-generation TFOptimizer, which then steps exactly as the TF1 optimizer does on its own."""
    import tf_keras
    from keras_opt_migrate.optimizers import v1

    tf1_ours = tf.compat.v1.train.MomentumOptimizer(0.1, momentum=0.9)
    tf1_ref = tf.compat.v1.train.MomentumOptimizer(0.1, momentum=0.9)
    wrapped = module.get(tf1_ours)
    reference = tf_keras.optimizers.get(tf1_ref)
    assert type(reference).__name__ == "TFOptimizer" and reference.optimizer is tf1_ref
    assert isinstance(wrapped, v1.TFOptimizer) and wrapped.optimizer is tf1_ours
    assert module.get(wrapped) is wrapped

    var_ours, var_ref = tf.Variable([1.0, -2.0, 3.0]), tf.Variable([1.0, -2.0, 3.0])
    for step in range(3):
        grad = tf.constant([0.5, -1.0, 0.25]) * (step + 1)
        wrapped.apply_gradients([(grad, var_ours)])
        tf1_ref.apply_gradients([(grad, var_ref)])
    np.testing.assert_array_equal(var_ours.numpy(), var_ref.numpy())
    assert int(wrapped.iterations.numpy()) == 3
    with pytest.raises(UnknownOptimizerError, match="tf.compat.v1.train.Optimizer"):
        module.get(3.5)
