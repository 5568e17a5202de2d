"""Write the golden trajectories of the two optimizers that need extra packages.

Run ONCE in an environment with tensorflow 2.15, tensorflow-addons 0.23 and
tensorflow-recommenders 0.7.3 (the project used /work/venvs/k215):

    python tests/golden/make_golden.py

It writes `lazyadam.npz` and `clippyadagrad.npz` next to this file: the inputs (initial
values and every step's gradients) and, after every step, the variables and the
optimizer's weights, plus `golden.json` with the versions and hyperparameters. The tests
replay the same gradients through our implementation and compare.
"""

import json
import os

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 20
SPARSE_INDICES = np.array([0, 2, 2, 5, 0, 7], dtype=np.int32)  # duplicates on purpose; rows 8..11 untouched


def make_inputs(seed):
    rng = np.random.RandomState(seed)
    inputs = {"init/kernel": rng.randn(5, 4).astype("float32"), "init/emb": rng.randn(12, 3).astype("float32")}
    for t in range(STEPS):
        inputs["grad/%d/kernel" % t] = rng.randn(5, 4).astype("float32")
        inputs["grad/%d/emb_values" % t] = rng.randn(len(SPARSE_INDICES), 3).astype("float32")
    inputs["emb_indices"] = SPARSE_INDICES
    return inputs


def run(make_optimizer, inputs, weights_of):
    out = {}
    kernel = tf.Variable(inputs["init/kernel"], name="kernel")
    emb = tf.Variable(inputs["init/emb"], name="emb")
    opt = make_optimizer()
    for t in range(STEPS):
        grads = [tf.constant(inputs["grad/%d/kernel" % t]),
                 tf.IndexedSlices(tf.constant(inputs["grad/%d/emb_values" % t]), tf.constant(SPARSE_INDICES),
                                  tf.constant([12, 3]))]
        opt.apply_gradients(zip(grads, [kernel, emb]))
        out["step/%d/kernel" % t] = kernel.numpy()
        out["step/%d/emb" % t] = emb.numpy()
        for i, w in enumerate(weights_of(opt)):
            out["step/%d/opt/%d" % (t, i)] = np.asarray(w)
    return out


def main():
    import tensorflow_addons as tfa
    import tensorflow_recommenders as tfrs

    meta = {"tensorflow": tf.__version__, "tensorflow_addons": tfa.__version__,
            "tensorflow_recommenders": tfrs.__version__, "steps": STEPS, "cases": {}}

    lazy_cases = {"lazyadam": dict(learning_rate=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-5),
                  "lazyadam_decay": dict(learning_rate=0.05, beta_1=0.7, beta_2=0.9, epsilon=1e-6, decay=0.05)}
    arrays = make_inputs(1)
    for case, kwargs in lazy_cases.items():
        result = run(lambda: tfa.optimizers.LazyAdam(**kwargs), arrays, lambda o: o.get_weights())
        arrays.update({"%s/%s" % (case, k): v for k, v in result.items()})
        meta["cases"][case] = kwargs
    np.savez(os.path.join(HERE, "lazyadam.npz"), **arrays)

    clippy = tfrs.experimental.optimizers.ClippyAdagrad
    clippy_cases = {
        "clippy_export": dict(learning_rate=0.3, initial_accumulator_value=0.2, variable_relative_threshold=0.05,
                              accumulator_relative_threshold=0.01, absolute_threshold=1e-3, epsilon=1e-6,
                              export_clipping_factors=True),
        "clippy_clip_accumulator": dict(learning_rate=0.5, variable_relative_threshold=0.02,
                                        clip_accumulator_update=True, export_clipping_factors=True),
        "clippy_standard": dict(learning_rate=0.5, variable_relative_threshold=0.02,
                                use_standard_accumulator_update=True),
    }
    arrays = make_inputs(2)
    for case, kwargs in clippy_cases.items():
        result = run(lambda: clippy(**kwargs), arrays, lambda o: [v.numpy() for v in o.variables])
        arrays.update({"%s/%s" % (case, k): v for k, v in result.items()})
        meta["cases"][case] = kwargs
    np.savez(os.path.join(HERE, "clippyadagrad.npz"), **arrays)
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
