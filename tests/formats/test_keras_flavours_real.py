"""The two `.keras` flavours and the Keras 3 LossScaleOptimizer, against the real versions.

`--to experimental` writes what tf_keras 2.21 saves (checked member by member against the
fixture tf_keras itself wrote, then loaded by `tf_keras.models.load_model`); `--to keras3`
with a loss-scale source writes Keras 3's LossScaleOptimizer layout, and Keras 3 then trains
exactly as it does from the file Keras 3 itself wrote. The per-fixture sweep over every
algorithm lives in test_keras_writers_real.py.
"""

import io
import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import FIXTURES, all_cases
from keras_opt_migrate.schema import materialize

CASES = {c.id: c for c in all_cases()}
TOLERANCE = 1e-5


def _weights_file(path):
    with zipfile.ZipFile(path) as z:
        return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")


def _datasets(f, prefix=""):
    out = {}
    f.visititems(lambda name, obj: out.setdefault(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if k.startswith(prefix)}


def _config(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def _continue(model, case):
    x, y = case.batches()
    for i in (3, 4):
        model.train_on_batch(x[i], y[i])
    return max(float(np.max(np.abs(np.asarray(w, np.float64) - a)))
               for w, a in zip(model.trainable_weights, case.after_weights()))


def test_experimental_keras_matches_what_tf_keras_writes(tmp_path):
    """k221 new Adam, .h5 -> tf_keras .keras: every optimizer and layer dataset, the optimizer entry and the
    layer groups equal the m.keras tf_keras 2.21 wrote for the same run (tf_keras also saves its loss metric's
    two scalars, which it does not need back: train_on_batch resets them)."""
    case = CASES["k221/experimental/adam"]
    out = tmp_path / "o.keras"
    report = kom.convert(case.file("m.h5"), out, "experimental")
    assert report.target_format == "keras_archive" and report.continuation == "exact"
    with _weights_file(out) as ours, _weights_file(case.file("m.keras")) as real:
        mine, theirs = _datasets(ours), _datasets(real)
        assert sorted(mine) == sorted(k for k in theirs if not k.startswith("metrics/"))
        for key, value in mine.items():
            assert value.dtype == theirs[key].dtype and np.array_equal(value, theirs[key]), key
    ours, real = _config(out), _config(case.file("m.keras"))
    assert ours["compile_config"]["optimizer"] == real["compile_config"]["optimizer"]
    assert [(l["class_name"], l["name"]) for l in ours["config"]["layers"]] == \
        [(l["class_name"], l["name"]) for l in real["config"]["layers"]]
    assert ours["module"] == real["module"] and ours["build_config"] == real["build_config"]


def test_cli_convert_keras212_legacy_h5_to_tf_keras_keras_resumes(tmp_path):
    """A Keras 2.12 .h5 (legacy Adam, initializers serialized without a module) becomes a tf_keras .keras with a
    2.11+ Adam: tf_keras load_model restores every slot and the run continues on the recorded trajectory."""
    case = CASES["k212/v2/adam"]
    out = tmp_path / "m.keras"
    cli = [sys.executable, "-m", "keras_opt_migrate", "convert", str(case.file("m.h5")), str(out),
           "--to", "experimental"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(keras_archive)" in done.stdout
    import tf_keras
    model = tf_keras.models.load_model(out)
    opt = model.optimizer
    assert type(opt).__module__.startswith("tf_keras.src.optimizers.adam") and int(opt.iterations) == 3
    state = kom.migrate(kom.load_state(case.file("m.h5")), "experimental")[0]
    for var, m, v in zip(state.variables, opt._momentums, opt._velocities):
        assert np.array_equal(np.asarray(m), materialize(state.slots[var.name]["momentum"]))
        assert np.array_equal(np.asarray(v), materialize(state.slots[var.name]["velocity"]))
    assert _continue(model, case) <= TOLERANCE


def _functional(tf_keras):
    layers = tf_keras.layers
    inp = layers.Input((6, 6, 2), name="img")
    a = layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
    a = layers.BatchNormalization(name="bn")(a)
    a = layers.Flatten(name="flat")(layers.Activation("relu", name="act")(a))
    b = layers.Dense(8, name="proj")(layers.Flatten(name="flat_b")(inp))
    c = layers.Concatenate(name="cat")([a, b])
    return tf_keras.Model(inp, layers.Dense(2, name="out")(c))


def _sequential(tf_keras):
    layers = tf_keras.layers
    return tf_keras.Sequential([layers.Dense(4, activation="tanh", input_shape=(5,), name="hidden"),
                                layers.BatchNormalization(name="bn"), layers.Dense(2, name="out")])


@pytest.mark.parametrize("build,shape", [(_functional, (6, 6, 2)), (_sequential, (5,))])
def test_tf_keras_model_round_trips_through_the_experimental_flavour(build, shape, tmp_path):
    """tf_keras model (non-trainable BatchNormalization weights, several layers of a class) saved as .h5 with a
    2.11+ RMSprop and a schedule, rewritten as a tf_keras .keras: same predictions, same 2 further steps."""
    import tf_keras
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8) + shape).astype("float32")
    y = rng.normal(size=(5, 8, 2)).astype("float32")
    model = build(tf_keras)
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
    model.compile(optimizer=tf_keras.optimizers.RMSprop(schedule, momentum=0.5, centered=True), loss="mse")
    for i in range(3):
        model.train_on_batch(x[i], y[i])
    model.save(tmp_path / "m.h5")
    predicted = model.predict(x[3], verbose=0)
    for i in (3, 4):
        model.train_on_batch(x[i], y[i])
    expected = [w.numpy() for w in model.weights]

    report = kom.convert(tmp_path / "m.h5", tmp_path / "m.keras", "experimental")
    assert report.continuation == "exact" and report.assumed_defaults() == {}
    loaded = tf_keras.models.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations) == 3 and loaded.optimizer.centered
    np.testing.assert_allclose(loaded.predict(x[3], verbose=0), predicted, atol=1e-6)
    for i in (3, 4):
        loaded.train_on_batch(x[i], y[i])
    for got, want, w in zip(loaded.weights, expected, model.weights):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6, err_msg=w.name)


