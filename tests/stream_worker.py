"""Peak memory of each streaming command on a ~400 MB state, in a fresh interpreter.

Run by tests/test_streaming.py: `python stream_worker.py build DIR` writes the state,
`python stream_worker.py measure DIR` prints one JSON object {"state_bytes", "largest_bytes",
"peaks": {command: peak RSS above the baseline}}.

The state is built with real tf_keras (legacy Adam over 4 Dense 2048 x 2048 layers and one
2048 x 8192 output kernel, the largest tensor: 64 MiB of 403 MB) and written as a
`tf.train.Checkpoint` and a full-model `.h5`, in its own process. The measuring process
imports TensorFlow and this package and converts a small fixture once (TensorFlow's runtime
start-up is not the state's), then takes its RSS as the baseline. Before each command VmHWM
is reset (`/proc/self/clear_refs`) and free memory is handed back (`malloc_trim`); the
command's peak is VmHWM after it minus VmRSS before it.
"""

import gc
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WIDTH, HIDDEN, OUT = 2048, 4, 8192


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no %s in /proc/self/status" % field)


def _settle():
    """RSS once garbage is collected and the C allocator has returned its free memory to the system."""
    import ctypes
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _status("VmRSS")


def build(d):
    import numpy as np
    from legacy_adam import write_legacy_adam
    model = write_legacy_adam(d, WIDTH, [("h%d" % i, WIDTH) for i in range(HIDDEN)] + [("out", OUT)], seed=0,
                              iterations=5, h5=True)
    return sum(3 * int(np.prod(v.shape)) * 4 for v in model.trainable_variables)


def measure(d, warm_source):
    import tensorflow as tf  # noqa: F401
    import keras_opt_migrate as kom
    from keras_opt_migrate import report
    from keras_opt_migrate.audit import audit
    from keras_opt_migrate.diff import diff
    src, h5 = os.path.join(d, "src.ckpt"), os.path.join(d, "m.h5")
    # TensorFlow's runtime (kernels, thread pools) starts on a small file of the same kinds
    warm = os.path.join(d, "warm")
    os.makedirs(warm)
    kom.convert(warm_source, os.path.join(warm, "w.ckpt"), "experimental", source_optimizer="adam")
    kom.convert(warm_source, os.path.join(warm, "w.kom.h5"), "v2", source_optimizer="adam")
    audit(os.path.join(warm, "w.ckpt"), optimizer="adam")
    baseline = _settle()
    commands = {
        "convert ckpt -> 2.11+ ckpt": lambda: kom.convert(src, os.path.join(d, "e.ckpt"), "experimental",
                                                          source_optimizer="adam"),
        "upgrade ckpt -> keras3 ckpt": lambda: kom.upgrade(src, os.path.join(d, "k3.ckpt"), source_optimizer="adam"),
        "convert ckpt -> tf1 name-based": lambda: kom.convert(src, os.path.join(d, "t1.ckpt"), "tf1",
                                                              format="tf1_checkpoint", source_optimizer="adam"),
        "convert ckpt -> native": lambda: kom.convert(src, os.path.join(d, "n.kom.h5"), "v2", source_optimizer="adam"),
        "convert h5 -> keras3 .keras": lambda: kom.convert(h5, os.path.join(d, "k.keras"), "keras3"),
        "convert h5 -> keras3 .weights.h5": lambda: kom.convert(h5, os.path.join(d, "k.weights.h5"), "keras3"),
        "convert h5 -> 2.11+ .h5": lambda: kom.convert(h5, os.path.join(d, "e.h5"), "experimental"),
        "inspect ckpt": lambda: report.describe(kom.load_state(src, optimizer="adam")),
        "audit ckpt": lambda: audit(src, optimizer="adam"),
        "audit .keras": lambda: audit(os.path.join(d, "k.keras")),
        "diff ckpt vs 2.11+ ckpt": lambda: diff(src, os.path.join(d, "e.ckpt"), optimizer="adam"),
    }
    peaks = {}
    for name, command in commands.items():
        before = _settle()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        result = command()
        peaks[name] = _status("VmHWM") - before
        if name.startswith("diff"):
            assert result.equal, result.format_text()
        del result
    with open(os.path.join(d, "state_bytes")) as f:
        state_bytes = int(f.read())
    print(json.dumps({"state_bytes": state_bytes, "largest_bytes": WIDTH * OUT * 4, "baseline": baseline,
                      "peaks": peaks}))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        size = build(sys.argv[2])
        with open(os.path.join(sys.argv[2], "state_bytes"), "w") as f:
            f.write(str(size))
    else:
        measure(sys.argv[2], sys.argv[3])
