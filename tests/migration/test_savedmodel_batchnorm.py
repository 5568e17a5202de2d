"""A Keras 2 SavedModel of a model with BatchNormalization, written here by real tf_keras.

BatchNormalization's moving statistics are model variables the optimizer never sees; with the
2.11+ optimizer only the build order links `_variables/N` to the model, so the reader must know
which variables are trainable (from `saved_model.pb`'s object graph) or it miscounts. Each
SavedModel is converted to a Keras 3 `.keras` and to tf_keras' `.keras` (2.11+ optimizer); both
must continue training like tf_keras continues the saved model itself.
"""

import numpy as np
import pytest

import keras_opt_migrate as kom

STEPS, CONTINUE = 3, 2
TOLERANCE = 1e-5
TRAINABLE = ["hidden/kernel", "hidden/bias", "bn/gamma", "bn/beta", "out/kernel", "out/bias"]


def _batches():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(STEPS + CONTINUE, 8, 4)).astype(np.float32)
    y = rng.normal(size=(STEPS + CONTINUE, 8, 1)).astype(np.float32)
    return x, y


def _build(lib):
    inp = lib.Input((4,))
    hidden = lib.layers.Dense(5, activation="tanh", name="hidden")(inp)
    out = lib.layers.Dense(1, name="out")(lib.layers.BatchNormalization(name="bn")(hidden))
    return lib.Model(inp, out)


@pytest.fixture(scope="module", params=["legacy", "new"])
def saved(request, tmp_path_factory):
    """(SavedModel path, tf_keras' own weights after continuing it) for legacy / 2.11+ Adam."""
    import tf_keras
    model = _build(tf_keras)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) if "moving_variance" not in w.name
                       else np.ones(w.shape, np.float32) for w in model.weights])
    adam = tf_keras.optimizers.legacy.Adam if request.param == "legacy" else tf_keras.optimizers.Adam
    model.compile(optimizer=adam(learning_rate=0.01), loss="mse")
    x, y = _batches()
    for i in range(STEPS):
        model.train_on_batch(x[i], y[i])
    path = tmp_path_factory.mktemp("sm_batchnorm") / request.param
    model.save(str(path), save_format="tf")
    for i in range(STEPS, STEPS + CONTINUE):
        model.train_on_batch(x[i], y[i])
    return path, request.param, [np.asarray(w) for w in model.weights]


def _continue(model, expected):
    x, y = _batches()
    for i in range(STEPS, STEPS + CONTINUE):
        model.train_on_batch(x[i], y[i])
    got = [np.asarray(w) for w in model.weights]
    assert [g.shape for g in got] == [e.shape for e in expected]
    return max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))


def test_the_reader_gives_slots_for_exactly_the_trainable_variables(saved):
    path, flavour, _ = saved
    state = kom.load_state(path)
    assert state.generation == ("v2" if flavour == "legacy" else "experimental")
    assert state.optimizer == "adam" and state.iterations == STEPS
    assert [v.name for v in state.variables] == TRAINABLE
    assert sorted(state.slots) == sorted(TRAINABLE)
    assert all(set(per) == {"momentum", "velocity"} for per in state.slots.values())


def test_keras3_keras_resumes_like_tf_keras(saved, tmp_path):
    import keras
    path, _, expected = saved
    report = kom.convert(path, tmp_path / "m.keras", "keras3")
    assert report.target_format == "keras_archive"
    model = keras.models.load_model(tmp_path / "m.keras")
    assert int(model.optimizer.iterations) == STEPS
    assert _continue(model, expected) <= TOLERANCE


def test_tf_keras_keras_with_the_new_optimizer_resumes_like_tf_keras(saved, tmp_path):
    import tf_keras
    path, _, expected = saved
    report = kom.convert(path, tmp_path / "m.keras", "experimental")
    assert report.target_format == "keras_archive"
    model = tf_keras.models.load_model(tmp_path / "m.keras")
    assert type(model.optimizer).__module__.startswith("tf_keras.src.optimizers.adam")
    assert int(model.optimizer.iterations) == STEPS
    assert _continue(model, expected) <= TOLERANCE


def test_a_frozen_layers_variables_have_no_optimizer_state(tmp_path):
    """Keras 2 keeps a frozen layer's variables trainable (the SavedModel says so) but leaves them out of
    `trainable_variables`: the layer's `"trainable": false` in keras_metadata.pb decides."""
    import tf_keras
    inp = tf_keras.Input((4,))
    frozen = tf_keras.layers.Dense(3, name="frozen")
    out = tf_keras.layers.Dense(2, name="out")(frozen(inp))
    frozen.trainable = False
    model = tf_keras.Model(inp, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    model.train_on_batch(np.ones((2, 4), np.float32), np.ones((2, 2), np.float32))
    model.save(str(tmp_path / "sm"), save_format="tf")
    state = kom.load_state(tmp_path / "sm")
    assert [v.name for v in state.variables] == ["out/kernel", "out/bias"] and sorted(state.slots) == ["out/bias",
                                                                                                       "out/kernel"]
