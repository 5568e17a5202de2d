"""Keras writers: the issue's named upgrade case through the CLI, deterministic bytes, untouched
inputs, --force, and the Keras 2 -> Keras 3 model translation on layers beyond the corpus.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import FIXTURES, Case
from keras_opt_migrate.errors import FormatError
from keras_opt_migrate.formats import keras_model

K212_ADAM = FIXTURES / "k212" / "v2" / "adam"


def _case(path):
    with open(path / "truth.json") as f:
        return Case(path, json.load(f))


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_keras212_adam_h5_upgraded_by_the_cli_resumes_in_keras3(tmp_path):
    """The issue's named case: Keras 2.12 `.h5` + legacy Adam -> Keras 3 `.keras`, resumed by Keras 3."""
    if not (K212_ADAM / "truth.json").exists():
        pytest.skip("fixtures/k212/v2/adam is being regenerated (no truth.json)")
    case = _case(K212_ADAM)
    src, out = K212_ADAM / "m.h5", tmp_path / "m.keras"
    before = _sha(src)
    cli = [sys.executable, "-m", "keras_opt_migrate", "upgrade", str(src), str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _sha(src) == before
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    import keras
    model = keras.models.load_model(str(out))
    assert type(model.optimizer).__name__ == "Adam" and int(model.optimizer.iterations) == case.truth["iterations"]
    x, y = case.batches()
    for i in (3, 4):
        model.train_on_batch(x[i], y[i])
    delta = max(float(np.max(np.abs(np.asarray(w) - a))) for w, a in zip(model.trainable_weights, case.after_weights()))
    assert delta <= 1e-5


@pytest.mark.parametrize("src,to,name", [
    ("k215/v2/adam/m.h5", "keras3", "o.keras"),
    ("k215/v2/adam/m.h5", "experimental", "o.h5"),
    ("k215/experimental/nadam/m.keras", "v2", "o.h5"),
    ("k315/keras3/adam_ema/m.keras", "keras3", "o.weights.h5"),
])
def test_writes_are_deterministic_atomic_and_leave_the_input_alone(src, to, name, tmp_path):
    src = FIXTURES / src
    if not src.exists():
        pytest.skip("%s is not in the corpus right now" % src)
    before = _sha(src)
    first, second = tmp_path / "a" / name, tmp_path / "b" / name
    first.parent.mkdir()
    second.parent.mkdir()
    kom.convert(src, first, to)
    kom.convert(src, second, to)
    assert first.read_bytes() == second.read_bytes()
    assert _sha(src) == before
    assert sorted(os.listdir(first.parent)) == [name]  # no staging leftovers
    with pytest.raises(FormatError, match="already exists"):
        kom.convert(src, first, to)
    kom.convert(src, first, to, force=True)
    assert first.read_bytes() == second.read_bytes()


def test_keras3_archive_members_are_in_a_fixed_order_with_fixed_timestamps(tmp_path):
    import zipfile
    out = tmp_path / "m.keras"
    kom.upgrade(FIXTURES / "k215" / "v2" / "adam" / "m.h5", out)
    with zipfile.ZipFile(out) as z:
        infos = z.infolist()
        assert z.testzip() is None  # every member's CRC-32 is right
    # the weights member first (h5py writes it in place, see formats/zip_container.py), then the rest sorted
    assert [i.filename for i in infos] == ["model.weights.h5", "config.json", "metadata.json"]
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_a_keras3_model_cannot_go_into_a_keras2_h5(tmp_path):
    with pytest.raises(kom.KerasOptMigrateError, match="Keras 3"):
        kom.convert(FIXTURES / "k315" / "keras3" / "adam" / "m.keras", tmp_path / "o.h5", "experimental")
    assert os.listdir(tmp_path) == []


def test_unsupported_layer_is_a_one_line_error_naming_it():
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 3], "dtype": "float32", "name": "in"},
         "name": "in", "inbound_nodes": []},
        {"class_name": "Lambda", "config": {"name": "double", "function": "..."}, "name": "double",
         "inbound_nodes": [[["in", 0, 0, {}]]]}],
        "input_layers": [["in", 0, 0]], "output_layers": [["double", 0, 0]]}}
    with pytest.raises(FormatError) as e:
        keras_model.keras3_model_config(config, "m.h5")
    message = str(e.value)
    assert "'double'" in message and "Lambda" in message and "\n" not in message


