"""Resume every fixture written by our generations: restore the saved optimizer state into
our optimizer, run the 2 recorded continuation steps (mse on the recorded batches, one
apply_gradients per batch) and match the recorded model weights within 1e-5."""

import numpy as np
import pytest
import tensorflow as tf

from corpus import all_cases
from keras_opt_migrate import load_state
from keras_opt_migrate.errors import KerasOptMigrateError
from keras_opt_migrate.optimizers import from_state

# Files in the order we try them: the first one that carries optimizer slots is used.
PREFERRED = ("ckpt/ckpt-1", "w.ckpt", "m.h5", "m.keras", "m.weights.h5", "sm")
# Keras 3 fixtures whose update rule differs from the tf_keras 2.11+ one we implement.
KERAS3_DIFFERENT = {
    "nadam": "Keras 3 Nadam advances u_product once per step; tf_keras per tf.function call and variable",
}


def _cases():
    out = []
    for case in all_cases():
        gen = case.generation
        if gen in ("v2", "experimental") or (gen == "keras3" and case.truth["group"] == "keras3"):
            out.append(pytest.param(case, id=case.id))
    return out


def _model_vars(case):
    return [tf.Variable(case.arrays["model/%d" % i], name=w["name"].split(":")[0])
            for i, w in enumerate(case.truth["model_weights"])]


def _loss(case, variables, x, y):
    if case.truth["model"] == "emb":
        table, kernel, bias = variables
        h = tf.reshape(tf.gather(table, tf.cast(x, tf.int32)), [x.shape[0], -1])
        out = tf.matmul(h, kernel) + bias
    else:
        k1, b1, k2, b2 = variables
        out = tf.matmul(tf.tanh(tf.matmul(x, k1) + b1), k2) + b2
    return tf.reduce_mean(tf.reduce_mean(tf.square(out - y), axis=-1))


# Keras 3 embedding (sparse) fixtures: our continuation differs from the recorded one by
# 4e-3 .. 1.3e-2 while the dense Keras 3 fixtures and all Keras 2 sparse fixtures match. Keras 3
# on TensorFlow applies an IndexedSlices gradient without summing repeated ids first (each
# duplicate's square enters the second moment); tf_keras, TF1 and our optimizers sum them.
KERAS3_SPARSE_UNSUMMED = ("k315/keras3/adam_emb", "k315/keras3/adagrad_emb")


def _optimizer_hints(case):
    optimizer = case.truth["optimizer"]
    inner = optimizer.get("config", {}).get("inner_optimizer")
    if inner:  # a loss-scale optimizer: its inner optimizer holds the state
        return inner.get("class_name"), inner.get("config")
    return optimizer.get("class_name"), optimizer.get("config")


def _load(case):
    class_name, config = _optimizer_hints(case)
    hints = dict(optimizer=class_name, config=config,
                 variables=[(w["name"].split(":")[0], w["shape"], w["dtype"]) for w in case.truth["model_weights"]])
    errors = []
    for name in PREFERRED:
        if not case.has(name):
            continue
        try:
            state = load_state(str(case.file(name)), **hints)
        except KerasOptMigrateError as e:
            errors.append("%s: %s" % (name, e))
            continue
        if any(state.slots.values()) or not case.truth["optimizer_weights"][1:]:
            return name, state
        errors.append("%s: no slots" % name)
    pytest.skip("no readable file with optimizer state: %s" % "; ".join(errors)[:300])


@pytest.mark.parametrize("case", _cases())
def test_resume_matches_recorded_continuation(case):
    name, state = _load(case)
    algorithm = state.optimizer
    if case.generation == "keras3" and algorithm in KERAS3_DIFFERENT:
        pytest.skip(KERAS3_DIFFERENT[algorithm])
    if state.config.get("gradient_accumulation_steps"):
        pytest.skip("Keras 3 gradient accumulation has no tf_keras 2.11+ counterpart")
    try:
        optimizer = from_state(state)
    except KerasOptMigrateError as e:
        pytest.skip("no implementation for %s/%s: %s" % (state.generation, algorithm, e))
    variables = _model_vars(case)
    xs, ys = case.batches()
    train = case.truth["steps"]["train"]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = _loss(case, variables, x, y)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for i in range(train, train + case.truth["steps"]["continue"]):
        step(tf.constant(xs[i]), tf.constant(ys[i]))
    worst = max(float(np.max(np.abs(v.numpy() - a))) for v, a in zip(variables, case.after_weights()))
    if case.id in KERAS3_SPARSE_UNSUMMED:
        # Run, not skipped: the difference must still be there (else this entry is stale).
        assert worst > 1e-5, "%s now matches Keras 3's sparse continuation: drop it from KERAS3_SPARSE_UNSUMMED" % case.id
        pytest.xfail("Keras 3 on TensorFlow applies an embedding's IndexedSlices gradient without summing repeated "
                     "ids first; our 2.11+ optimizers (like tf_keras) sum them: max |w - after| = %.3g" % worst)
    assert worst <= 1e-5, "%s via %s: max |w - after| = %g" % (case.id, name, worst)
