"""Step time of our 2.11+ optimizers against tf_keras.optimizers (2.11+) and Keras 3 (12.6M parameters).

    python bench/step_time_experimental.py

Keras 3 runs in a subprocess (it cannot share a process with tf_keras' Keras 2 imports
cleanly); the rest as in step_time_v2.py.
"""

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
         ("Adamax", dict(learning_rate=0.001)), ("Nadam", dict(learning_rate=0.001)), ("Ftrl", dict(learning_rate=0.01)),
         ("Lion", dict(learning_rate=0.0001)), ("Adafactor", dict(learning_rate=0.001))]


def keras3_times():
    code = """
import json, sys
sys.path.insert(0, %r)
import keras
from _common import bench
out = {}
for name, kwargs in %r:
    try:
        out[name] = bench(lambda: getattr(keras.optimizers, name)(**kwargs))
    except Exception as e:
        out[name] = None
print(json.dumps(out))
""" % (HERE, CASES)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(result.stderr[-2000:], file=sys.stderr)
        return {}


def main():
    import tf_keras  # reference only

    from _common import bench, table
    from keras_opt_migrate.optimizers import experimental as ex

    k3 = keras3_times()
    rows = []
    for name, kwargs in CASES:
        ours = bench(lambda: getattr(ex, name)(**kwargs))
        ref = bench(lambda: getattr(tf_keras.optimizers, name)(**kwargs))
        k3_ms = k3.get(name)
        rows.append([name, "%.1f" % ours, "%.1f" % ref, "%.2f" % (ours / ref),
                     "%.1f" % k3_ms if k3_ms else "n/a", "%.2f" % (ours / k3_ms) if k3_ms else "n/a"])
        print(rows[-1], flush=True)
    print(table(rows, ["optimizer (2.11+)", "ours ms/step", "tf_keras ms/step", "ours / tf_keras",
                       "Keras 3 ms/step", "ours / Keras 3"]))


if __name__ == "__main__":
    main()
