"""tf.train.Checkpoint interop with real tf_keras optimizers, both ways, including restore
before the optimizer has built its slots."""

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate.optimizers import experimental as ex
from keras_opt_migrate.optimizers import v2

tf_keras = pytest.importorskip("tf_keras")

RNG = np.random.RandomState(1)
X, Y = RNG.randn(8, 5).astype("float32"), RNG.randn(8, 2).astype("float32")


def model():
    m = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", name="hidden"),
                             tf_keras.layers.Dense(2, name="out")])
    m.build((None, 5))
    rng = np.random.RandomState(0)
    m.set_weights([rng.randn(*w.shape).astype("float32") for w in m.get_weights()])
    return m


def step(m, opt, scale=1.0):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((m(X * scale) - Y) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables), m.trainable_variables))


V2 = [("Adam", dict(learning_rate=0.01, amsgrad=True)), ("SGD", dict(learning_rate=0.05, momentum=0.8)),
      ("RMSprop", dict(learning_rate=0.01, momentum=0.3, centered=True)), ("Ftrl", dict(learning_rate=0.1, beta=0.1)),
      ("Nadam", dict(learning_rate=0.01)), ("Adadelta", dict(learning_rate=0.5)), ("Adamax", dict(learning_rate=0.01)),
      ("Adagrad", dict(learning_rate=0.1))]
EX = [("Adam", dict(learning_rate=0.01, amsgrad=True)), ("SGD", dict(learning_rate=0.05, momentum=0.8)),
      ("RMSprop", dict(learning_rate=0.01, momentum=0.3, centered=True)), ("Ftrl", dict(learning_rate=0.1)),
      ("Nadam", dict(learning_rate=0.01)), ("Adafactor", dict(learning_rate=0.05)), ("Lion", dict(learning_rate=0.01)),
      ("AdamW", dict(learning_rate=0.01, weight_decay=0.1)), ("Adam", dict(learning_rate=0.01, use_ema=True))]


def _state(opt):
    return opt.get_weights() if hasattr(opt, "get_weights") else [v.numpy() for v in opt.variables]


def _roundtrip(tmp_path, writer, reader, prebuild_reader, continue_steps=2):
    m = model()
    for _ in range(3):
        step(m, writer)
    path = tf.train.Checkpoint(model=m, optimizer=writer).write(str(tmp_path / "ckpt"))
    m2 = model()
    if prebuild_reader:
        step(m2, reader, scale=0.0)  # creates every slot before the restore
    status = tf.train.Checkpoint(model=m2, optimizer=reader).read(path)
    status.assert_existing_objects_matched()
    if continue_steps == 0:  # compare the restored state itself
        return path, m, m2
    for _ in range(continue_steps):
        step(m, writer)
        step(m2, reader)
    return path, m, m2


@pytest.mark.parametrize("prebuild", [False, True], ids=["restore-before-build", "restore-after-build"])
@pytest.mark.parametrize("ours_writes", [True, False], ids=["ours-to-real", "real-to-ours"])
@pytest.mark.parametrize("name,kwargs", V2, ids=[n for n, _ in V2])
def test_v2_checkpoint_interop(tmp_path, name, kwargs, ours_writes, prebuild):
    ours, real = getattr(v2, name)(**kwargs), getattr(tf_keras.optimizers.legacy, name)(**kwargs)
    writer, reader = (ours, real) if ours_writes else (real, ours)
    path, m, m2 = _roundtrip(tmp_path, writer, reader, prebuild)
    keys = [k for k, _ in tf.train.list_variables(path)]
    assert "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "optimizer/learning_rate/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert any(".OPTIMIZER_SLOT/optimizer/" in k for k in keys)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(writer.iterations.numpy(), reader.iterations.numpy())


