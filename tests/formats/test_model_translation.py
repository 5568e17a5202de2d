"""Keras 2 full models of built-in layers, upgraded to Keras 3 and resumed in the REAL Keras 3.

Each model is built and trained 3 steps (`train_on_batch`) in tf_keras 2.21 and saved (`.h5`;
also a tf_keras `.keras` and a SavedModel for the ResNet); tf_keras then runs 2 more steps, which
are the reference continuation. `keras_opt_migrate.upgrade` writes a Keras 3 `.keras`, a
`.weights.h5` and (for the model with frozen and BatchNormalization layers) a Keras 3 TF
checkpoint. Keras 3.15 loads each (`load_model`; `load_weights` / `tf.train.Checkpoint.restore`
into the same architecture built in Keras 3 code and compiled with the same optimizer): every
weight, trainable or not, must equal the saved one exactly, the optimizer must hold the saved
iteration count, and the 2 continuation steps must match tf_keras' own.

Tolerance of the continuation: `rtol=1e-4, atol=1e-5` per weight (float32). Keras 3 and tf_keras
run the same TF kernels but compose them differently (Keras 3's BatchNormalization computes the
moments itself instead of the fused kernel, its optimizers order the float32 operations of the
update differently), which leaves differences of a few float32 ulps per step; the largest seen
is printed by the assertion. A wrong mapping (swapped slots, a fresh optimizer, moving statistics
lost) changes weights by far more: the check `test_a_fresh_optimizer_fails_the_tolerance` shows
the same tolerance rejects a continuation from a fresh optimizer.

The weights are compared layer by layer in the layer's weight order (trainable, then
non-trainable), the order Keras 3's own loader of Keras 2 `.h5` files uses.
"""

import os

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
keras = pytest.importorskip("keras")

import keras_opt_migrate as kom  # noqa: E402
from keras_opt_migrate.errors import FormatError  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
BATCH = 4


def _resnet(lib):
    L = lib.layers
    inp = lib.Input((16, 16, 3), name="image")
    x = L.ZeroPadding2D(1, name="pad")(inp)
    x = L.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    x = L.MaxPooling2D(2, padding="same", name="pool")(x)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="res_conv1")(x)
    y = L.BatchNormalization(name="res_bn1")(y)
    y = L.ReLU(name="res_relu1")(y)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="res_conv2")(y)
    y = L.BatchNormalization(name="res_bn2")(y)
    x = L.ReLU(name="res_out")(L.Add(name="res_add")([x, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return lib.Model(inp, L.Dense(5, name="head")(x), name="small_resnet")


def _transformer(lib):
    L = lib.layers
    inp = lib.Input((6, 8), name="tokens")
    att = L.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.0, name="mha")(inp, inp)
    x = L.LayerNormalization(epsilon=1e-6, name="ln1")(L.Add(name="add1")([inp, att]))
    ff = L.Dense(8, name="ff_out")(L.Dense(16, activation="relu", name="ff_in")(x))
    x = L.LayerNormalization(epsilon=1e-6, name="ln2")(L.Add(name="add2")([x, ff]))
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return lib.Model(inp, L.Dense(3, name="head")(x), name="encoder")


def _composite(lib):
    """A nested Sequential (with its own BatchNormalization), a shared layer, a frozen layer."""
    L = lib.layers
    inp = lib.Input((6,), name="features")
    shared = L.Dense(6, activation="tanh", name="shared")
    x = shared(shared(inp))  # one layer called twice
    frozen = L.Dense(5, name="frozen")
    frozen.trainable = False
    # (tanh after the BatchNormalization: a shift of its output into s1 and s_bn would have an exactly zero
    # gradient, and Adam would scale that float noise up to full steps)
    x = L.Activation("tanh", name="act")(L.BatchNormalization(name="bn")(frozen(x)))
    inner = lib.Sequential([lib.Input((5,)), L.Dense(4, activation="tanh", name="s1"), L.BatchNormalization(name="s_bn")],
                           name="inner")
    return lib.Model(inp, L.Dense(2, name="out")(inner(x)), name="composite")


def _mobilenet(lib):
    return lib.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10)


# name: (builder, input shape, output size, tf_keras optimizer, Keras 3 optimizer, extra source formats)
CASES = {
    "mobilenetv2": (_mobilenet, (32, 32, 3), 10,
                    lambda: tf_keras.optimizers.legacy.Adam(learning_rate=1e-3),
                    lambda: keras.optimizers.Adam(learning_rate=1e-3), ()),
    "resnet": (_resnet, (16, 16, 3), 5,
               lambda: tf_keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
               lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True), ("keras", "sm")),
    "transformer": (_transformer, (6, 8), 3,
                    lambda: tf_keras.optimizers.RMSprop(learning_rate=1e-3, centered=True, momentum=0.5),
                    lambda: keras.optimizers.RMSprop(learning_rate=1e-3, centered=True, momentum=0.5), ()),
    "composite": (_composite, (6,), 2,
                  lambda: tf_keras.optimizers.legacy.Adam(learning_rate=1e-2),
                  lambda: keras.optimizers.Adam(learning_rate=1e-2), ()),
}


