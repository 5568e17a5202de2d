"""Run the real tensorflow-recommenders ClippyAdagrad and save what the resume test needs.

    python tfrs_reference.py OUT_DIR CONFIG_JSON

Runs in its own process because tfrs 0.7.3 subclasses `tf.keras.optimizers.Optimizer`, which
must be tf_keras (TF_USE_LEGACY_KERAS=1, set before TensorFlow is imported). A model with an
embedding table (sparse `IndexedSlices` gradients, repeated ids) and a dense layer trains
TRAIN steps, is saved as `w.ckpt` (save_weights), `m.h5` and `m.keras`, and trains on to STEPS;
`reference.npz` holds the batches, the weights at the save and after every later step.
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS, TRAIN = 53, 3
TABLE, WIDTH, IDS, BATCH = 12, 3, 4, 8


def batches(seed=0):
    rng = np.random.RandomState(seed)
    xs = rng.randint(0, TABLE - 2, size=(STEPS, BATCH, IDS)).astype("int32")  # the last rows never get a gradient
    ys = rng.randn(STEPS, BATCH, 2).astype("float32")
    return xs, ys


def main(out, config):
    import tensorflow_recommenders as tfrs
    import tf_keras
    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential([tf_keras.layers.Input((IDS,), dtype="int32"),
                                 tf_keras.layers.Embedding(TABLE, WIDTH, name="emb"),
                                 tf_keras.layers.Flatten(), tf_keras.layers.Dense(2, name="out")])
    optimizer = tfrs.experimental.optimizers.ClippyAdagrad(**config)
    model.compile(optimizer=optimizer, loss="mse")
    xs, ys = batches()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    for i in range(TRAIN):
        step(tf.constant(xs[i]), tf.constant(ys[i]))
    os.makedirs(out, exist_ok=True)
    model.save_weights(os.path.join(out, "w.ckpt"))
    model.save(os.path.join(out, "m.h5"))
    model.save(os.path.join(out, "m.keras"))
    arrays = {"x": xs, "y": ys}
    arrays.update({"saved/%d" % i: v.numpy() for i, v in enumerate(model.trainable_variables)})
    for t in range(TRAIN, STEPS):
        step(tf.constant(xs[t]), tf.constant(ys[t]))
        arrays.update({"step/%d/%d" % (t, i): v.numpy() for i, v in enumerate(model.trainable_variables)})
    np.savez(os.path.join(out, "reference.npz"), **arrays)
    names = [v.name.split(":")[0] for v in model.trainable_variables]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"variables": names, "get_config": {k: v for k, v in optimizer.get_config().items()
                                                      if isinstance(v, (int, float, bool, str, type(None)))},
                   "tensorflow_recommenders": tfrs.__version__, "train": TRAIN, "steps": STEPS}, f)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