def test_v2_checkpoint_keys_equal_reference(tmp_path):
    keys = {}
    for label, opt in (("ours", v2.RMSprop(0.01, momentum=0.5, centered=True)),
                       ("real", tf_keras.optimizers.legacy.RMSprop(0.01, momentum=0.5, centered=True))):
        m = model()
        step(m, opt)
        path = tf.train.Checkpoint(model=m, optimizer=opt).write(str(tmp_path / label))
        keys[label] = sorted((k, tuple(s)) for k, s in tf.train.list_variables(path) if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert keys["ours"] == keys["real"]


def test_v2_slots_created_at_restore_when_variables_exist(tmp_path):
    m = model()
    writer = tf_keras.optimizers.legacy.Adam(0.01)
    for _ in range(3):
        step(m, writer)
    path = tf.train.Checkpoint(model=m, optimizer=writer).write(str(tmp_path / "ckpt"))
    m2, ours = model(), v2.Adam(0.01)
    tf.train.Checkpoint(model=m2, optimizer=ours).read(path)
    # the model variables exist, so the slots are created right away from the checkpoint
    for var, ref_var in zip(m2.trainable_variables, m.trainable_variables):
        np.testing.assert_array_equal(ours.get_slot(var, "m").numpy(), writer.get_slot(ref_var, "m").numpy())
    assert int(ours.iterations.numpy()) == 3


def test_v2_deferred_until_model_variables_exist(tmp_path):
    m = model()
    writer = v2.Adam(0.01)
    for _ in range(3):
        step(m, writer)
    path = tf.train.Checkpoint(model=m, optimizer=writer).write(str(tmp_path / "ckpt"))
    m2 = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", name="hidden"),
                              tf_keras.layers.Dense(2, name="out")])  # not built: no variables yet
    reader = tf_keras.optimizers.legacy.Adam(0.01)
    ours_reader = v2.Adam(0.01)
    m3 = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", name="hidden"),
                              tf_keras.layers.Dense(2, name="out")])
    tf.train.Checkpoint(model=m2, optimizer=reader).read(path)
    tf.train.Checkpoint(model=m3, optimizer=ours_reader).read(path)
    assert ours_reader._deferred_slot_restorations or not ours_reader._slots
    m2.build((None, 5))
    m3.build((None, 5))
    for _ in range(2):
        step(m, writer)
        step(m2, reader)
        step(m3, ours_reader)
    for a, b, c in zip(m.get_weights(), m2.get_weights(), m3.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("prebuild", [False, True], ids=["restore-before-build", "restore-after-build"])
@pytest.mark.parametrize("ours_writes", [True, False], ids=["ours-to-real", "real-to-ours"])
@pytest.mark.parametrize("name,kwargs", EX, ids=["%s%d" % (n, i) for i, (n, _) in enumerate(EX)])
def test_experimental_checkpoint_interop(tmp_path, name, kwargs, ours_writes, prebuild):
    ours, real = getattr(ex, name)(**kwargs), getattr(tf_keras.optimizers, name)(**kwargs)
    writer, reader = (ours, real) if ours_writes else (real, ours)
    # A restored tf_keras Nadam does not continue its run exactly (its Python step counter
    # restarts; see nadam.py): there, check the restored state instead of the continuation.
    real_nadam_reads = name == "Nadam" and ours_writes
    path, m, m2 = _roundtrip(tmp_path, writer, reader, prebuild, continue_steps=0 if real_nadam_reads else 2)
    keys = [k for k, _ in tf.train.list_variables(path)]
    assert "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "optimizer/_variables/1/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert not any(".OPTIMIZER_SLOT" in k for k in keys)
    if real_nadam_reads:
        if not prebuild:
            reader.build(m2.trainable_variables)
        for a, b in zip(_state(writer) + [writer._u_product.numpy()], _state(reader) + [reader._u_product.numpy()]):
            np.testing.assert_array_equal(a, b)
    # Our default (fast) update path rounds differently from tf_keras' ops: the continuation
    # is compared within 1e-6 (tests/optimizers/test_experimental_parity.py checks both paths).
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_experimental_checkpoint_keys_equal_reference(tmp_path):
    keys = {}
    for label, opt in (("ours", ex.Nadam(0.01)), ("real", tf_keras.optimizers.Nadam(0.01)),
                       ("ours_ema", ex.Adafactor(0.01, use_ema=True)),
                       ("real_ema", tf_keras.optimizers.Adafactor(0.01, use_ema=True))):
        m = model()
        step(m, opt)
        path = tf.train.Checkpoint(model=m, optimizer=opt).write(str(tmp_path / label))
        keys[label] = sorted((k, tuple(s)) for k, s in tf.train.list_variables(path) if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert keys["ours"] == keys["real"]
    assert "optimizer/_u_product/.ATTRIBUTES/VARIABLE_VALUE" in [k for k, _ in keys["ours"]]
    assert keys["ours_ema"] == keys["real_ema"]


def test_experimental_refuses_legacy_checkpoint(tmp_path):
    m = model()
    legacy = tf_keras.optimizers.legacy.Adam(0.01)
    step(m, legacy)
    path = tf.train.Checkpoint(model=m, optimizer=legacy).write(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="legacy"):
        tf.train.Checkpoint(model=model(), optimizer=ex.Adam(0.01)).read(path)