def test_legacy_state_has_no_tf_keras_keras_flavour(tmp_path):
    # what tf_keras 2.21 itself does with a legacy optimizer: config.json names it, model.weights.h5 holds no state
    legacy = CASES["k221/v2/adam"]
    assert _config(legacy.file("m.keras"))["compile_config"]["optimizer"]["module"] == "keras.optimizers.legacy"
    with _weights_file(legacy.file("m.keras")) as real:
        assert "optimizer" not in real and "layers" in real
    with pytest.raises(kom.FormatError) as e:
        kom.convert(FIXTURES / "k221" / "v2" / "adam" / "m.h5", tmp_path / "o.keras", "v2")
    assert "cannot hold v2" in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def _keras3_lso_scale(opt):
    return float(np.asarray(opt.dynamic_scale)), int(np.asarray(opt.step_counter))


def test_keras3_loss_scale_optimizer_resumes_like_the_file_keras3_wrote(tmp_path):
    """k315 LossScaleOptimizer(Adam, initial_scale 1024, growth every 2 steps): our .keras and .weights.h5 have
    Keras 3's layout (wrapper variables, then the inner optimizer's, which are also saved on their own), and Keras 3
    restores the scale (2048) and step counter (1); two more steps move model, scale and counter exactly as from
    Keras 3's own file."""
    import keras
    case = CASES["k315/keras3/adam_lso"]
    out = tmp_path / "o.keras"
    report = kom.convert(case.file("m.keras"), out, "keras3")
    assert report.continuation == "exact" and not [i for i in report.items if i.action == "dropped"]
    with _weights_file(out) as ours, _weights_file(case.file("m.keras")) as real:
        mine, theirs = _datasets(ours, "optimizer/"), _datasets(real, "optimizer/")
        assert sorted(mine) == sorted(theirs)
        for key in mine:
            assert mine[key].dtype == theirs[key].dtype and np.array_equal(mine[key], theirs[key]), key
    assert _config(out)["compile_config"]["optimizer"]["config"]["dynamic_growth_steps"] == 2

    reference = keras.models.load_model(case.file("m.keras"))
    converted = keras.models.load_model(out)
    assert _keras3_lso_scale(converted.optimizer) == _keras3_lso_scale(reference.optimizer) == (2048.0, 1)
    assert _continue(converted, case) <= TOLERANCE
    _continue(reference, case)
    assert _keras3_lso_scale(converted.optimizer) == _keras3_lso_scale(reference.optimizer) == (4096.0, 1)
    for a, b in zip(converted.weights, reference.weights):
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path

    weights = tmp_path / "o.weights.h5"
    kom.convert(case.file("m.weights.h5"), weights, "keras3", source_optimizer="adam")
    model = keras.models.load_model(case.file("m.keras"))
    for v in model.optimizer.variables:  # only what our file holds may count
        v.assign(np.zeros(v.shape, v.dtype))
    model.load_weights(weights)
    assert _keras3_lso_scale(model.optimizer) == (2048.0, 1) and int(model.optimizer.iterations) == 3


