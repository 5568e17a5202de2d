"""The real-architecture model corpus (fixtures/<label>/models/<case>/) and its continuation metric.

See fixtures/FORMAT.md, section "The model corpus". A case holds a real architecture trained 3 steps by a
Keras 2 version, the files it wrote, every model weight (trainable and not) before and after 2 more steps,
and the optimizer's slots paired with their model variables. A resumed model passes when

* every model weight equals the recorded one exactly before the first continuation step
  (`assert_exact_start`), and
* after each of the same 2 steps, `continuation_error` is within the calibrated tolerance
  (fixtures/models_tolerance.json, written by fixtures/generate/calibrate_models.py; `assert_resumes`),
  at the steps the tolerance judges for that architecture.

The metric is relative to the size of the recorded update since the saved state, per weight that moved
and over all weights together (see `continuation_error`).

Usage from an end-to-end test (Keras 3):

    case = model_cases()[0]
    model = case.build_keras3(keras)             # the same architecture, built from code
    ...restore model weights and optimizer state from case.file("m.h5") with the tool...
    assert_exact_start(model, case)
    assert_resumes(model, case)                  # runs the 2 continuation steps and checks the metric
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from corpus import Case

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOLERANCE_FILE = FIXTURES / "models_tolerance.json"
sys.path.insert(0, str(FIXTURES / "generate"))
import gen_models  # noqa: E402  (numpy only at import time: builders, data, the case plan)

# The Keras 3 constructor arguments each algorithm of the corpus takes from the recorded config.
HYPERPARAMETERS = {
    "Adam": ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad"),
    "SGD": ("learning_rate", "momentum", "nesterov"),
    "RMSprop": ("learning_rate", "rho", "momentum", "epsilon", "centered"),
}


@dataclasses.dataclass
class ModelCase(Case):
    """A model-corpus case: `Case`'s files, arrays and generation, plus the architecture and its data."""

    @property
    def id(self):
        return "%s/models/%s" % (self.truth["label"], self.truth["case"])

    @property
    def label(self):
        return self.truth["label"]

    @property
    def model(self):
        return self.truth["model"]

    def before(self):
        """Every model weight (model.weights order) after the 3 training steps, as saved in the files."""
        return [self.arrays["model/%d" % i] for i in range(len(self.truth["model_weights"]))]

    def after(self):
        """Every model weight after the 2 recorded continuation steps."""
        return [self.arrays["after/%d" % i] for i in range(len(self.truth["model_weights"]))]

    def step_data(self, step):
        """(x, y) of batch `step` (0..4; 3 and 4 are the continuation), x a list for multi-input models."""
        xs = [self.arrays["data/x%d" % k][step] for k in range(self.truth["data"]["inputs"])]
        return (xs[0] if len(xs) == 1 else xs), self.arrays["data/y"][step]

    def continuation_steps(self):
        s = self.truth["steps"]
        return list(range(s["train"], s["train"] + s["continue"]))

    def build_keras3(self, keras):
        """The same architecture built from code with `keras` (Dropout rates 0), weights NOT set."""
        model = gen_models.MODELS[self.model][0](keras)
        gen_models.zero_dropout(model)
        return model

    def keras3_optimizer(self, keras):
        """A fresh Keras 3 optimizer of the recorded algorithm with the recorded hyperparameters."""
        opt = self.truth["optimizer"]
        cls, config = opt["class_name"], opt["config"]
        if config.get("decay"):
            raise ValueError("%s: legacy decay %r has no Keras 3 equivalent" % (self.id, config["decay"]))
        kwargs = {k: config[k] for k in HYPERPARAMETERS[cls] if k in config}
        return getattr(keras.optimizers, cls)(**kwargs)


def model_cases(label=None):
    out = []
    for truth_path in sorted(FIXTURES.glob("*/models/*/truth.json")):
        with open(truth_path) as f:
            case = ModelCase(truth_path.parent, json.load(f))
        if label is None or case.label == label:
            out.append(case)
    return out


