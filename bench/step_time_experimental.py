"""Step time of our 2.11+ optimizers against tf_keras.optimizers (2.11+) and Keras 3 (12.6M parameters).

    python bench/step_time_experimental.py [--rounds 9] [--steps 10] [--only Adam,SGD]

Contenders per optimizer: ours (default fast path), ours with `reference_ops=True` (tf_keras'
exact op sequence), tf_keras 2.21, Keras 3 and, where one exists, the fused tf_keras legacy
(OptimizerV2) optimizer. One `apply_gradients` of precomputed gradients per step inside a
tf.function. Keras 3 runs in a worker subprocess (Keras 3 and tf_keras do not share a process
cleanly) that waits on a pipe while the others are timed, so that all contenders alternate
round by round: load from other processes then hits them alike. Reported: the median over the
rounds of the mean ms per step. A contender that fails is reported with its error, not dropped.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CASES = [("SGD", dict(learning_rate=0.01, momentum=0.9)), ("Adam", dict(learning_rate=0.001)),
         ("AdamW", dict(learning_rate=0.001, weight_decay=0.004)), ("Adagrad", dict(learning_rate=0.01)),
         ("RMSprop", dict(learning_rate=0.001, centered=True)), ("Adadelta", dict(learning_rate=1.0)),
         ("Adamax", dict(learning_rate=0.001)), ("Nadam", dict(learning_rate=0.001)),
         ("Ftrl", dict(learning_rate=0.01)), ("Lion", dict(learning_rate=0.0001)),
         ("Adafactor", dict(learning_rate=0.001))]
LEGACY = ("SGD", "Adam", "Adagrad", "RMSprop", "Adadelta", "Adamax", "Nadam", "Ftrl")

# The Keras 3 worker: one JSON command per line on stdin, one JSON answer per line on stdout.
# Keras 3 model variables are keras.Variable objects, whose names cannot contain "/" (Keras 3
# Adafactor names its slots after them: tf.Variables named "dense_0/kernel" made it fail).
WORKER = r"""
import json, sys, traceback
sys.path.insert(0, %r)
import keras
import tensorflow as tf
from _common import initial_values, make_step, time_steps

def keras_variables():
    return [keras.Variable(value, name=name.replace("/", "_")) for name, value in initial_values()]

step = None
for line in sys.stdin:
    command = json.loads(line)
    try:
        if command["cmd"] == "setup":
            step = None
            step = make_step(lambda: getattr(keras.optimizers, command["name"])(**command["kwargs"]), keras_variables)
            answer = {"ok": keras.__version__}
        else:
            answer = {"ms": time_steps(step, command["steps"])}
    except Exception as e:
        answer = {"error": "%%s: %%s" %% (type(e).__name__, str(e).strip().splitlines()[-1] if str(e).strip() else "")}
        traceback.print_exc()
    print(json.dumps(answer), flush=True)
""" % HERE


class Keras3:
    """The Keras 3 worker process."""

    def __init__(self):
        env = dict(os.environ)
        env.pop("TF_USE_LEGACY_KERAS", None)
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def ask(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the Keras 3 worker exited (exit code %s); its traceback is above"
                               % self.proc.wait())
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing (one timing per round)")
    parser.add_argument("--only", default="", help="comma-separated optimizer names")
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tf_keras  # reference only

    from _common import compare, make_step, median, parameter_count, table, time_steps
    from keras_opt_migrate.optimizers import experimental as ex

    cases = [c for c in CASES if not args.only or c[0] in args.only.split(",")]
    print("%d parameters, %d rounds x %d steps, TensorFlow %s, tf_keras %s"
          % (parameter_count(), args.rounds, args.steps, tf.__version__, tf_keras.__version__), flush=True)
    keras3 = Keras3()
    rows, failures = [], []
    try:
        for name, kwargs in cases:
            timers = {}
            makers = {"ours": lambda: getattr(ex, name)(**kwargs),
                      "ours_ref": lambda: getattr(ex, name)(reference_ops=True, **kwargs),
                      "tf_keras": lambda: getattr(tf_keras.optimizers, name)(**kwargs)}
            if name in LEGACY:
                makers["legacy"] = lambda: getattr(tf_keras.optimizers.legacy, name)(**kwargs)
            for key, maker in makers.items():
                step = make_step(maker)
                timers[key] = lambda n, step=step: time_steps(step, n)
            answer = keras3.ask(cmd="setup", name=name, kwargs=kwargs)
            if "error" in answer:
                failures.append("%s, Keras %s: %s" % (name, "3", answer["error"]))
                print("Keras 3 %s failed: %s" % (name, answer["error"]), file=sys.stderr, flush=True)
            else:
                timers["keras3"] = lambda n: keras3.ask(cmd="time", steps=n)["ms"]
            times = {k: median(v) for k, v in compare(timers, args.rounds, args.steps).items()}

            def cell(key):
                return "%.1f" % times[key] if key in times else "n/a"

            def ratio(key):
                return "%.2f" % (times["ours"] / times[key]) if key in times else "n/a"

            rows.append([name, cell("ours"), cell("ours_ref"), cell("tf_keras"), cell("keras3"), cell("legacy"),
                         ratio("tf_keras"), ratio("keras3")])
            print(rows[-1], flush=True)
    finally:
        keras3.close()
    print(table(rows, ["optimizer (2.11+)", "ours ms/step", "ours reference_ops", "tf_keras", "Keras 3",
                       "tf_keras legacy (fused)", "ours / tf_keras", "ours / Keras 3"]))
    for failure in failures:
        print("failed: " + failure)


if __name__ == "__main__":
    main()
