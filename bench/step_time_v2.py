"""Step time of our v2 optimizers against tf_keras.optimizers.legacy (12.6M parameters).

    python bench/step_time_v2.py [--rounds 9] [--steps 10]

One `apply_gradients` of precomputed gradients per step inside a tf.function; ours and the
reference alternate round by round; prints a Markdown table of the median ms per step for
docs/benchmarks.md.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_keras  # noqa: E402  (reference only)

from _common import compare, make_step, median, parameter_count, table, time_steps  # noqa: E402
from keras_opt_migrate.optimizers import v2  # noqa: E402

CASES = [("SGD", dict(learning_rate=0.01, momentum=0.9)), ("Adam", dict(learning_rate=0.001)),
         ("Adam", dict(learning_rate=0.001, amsgrad=True)), ("Adagrad", dict(learning_rate=0.01)),
         ("RMSprop", dict(learning_rate=0.001, centered=True)), ("Adadelta", dict(learning_rate=1.0)),
         ("Adamax", dict(learning_rate=0.001)), ("Nadam", dict(learning_rate=0.001)),
         ("Ftrl", dict(learning_rate=0.01)), ("LazyAdam", dict(learning_rate=0.001))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing (one timing per round)")
    args = parser.parse_args(argv)
    print("%d parameters, %d rounds x %d steps" % (parameter_count(), args.rounds, args.steps), flush=True)
    rows = []
    for name, kwargs in CASES:
        ref_cls = getattr(tf_keras.optimizers.legacy, "Adam" if name == "LazyAdam" else name)
        ours = make_step(lambda: getattr(v2, name)(**kwargs))
        ref = make_step(lambda: ref_cls(**kwargs))
        times = compare({"ours": lambda n: time_steps(ours, n), "ref": lambda n: time_steps(ref, n)},
                        args.rounds, args.steps)
        ours_ms, ref_ms = median(times["ours"]), median(times["ref"])
        label = name + ("(%s)" % ", ".join("%s=%s" % kv for kv in kwargs.items() if kv[0] != "learning_rate"))
        rows.append([label, "%.1f" % ours_ms, "%.1f" % ref_ms, "%.2f" % (ours_ms / ref_ms)])
        print(rows[-1], flush=True)
    print(table(rows, ["optimizer (v2)", "ours ms/step", "tf_keras legacy ms/step", "ours / legacy"]))


if __name__ == "__main__":
    main()