def _batches(shape, out, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, BATCH) + tuple(shape)).astype(np.float32)
    y = rng.normal(size=(5, BATCH, out)).astype(np.float32)
    return x, y


def _layer_weights(model):
    """{top-level layer name: [arrays]} in the layer's weight order (trainable, then non-trainable)."""
    return {layer.name: [np.asarray(w) for w in list(layer.trainable_weights) + list(layer.non_trainable_weights)]
            for layer in model.layers}


class Source:
    def __init__(self, name, directory):
        build, shape, out, make_opt, _, extra = CASES[name]
        self.name, self.x, self.y = name, *_batches(shape, out, seed=len(name))
        model = build(tf_keras)
        model.compile(optimizer=make_opt(), loss="mse")
        for i in range(3):
            model.train_on_batch(self.x[i], self.y[i])
        self.saved = _layer_weights(model)
        self.files = {"h5": os.path.join(directory, name + ".h5")}
        model.save(self.files["h5"])
        if "keras" in extra:
            self.files["keras"] = os.path.join(directory, name + "_tfk.keras")
            model.save(self.files["keras"])
        if "sm" in extra:
            self.files["sm"] = os.path.join(directory, name + "_sm")
            model.save(self.files["sm"], save_format="tf")
        self.iterations = int(np.asarray(model.optimizer.iterations))
        for i in (3, 4):
            model.train_on_batch(self.x[i], self.y[i])
        self.after = _layer_weights(model)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("k2models"))
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Source(name, directory)
        return cache[name]
    return get


def _compare(got, want, what, rtol=0.0, atol=0.0):
    assert set(got) == set(want), "%s: Keras 3 has layers %s, tf_keras %s" % (what, sorted(got), sorted(want))
    worst = 0.0
    for name in want:
        assert len(got[name]) == len(want[name]), "%s: layer %s has %d weights in Keras 3, %d in tf_keras" % (
            what, name, len(got[name]), len(want[name]))
        for k, (g, w) in enumerate(zip(got[name], want[name])):
            assert g.shape == w.shape, "%s: %s weight %d shape %s != %s" % (what, name, k, g.shape, w.shape)
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0)))
            assert np.allclose(g, w, rtol=rtol, atol=atol), "%s: %s weight %d differs by up to %g" % (
                what, name, k, float(np.max(np.abs(g.astype(np.float64) - w))))
    return worst


def _continue(model, src):
    for i in (3, 4):
        model.train_on_batch(src.x[i], src.y[i])
    return _layer_weights(model)


def _code_built(name):
    """The same architecture built in Keras 3 code, compiled with the same optimizer, optimizer built."""
    build, _, _, _, make_opt, _ = CASES[name]
    model = build(keras)
    opt = make_opt()
    model.compile(optimizer=opt, loss="mse")
    opt.build(model.trainable_variables)
    return model, opt


ROUTES = [(name, fmt, out) for name in CASES for fmt in ("h5",) + CASES[name][5] for out in (".keras", ".weights.h5")]
ROUTES += [("composite", "h5", ".ckpt"), ("resnet", "sm", ".ckpt")]


