"""Every fixture written by the v1 generation resumes in our optimizers.

For each file a real Keras v1 optimizer, Keras' TFOptimizer or a TF1 optimizer wrote (see
fixtures/FORMAT.md): read it with `load_state`, restore it into our optimizer through the
public entry points (`optimizers.from_state(..., generation="v1")`, `restore_into`), run the
2 recorded continuation batches (mse, one update per batch) from the recorded model weights,
and match the real run's weights within 1e-5.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate import load_state
from keras_opt_migrate.errors import UnsupportedFormatError
from keras_opt_migrate.optimizers import from_state
from keras_opt_migrate.optimizers import v1
from keras_opt_migrate.optimizers.registry import spec_for_class
from keras_opt_migrate.restore import restore_into
from corpus import all_cases

TOL = 1e-5
GROUPS = ("v1", "tfoptimizer", "tf1_namebased", "tf1_objectbased")


def _files():
    out = []
    for case in all_cases():
        if case.truth["group"] in GROUPS:
            for name in sorted(case.truth["files"]):
                out.append(pytest.param(case, name, id="%s/%s" % (case.id, name)))
    return out


FILES = _files()


def _load(case, name):
    """load_state; where the file itself cannot tell the algorithm (TF1 files hold no class name), the
    truth's algorithm must be among the candidates, and the hint then decides."""
    path = str(case.file(name))
    state = load_state(path)
    if state.ambiguous:
        algo = spec_for_class(case.truth["optimizer"]["class_name"], "tf1").name
        assert algo in state.candidates, (algo, state.candidates)
        return load_state(path, optimizer=algo)
    return state


def _model_variables(case):
    return [tf.Variable(value, name=w["name"].split(":")[0])
            for w, value in zip(case.truth["model_weights"], case.model_weights())]


def _forward(case, params, x):
    if case.truth["model"] == "dense":
        w1, b1, w2, b2 = params
        return tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2) + b2
    emb, w, b = params
    return tf.matmul(tf.reshape(tf.gather(emb, x), (x.shape[0], -1)), w) + b


def _continue(case, opt, params):
    x, y = case.batches()
    steps = case.truth["steps"]
    for i in range(steps["train"], steps["train"] + steps["continue"]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(_forward(case, params, x[i]) - y[i]))
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
    return max(float(np.max(np.abs(p.numpy() - a))) for p, a in zip(params, case.after_weights()))


@pytest.mark.skipif(not FILES, reason="no v1-generation fixtures in the corpus")
@pytest.mark.parametrize("case,name", FILES)
def test_fixture_resumes_in_our_optimizer(case, name):
    try:
        state = _load(case, name)
    except UnsupportedFormatError as e:
        # Files the real version wrote without optimizer state: v1 `save_weights` in graph mode,
        # and TFOptimizer `.h5` (Keras: "TensorFlow optimizers do not make it possible to access
        # optimizer attributes..."). They must be refused, and the fixture notes must agree.
        notes = " ".join(case.truth["notes"])
        assert ("0 .OPTIMIZER_SLOT keys" in notes and "optimizer-rooted keys: none" in notes) \
            or "no optimizer_weights group" in notes, (name, str(e))
        return
    params = _model_variables(case)
    if case.truth["group"] == "v1":
        opt = from_state(state, generation="v1")
        assert type(opt).__name__ == case.truth["optimizer"]["class_name"]
    else:
        # TF1 files keep no hyperparameters: the user constructs the optimizer, as they did originally.
        cls = getattr(tf.compat.v1.train, case.truth["optimizer"]["class_name"])
        opt = v1.TFOptimizer(cls(**case.truth["optimizer"]["config"]))
        restore_into(opt, state)
    if case.truth["extra"].get("iterations") is not None and state.iterations is None:
        # v1 RMSprop/Adagrad/Adadelta keep `iterations` outside their weights, so no file has it; with
        # `decay` the step size depends on it. Without it the run cannot be continued exactly:
        lost = _continue(case, from_state(state, generation="v1"), _model_variables(case))
        if case.truth["optimizer"]["config"].get("decay"):
            assert lost > TOL
        opt.iterations.assign(int(case.arrays["extra/iterations"]))  # what the user must supply
    worst = _continue(case, opt, params)
    assert opt.restore_report is not None and opt.restore_report["assigned"] > 0 or not state.slots
    assert worst <= TOL, "%s: max |ours - real| after the continuation = %g" % (name, worst)