def test_tf_keras_loss_scale_carried_into_keras3(tmp_path):
    """tf_keras keeps LossScaleOptimizerV3's scale only in its checkpoints (a SavedModel's variables included):
    upgraded to Keras 3, the wrapper, its config and its state arrive, and Keras 3 continues the scale schedule
    where tf_keras does."""
    import keras
    import tf_keras
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 8, 5)).astype("float32")
    y = rng.normal(size=(5, 8, 2)).astype("float32")
    # no BatchNormalization: the SavedModel reader cannot yet tell its moving statistics from trainable weights
    model = tf_keras.Sequential([tf_keras.layers.Dense(4, activation="tanh", input_shape=(5,), name="hidden"),
                                 tf_keras.layers.Dense(2, name="out")])
    inner = tf_keras.optimizers.Adam(0.01)
    opt = tf_keras.mixed_precision.LossScaleOptimizer(inner, initial_scale=1024, dynamic_growth_steps=2)
    model.compile(optimizer=opt, loss="mse")
    for i in range(3):
        model.train_on_batch(x[i], y[i])
    model.save(tmp_path / "sm", save_format="tf")
    for i in (3, 4):
        model.train_on_batch(x[i], y[i])

    report = kom.upgrade(tmp_path / "sm", tmp_path / "m.keras")
    assert ("renamed", "wrapper") in {(i.action, i.kind) for i in report.items}
    converted = keras.models.load_model(tmp_path / "m.keras")
    assert _keras3_lso_scale(converted.optimizer) == (2048.0, 1)
    assert converted.optimizer.dynamic_growth_steps == 2 and converted.optimizer.initial_scale == 1024
    for i in (3, 4):
        converted.train_on_batch(x[i], y[i])
    assert _keras3_lso_scale(converted.optimizer) == (float(opt.loss_scale), int(opt.dynamic_counter)) == (4096.0, 1)
    for got, want in zip(converted.trainable_weights, model.trainable_weights):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=TOLERANCE)


@pytest.mark.parametrize("case_id", ["k315/keras3/adam_lso", "k315/keras3/sgd_emb"])
def test_keras3_h5_becomes_a_keras3_keras(case_id, tmp_path):
    """Keras 3's own .h5 (its config serialized without modules, which its .keras loader needs) upgraded to .keras:
    Keras 3 loads it with the optimizer state (and a LossScaleOptimizer's scale) and continues exactly."""
    import keras
    case = CASES[case_id]
    report = kom.upgrade(case.file("m.h5"), tmp_path / "m.keras")
    assert report.continuation == "exact"
    model = keras.models.load_model(tmp_path / "m.keras")
    assert int(model.optimizer.iterations) == case.truth["iterations"]
    if "lso" in case_id:
        assert _keras3_lso_scale(model.optimizer) == (2048.0, 1)
    assert _continue(model, case) <= TOLERANCE