def case_by_id(case_id):
    return {c.id: c for c in model_cases()}[case_id]


def tolerance():
    with open(TOLERANCE_FILE) as f:
        return json.load(f)["tolerance"]


def _values(weights):
    return [np.asarray(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float64) for w in weights]


def check_weight_list(case, weights):
    """Raise unless `weights` (variables or arrays) match the recorded model.weights in count and shapes."""
    meta = case.truth["model_weights"]
    if len(weights) != len(meta):
        raise AssertionError("%s: model has %d weights, the truth %d" % (case.id, len(weights), len(meta)))
    for i, (w, m) in enumerate(zip(weights, meta)):
        if list(w.shape) != m["shape"]:
            raise AssertionError("%s: weight %d (truth %s) has shape %s, the truth %s"
                                 % (case.id, i, m["name"], list(w.shape), m["shape"]))


# A trainable weight whose recorded update is, per element (RMS), below NOISE_FLOOR times the model-wide
# RMS update moves on rounding noise (MultiHeadAttention's key bias: softmax is shift-invariant, so its
# true gradient is 0; a BatchNorm beta feeding the next BatchNorm likewise), and Adam / RMSprop normalise
# that noise: no framework reproduces its trajectory, not even the same tf_keras (relative error ~1).
# It is left out of max_trainable and still counts in `overall`.
NOISE_FLOOR = 1e-2


def recorded_steps(case):
    """Every model weight after each continuation step, as recorded (step 1 .. last)."""
    n, last = len(case.truth["model_weights"]), case.truth["steps"]["continue"]
    return [[case.arrays["%s/%d" % ("after" if k == last else "after%d" % k, i)] for i in range(n)]
            for k in range(1, last + 1)]


def _step_error(case, got, want):
    check_weight_list(case, got)
    got, want, before = _values(got), _values(want), _values(case.before())
    sq_err = [float(np.sum((g - a) ** 2)) for g, a in zip(got, want)]
    sq_upd = [float(np.sum((a - b) ** 2)) for a, b in zip(want, before)]
    rms_all = np.sqrt(sum(sq_upd) / sum(a.size for a in want))
    per, noise, static = {}, {}, {}
    worst = {True: (0.0, None), False: (0.0, None)}
    for i, meta in enumerate(case.truth["model_weights"]):
        name, trainable = meta["name"], meta["trainable"]
        if sq_upd[i] == 0:
            if sq_err[i] > 0:
                static[name] = float(np.max(np.abs(got[i] - want[i])))
            continue
        if trainable:
            rel = float(np.sqrt(sq_err[i] / sq_upd[i]))
            if np.sqrt(sq_upd[i] / want[i].size) < NOISE_FLOOR * rms_all:
                noise[name] = rel
                continue
        else:
            rel = float(np.sqrt(sq_err[i] / max(float(np.sum(want[i] ** 2)), 1e-300)))
        per[name] = rel
        if rel >= worst[trainable][0]:
            worst[trainable] = (rel, name)
    return {"max_trainable": worst[True][0], "worst_trainable": worst[True][1],
            "max_non_trainable": worst[False][0], "worst_non_trainable": worst[False][1],
            "overall": float(np.sqrt(sum(sq_err) / sum(sq_upd))), "moved": len(per) + len(noise),
            "noise_driven": noise, "static_changed": static, "per_variable": per}