@pytest.mark.parametrize("name,fmt,suffix", ROUTES, ids=["%s-%s-to%s" % r for r in ROUTES])
def test_upgraded_model_resumes_in_keras3(sources, tmp_path, name, fmt, suffix):
    src = sources(name)
    dst = str(tmp_path / ("out" + suffix))
    report = kom.upgrade(src.files[fmt], dst)
    assert report.target_format == {".keras": "keras_archive", ".weights.h5": "keras_weights_h5",
                                    ".ckpt": "tf_checkpoint"}[suffix]
    if suffix == ".keras":
        model = keras.models.load_model(dst)
        opt = model.optimizer
        assert len(opt.variables) > 2, "load_model restored no optimizer variables"
    else:
        model, opt = _code_built(name)
        if suffix == ".weights.h5":
            model.load_weights(dst)
        else:
            import tensorflow as tf
            tf.train.Checkpoint(model=model, optimizer=opt).restore(dst).assert_existing_objects_matched()
    _compare(_layer_weights(model), src.saved, "%s before the first step" % name)
    assert int(np.asarray(opt.iterations)) == src.iterations
    _compare(_continue(model, src), src.after, "%s after 2 steps" % name, RTOL, ATOL)


def test_a_fresh_optimizer_fails_the_tolerance(sources, tmp_path):
    """The continuation tolerance tells a restored optimizer from a fresh one."""
    src = sources("resnet")
    dst = str(tmp_path / "out.keras")
    kom.upgrade(src.files["h5"], dst)
    model = keras.models.load_model(dst)
    build, _, _, _, make_opt, _ = CASES["resnet"]
    model.compile(optimizer=make_opt(), loss="mse")  # same weights, optimizer state thrown away
    with pytest.raises(AssertionError):
        _compare(_continue(model, src), src.after, "fresh optimizer", RTOL, ATOL)


@pytest.mark.parametrize("name,needle", [("mobilenetv2", "groups"), ("transformer", "query_shape")])
def test_keras3_itself_cannot_load_the_source(sources, name, needle):
    """Keras 3.15's own load_model of the Keras 2 .h5 fails; `upgrade` above succeeds on the same file."""
    with pytest.raises(Exception) as raised:
        keras.models.load_model(sources(name).files["h5"])
    assert needle in str(raised.value)


def test_a_lambda_layer_is_refused_by_name(tmp_path):
    L = tf_keras.layers
    inp = tf_keras.Input((3,))
    out = L.Dense(2, name="d")(L.Lambda(lambda t: t * 2.0, name="double_it")(inp))
    model = tf_keras.Model(inp, out)
    model.compile(optimizer=tf_keras.optimizers.legacy.Adam(), loss="mse")
    model.train_on_batch(np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))
    src = str(tmp_path / "lambda.h5")
    model.save(src)
    dst = tmp_path / "out.keras"
    with pytest.raises(FormatError) as raised:
        kom.upgrade(src, str(dst))
    text = str(raised.value)
    assert "double_it" in text and "Lambda" in text and "TF checkpoint" in text
    assert not dst.exists()


def test_a_changed_keras2_only_setting_is_refused(tmp_path):
    """A Keras 2 key Keras 3 lacks is dropped only at its Keras 2 default: DepthwiseConv2D groups=1."""
    import json
    import h5py
    src = str(tmp_path / "dw.h5")
    inp = tf_keras.Input((8, 8, 4))
    model = tf_keras.Model(inp, tf_keras.layers.DepthwiseConv2D(3, name="dw")(inp))
    model.compile(optimizer=tf_keras.optimizers.legacy.SGD(), loss="mse")
    model.train_on_batch(np.ones((1, 8, 8, 4), np.float32), np.ones((1, 6, 6, 4), np.float32))
    model.save(src)
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["config"]["groups"] = 2
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(FormatError) as raised:
        kom.upgrade(src, str(tmp_path / "out.keras"))
    assert "'dw'" in str(raised.value) and "groups=2" in str(raised.value)