def _functional_model(tf_keras):
    layers = tf_keras.layers
    inp = layers.Input((6, 6, 2), name="img")
    # no bias before BatchNormalization: its gradient is rounding noise that Adam would amplify
    a = layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inp)
    a = layers.BatchNormalization(name="bn")(a)
    a = layers.Activation("relu", name="act")(a)
    a = layers.Conv2D(2, 2, strides=2, name="conv_b")(a)
    a = layers.Flatten(name="flat")(a)
    b = layers.Reshape((36, 2), name="reshape")(inp)
    b = layers.Conv1D(2, 4, strides=3, name="conv1d")(b)
    b = layers.LayerNormalization(name="ln")(b)
    b = layers.Flatten(name="flat_b")(b)
    b = layers.Dense(18, name="proj")(b)
    c = layers.Concatenate(name="cat")([a, b])
    c = layers.Dropout(0.0, name="drop")(c)
    d = layers.Dense(36, name="wide")(c)
    e = layers.Add(name="add")([d, c])
    out = layers.Dense(2, name="out")(e)
    return tf_keras.Model(inp, out)


def _sequential_model(tf_keras):
    layers = tf_keras.layers
    return tf_keras.Sequential([layers.Dense(4, activation="tanh", input_shape=(5,), name="hidden"),
                                layers.BatchNormalization(name="bn"), layers.Dense(2, name="out")])


@pytest.mark.parametrize("build,shape", [(_functional_model, (6, 6, 2)), (_sequential_model, (5,))])
def test_keras2_model_translated_to_keras3_predicts_and_trains_alike(build, shape, tmp_path):
    """A tf_keras model with the supported layers, trained 3 steps and saved as .h5, upgraded to
    .keras: Keras 3 predicts the same, and 2 more steps land where tf_keras's own 2 steps land."""
    import tf_keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8) + shape).astype("float32")
    y = rng.normal(size=(5, 8, 2)).astype("float32")
    model = build(tf_keras)
    model.compile(optimizer=tf_keras.optimizers.legacy.Adam(0.01), loss="mse")
    for i in range(3):
        model.train_on_batch(x[i], y[i])
    model.save(tmp_path / "m.h5")
    predicted = model.predict(x[3], verbose=0)
    for i in (3, 4):
        model.train_on_batch(x[i], y[i])
    expected = {w.name.split(":")[0]: w.numpy() for w in model.weights}

    report = kom.upgrade(tmp_path / "m.h5", tmp_path / "m.keras")
    assert report.continuation in ("exact", "float-tolerance")
    import keras
    k3 = keras.models.load_model(tmp_path / "m.keras")
    assert int(k3.optimizer.iterations) == 3
    np.testing.assert_allclose(k3.predict(x[3], verbose=0), predicted, atol=1e-5)
    for i in (3, 4):
        k3.train_on_batch(x[i], y[i])
    got = {w.path: np.asarray(w) for w in k3.weights}
    assert sorted(got) == sorted(expected)
    trainable = {w.path for w in k3.trainable_weights}
    for name, value in expected.items():
        # BatchNormalization's moving variance: Keras 2 updates it with the unbiased batch variance
        # (n / (n - 1)), Keras 3 with the biased one; it does not feed back into training steps
        np.testing.assert_allclose(got[name], value, atol=1e-5 if name in trainable else 1e-3, err_msg=name)


def test_weights_file_layout_config_is_inferred_only_when_one_candidate_fits():
    state = kom.load_state(FIXTURES / "k315" / "keras3" / "adam_amsgrad" / "m.weights.h5", optimizer="adam")
    inferred = state.source["inferred_config"]
    assert inferred["flags"]["amsgrad"] is True and inferred["flags"]["use_ema"] is False
    assert state.config["amsgrad"] is True and "inferred" in " ".join(state.warnings)
    assert all(set(per) == {"momentum", "velocity", "velocity_hat"} for per in state.slots.values())
    with pytest.raises(FormatError) as e:  # EMA averages and gradient accumulators have the same shapes
        kom.load_state(FIXTURES / "k315" / "keras3" / "adam_gradacc" / "m.weights.h5", optimizer="adam")
    assert "2 different keras3 adam layouts" in str(e.value) and "use_ema=True" in str(e.value)
    exact = kom.load_state(FIXTURES / "k315" / "keras3" / "adam_gradacc" / "m.weights.h5", optimizer="adam",
                           config={"gradient_accumulation_steps": 2})
    assert exact.iterations == 1 and "inferred_config" not in exact.source