def continuation_error(case, got_steps):
    """How far a continuation is from the recorded one, per continuation step ("step1", "step2").

    got_steps: one list of every model weight (model.weights order) per continuation step, as
    `run_continuation` returns it. For each step, against the recorded weights after that step:

    * max_trainable: the largest ||got_i - want_i|| / ||want_i - before_i|| over the trainable weights
      the recorded continuation moved (the relative error of the update since the saved state),
      noise-driven weights (NOISE_FLOOR) excepted (listed under noise_driven);
    * max_non_trainable: the largest ||got_i - want_i|| / ||want_i|| over the moved non-trainable
      weights (BatchNorm statistics: running averages whose few-step change is tiny by design, and which
      Keras 2's fused BatchNorm feeds the unbiased batch variance n/(n-1) where Keras 3 uses the biased
      one, so their error is measured against their value);
    * overall: ||got - want|| / ||want - before|| over all weights together;
    * static_changed: weights the recorded continuation left untouched (a frozen layer) that got changed.
    """
    want = recorded_steps(case)
    if len(got_steps) != len(want):
        raise AssertionError("%s: %d continuation steps given, the truth has %d" % (case.id, len(got_steps), len(want)))
    return {"step%d" % (k + 1): _step_error(case, g, w) for k, (g, w) in enumerate(zip(got_steps, want))}


def judged_steps(case, tol):
    """The continuation steps the tolerance judges for this case's architecture (see FORMAT.md)."""
    steps = tol.get("judged_steps", {})
    return steps.get(case.model, steps.get("default", ["step1", "step2"]))


def within(case, errors, tol=None):
    """True when every criterion of the calibrated tolerance holds at every judged step."""
    tol = tol or tolerance()
    limits = tol["limits"]
    return all(all(errors[step][k] <= limits[k] for k in limits) and not errors[step]["static_changed"]
               for step in judged_steps(case, tol))


def assert_exact_start(model, case):
    """Every model weight (trainable and not, model.weights order) equals the recorded one bit for bit."""
    check_weight_list(case, model.weights)
    for i, (w, want) in enumerate(zip(model.weights, case.before())):
        got = np.asarray(w.numpy())
        if not np.array_equal(got, want):
            raise AssertionError("%s: weight %d (%s) differs from the truth before the continuation (max |d| %g)"
                                 % (case.id, i, case.truth["model_weights"][i]["name"],
                                    float(np.max(np.abs(got.astype(np.float64) - want)))))


def run_continuation(model, case, method="dense"):
    """Run the recorded continuation steps; return every model weight after each step (a list per step).

    method "dense" (the calibrated one): per batch, the gradient of the mean categorical crossentropy
    of `model(x, training=True)` (BatchNorm statistics update as in train_on_batch), every
    tf.IndexedSlices gradient made dense, then one `model.optimizer.apply_gradients` — the Keras 2
    semantics of an embedding gradient whose rows repeat (Keras 2 sums the duplicate rows before the
    update; Keras 3's TF-backend Adam and RMSprop square each duplicate row separately, see FORMAT.md).
    method "train_on_batch": Keras 3's own train_on_batch.
    """
    out = []
    if method == "train_on_batch":
        for step in case.continuation_steps():
            x, y = case.step_data(step)
            model.train_on_batch(x, y)
            out.append([np.asarray(w.numpy()) for w in model.weights])
        return out
    import keras
    import tensorflow as tf
    for step in case.continuation_steps():
        x, y = case.step_data(step)
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, pred))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients([(tf.convert_to_tensor(g), v) for g, v in zip(grads, model.trainable_variables)])
        out.append([np.asarray(w.numpy()) for w in model.weights])
    return out


def assert_resumes(model, case, tol=None):
    """Run the continuation on `model` (its optimizer restored) and assert the calibrated tolerance."""
    tol = tol or tolerance()
    errors = continuation_error(case, run_continuation(model, case))
    if not within(case, errors, tol):
        lines = ["%s: %s trainable %.3g (%s), non-trainable %.3g (%s), overall %.3g, static %s" % (
            case.id, step, e["max_trainable"], e["worst_trainable"], e["max_non_trainable"],
            e["worst_non_trainable"], e["overall"], e["static_changed"]) for step, e in errors.items()]
        raise AssertionError("continuation outside the tolerance %s (judged: %s)\n%s"
                             % (tol["limits"], judged_steps(case, tol), "\n".join(lines)))
    return errors
