"""Step time of our v2 optimizers against tf_keras.optimizers.legacy (12.6M parameters).

    python bench/step_time_v2.py

One `apply_gradients` per step inside a tf.function, gradients precomputed; prints a
Markdown table (ms per step, median of 3 x 20 steps) for docs/benchmarks.md.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_keras  # noqa: E402  (reference only)

from _common import bench, table  # noqa: E402
from keras_opt_migrate.optimizers import v2  # noqa: E402

CASES = [("SGD", dict(learning_rate=0.01, momentum=0.9)), ("Adam", dict(learning_rate=0.001)),
         ("Adam", dict(learning_rate=0.001, amsgrad=True)), ("Adagrad", dict(learning_rate=0.01)),
         ("RMSprop", dict(learning_rate=0.001, centered=True)), ("Adadelta", dict(learning_rate=1.0)),
         ("Adamax", dict(learning_rate=0.001)), ("Nadam", dict(learning_rate=0.001)), ("Ftrl", dict(learning_rate=0.01)),
         ("LazyAdam", dict(learning_rate=0.001))]


def main():
    rows = []
    for name, kwargs in CASES:
        ref_cls = getattr(tf_keras.optimizers.legacy, "Adam" if name == "LazyAdam" else name)
        ours = bench(lambda: getattr(v2, name)(**kwargs))
        ref = bench(lambda: ref_cls(**kwargs))
        label = name + ("(%s)" % ", ".join("%s=%s" % kv for kv in kwargs.items() if kv[0] != "learning_rate"))
        rows.append([label, "%.1f" % ours, "%.1f" % ref, "%.2f" % (ours / ref)])
        print(rows[-1], flush=True)
    print(table(rows, ["optimizer (v2)", "ours ms/step", "tf_keras legacy ms/step", "ours / legacy"]))


if __name__ == "__main__":
    main()
