"""Scale benchmark: a >= 1 GB Adam state, our streaming commands against `cp`, tf_keras and Keras 3.

    python bench/scale.py [--size-gb 1.0] [--workdir DIR] [--keep] [--only STEP,STEP]

Builds, with real tf_keras, a legacy (OptimizerV2) Adam state of the requested size (model
weights + m + v; many 2048 x 2048 Dense layers plus one large output kernel), written by
`tf.train.Checkpoint(model=, optimizer=).write` and, for the `.keras` conversion whose source
must carry a model config, by tf_keras `model.save('m.h5')`. Then each step runs in its own
subprocess, one after the other, and the parent records its wall time and peak RSS
(`os.wait4`'s ru_maxrss of that child alone):

  cp                     `cp` of the legacy checkpoint's files (the bytes convert reads)
  tf_keras restore+save  build the model + legacy Adam, `Checkpoint.read`, `Checkpoint.write`
  keras3 save / load     a Keras 3 model + Adam holding the same values: `model.save('.keras')`,
                         `keras.models.load_model` (timed separately inside one process)
  ours: convert -> 2.11+, upgrade -> Keras 3 checkpoint layout, convert .h5 -> Keras 3 .keras,
        inspect, audit, diff (the source against its 2.11+ conversion)

Each child also reports its own time after its imports ("work"), so interpreter and
TensorFlow start-up can be told apart from the work that scales with the state. Peak memory
is shown above the matching import baseline (a child that only imports the same libraries).
The Markdown table goes to stdout; the working directory is removed unless --keep.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH = 2048
BYTES = 4  # float32
PY = sys.executable


# -- the state -------------------------------------------------------------------------------------

def plan(size_bytes):
    """(hidden Dense layers of WIDTH x WIDTH, output units) so weights + m + v reach `size_bytes`.

    A quarter of the parameters sit in one output kernel (WIDTH x out): the single largest tensor.
    """
    params = size_bytes // (3 * BYTES)
    out = max(1, params // 4 // WIDTH)
    layers = max(1, -(-(params - WIDTH * out) // (WIDTH * WIDTH + WIDTH)))
    return layers, out


def _tf_keras_model(keras, layers, out):
    model = keras.Sequential([keras.Input((WIDTH,))] + [keras.layers.Dense(WIDTH, name="hidden_%d" % i)
                                                        for i in range(layers)]
                             + [keras.layers.Dense(out, name="out")])
    return model


def child_build(args):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    t0 = time.perf_counter()
    layers, out = plan(int(args.size_gb * 1e9))
    model = _tf_keras_model(keras, layers, out)
    opt = keras.optimizers.legacy.Adam(learning_rate=1e-3)
    opt._create_all_weights(model.trainable_variables)
    rng = np.random.default_rng(0)
    for var in model.trainable_variables:
        shape = tuple(var.shape)
        var.assign(rng.standard_normal(shape, dtype=np.float32) * 0.01)
        opt.get_slot(var, "m").assign(rng.standard_normal(shape, dtype=np.float32) * 1e-3)
        opt.get_slot(var, "v").assign(rng.random(shape, dtype=np.float32) * 1e-6)
    opt.iterations.assign(1234)
    tf.train.Checkpoint(model=model, optimizer=opt).write(os.path.join(args.workdir, "src", "legacy.ckpt"))
    model.compile(optimizer=opt, loss="mse")
    model.save(os.path.join(args.workdir, "legacy.h5"))
    return {"work_s": time.perf_counter() - t0, "layers": layers, "out": out,
            "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
            "largest_bytes": WIDTH * out * BYTES}


BASELINE_MODULES = {"tf_keras": ["tensorflow", "tf_keras"], "keras3": ["tensorflow", "keras"],
                    "ours_notf": ["keras_opt_migrate", "keras_opt_migrate.cli", "keras_opt_migrate.report"],
                    "ours": ["keras_opt_migrate", "keras_opt_migrate.cli", "keras_opt_migrate.report"]}


def child_baseline(args):
    """Only the imports of a step: the memory every step of that kind starts from."""
    import importlib
    if args.libs == "tf_keras":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    for name in BASELINE_MODULES[args.libs]:
        importlib.import_module(name)
    if args.libs == "ours":
        importlib.import_module("keras_opt_migrate.cli")._import_tensorflow_quietly()
    return {"work_s": 0.0}


def child_tf_keras(args):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf_keras as keras
    info = json.load(open(os.path.join(args.workdir, "build.json")))
    t0 = time.perf_counter()
    model = _tf_keras_model(keras, info["layers"], info["out"])
    opt = keras.optimizers.legacy.Adam(learning_rate=1e-3)
    opt._create_all_weights(model.trainable_variables)
    t1 = time.perf_counter()
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
    ckpt.read(os.path.join(args.workdir, "src", "legacy.ckpt")).assert_consumed()
    ckpt.write(os.path.join(args.workdir, "out", "tf_keras", "resaved.ckpt"))
    return {"work_s": time.perf_counter() - t1, "build_s": t1 - t0}


def child_keras3(args):
    import numpy as np
    import tensorflow as tf
    import keras
    info = json.load(open(os.path.join(args.workdir, "build.json")))
    reader = tf.train.load_checkpoint(os.path.join(args.workdir, "src", "legacy.ckpt"))
    model = keras.Sequential([keras.Input((WIDTH,))] + [keras.layers.Dense(WIDTH, name="hidden_%d" % i)
                                                        for i in range(info["layers"])]
                             + [keras.layers.Dense(info["out"], name="out")])
    opt = keras.optimizers.Adam(learning_rate=1e-3)
    model.compile(optimizer=opt, loss="mse")
    opt.build(model.trainable_variables)
    for i, layer in enumerate(model.layers):
        for var in layer.trainable_weights:
            base = "model/layer_with_weights-%d/%s" % (i, var.name)
            var.assign(reader.get_tensor(base + "/.ATTRIBUTES/VARIABLE_VALUE"))
            index = opt._get_variable_index(var)
            for slot, own in (("m", opt._momentums), ("v", opt._velocities)):
                own[index].assign(reader.get_tensor(
                    "%s/.OPTIMIZER_SLOT/optimizer/%s/.ATTRIBUTES/VARIABLE_VALUE" % (base, slot)))
    opt.iterations.assign(np.int64(1234))
    path = os.path.join(args.workdir, "out", "keras3_own.keras")
    t0 = time.perf_counter()
    model.save(path)
    t1 = time.perf_counter()
    del model, opt
    loaded = keras.models.load_model(path)
    t2 = time.perf_counter()
    assert int(loaded.optimizer.iterations.numpy()) == 1234
    return {"work_s": t2 - t0, "save_s": t1 - t0, "load_s": t2 - t1, "bytes": os.path.getsize(path)}


def child_ours(args):
    """One CLI command in-process, timed after the imports a user's process makes anyway.

    `cli.main` imports TensorFlow for every command but inspect; so does this child before
    the clock starts (`--with-tf 1`), so "work" is the command itself.
    """
    from keras_opt_migrate import cli
    if args.with_tf:
        cli._import_tensorflow_quietly()
    argv = json.loads(args.argv)
    devnull = open(os.devnull, "w")
    saved, sys.stdout = sys.stdout, devnull
    t0 = time.perf_counter()
    try:
        code = cli.main(argv)
    finally:
        sys.stdout = saved
    return {"work_s": time.perf_counter() - t0, "exit": code}


CHILDREN = {"build": child_build, "baseline": child_baseline, "tf_keras": child_tf_keras, "keras3": child_keras3,
            "ours": child_ours}


# -- the parent ------------------------------------------------------------------------------------

def warm(paths):
    """Read `paths` once and flush written data, so every step starts from the same page cache.

    Without the flush a step pays for the writeback of the previous step's output (the
    kernel throttles a writer once enough dirty pages pile up).
    """
    os.sync()
    for p in paths:
        if not os.path.exists(p):
            continue
        files = [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs] if os.path.isdir(p) else [p]
        for name in files:
            with open(name, "rb") as f:
                while f.read(1 << 24):
                    pass


def run_child(kind, workdir, **options):
    """(wall seconds, peak RSS bytes, the child's JSON report) of one step in a fresh interpreter."""
    warm([os.path.join(workdir, "src"), os.path.join(workdir, "legacy.h5")])
    report = os.path.join(workdir, "report.json")
    cmd = [PY, os.path.abspath(__file__), "--child", kind, "--workdir", workdir, "--report", report]
    for k, v in options.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return _measure(cmd, report)


def _measure(cmd, report=None, workdir=None):
    if workdir:
        warm([os.path.join(workdir, "src"), os.path.join(workdir, "legacy.h5")])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode("utf8", "replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit("step failed (%s): exit %d\n%s" % (" ".join(cmd), proc.returncode, err[-3000:]))
    data = {}
    if report and os.path.exists(report):
        with open(report) as f:
            data = json.load(f)
        os.unlink(report)
    return wall, usage.ru_maxrss * 1024, data


def _du(paths):
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        elif os.path.exists(p):
            total += os.path.getsize(p)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.2, help="weights + m + v, in GB (default 1.2)")
    parser.add_argument("--workdir", help="where to build (default: a new directory under /work/tmp or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--reuse", action="store_true", help="reuse the state already built in --workdir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--libs", help=argparse.SUPPRESS)
    parser.add_argument("--argv", help=argparse.SUPPRESS)
    parser.add_argument("--with-tf", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](args)
        with open(args.report, "w") as f:
            json.dump(result, f)
        return 0

    base = "/work/tmp" if os.path.isdir("/work/tmp") else None
    workdir = args.workdir or tempfile.mkdtemp(prefix="kom-scale-", dir=base)
    os.makedirs(os.path.join(workdir, "src"), exist_ok=True)
    os.makedirs(os.path.join(workdir, "out"), exist_ok=True)
    try:
        rows = run_all(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(rows)
    return 0


def run_all(args, workdir):
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    built = os.path.join(workdir, "build.json")
    if args.reuse and os.path.exists(built):
        with open(built) as f:
            info = json.load(f)
    else:
        log("building a %.2f GB legacy Adam state with tf_keras in %s ..." % (args.size_gb, workdir))
        wall, _, info = run_child("build", workdir, size_gb=args.size_gb)
        info["build_s"] = wall
        with open(built, "w") as f:
            json.dump(info, f)
    info["load_start"] = _load()
    src = os.path.join(workdir, "src", "legacy.ckpt")
    h5 = os.path.join(workdir, "legacy.h5")
    info["src_bytes"] = _du([os.path.join(workdir, "src")])
    info["h5_bytes"] = _du([h5])
    log("state: %d params, checkpoint %.2f GB, .h5 %.2f GB" % (info["params"], info["src_bytes"] / 1e9,
                                                                 info["h5_bytes"] / 1e9))
    out = os.path.join(workdir, "out")
    shutil.rmtree(out, ignore_errors=True)  # outputs of an earlier --keep run (--reuse keeps only the state)
    results = []

    def record(name, wall, rss, data, baseline=None, cp=None, note=""):
        row = dict(name=name, wall=wall, rss=rss, work=data.get("work_s", wall), baseline=baseline, cp=cp,
                   note=note)
        results.append(row)
        log("%-48s wall %6.2f s  work %6.2f s  peak %6.0f MB%s" % (
            name, wall, row["work"], rss / 1e6, "" if baseline is None else " (+%.0f MB)" % ((rss - baseline) / 1e6)))

    baselines = {}
    for libs in ("ours", "ours_notf", "tf_keras", "keras3"):
        _, rss, _ = run_child("baseline", workdir, libs=libs)
        baselines[libs] = rss
        log("import baseline %s: %.0f MB" % (libs, rss / 1e6))

    cp_dst = os.path.join(out, "cp")
    os.makedirs(cp_dst)
    files = [os.path.join(workdir, "src", n) for n in sorted(os.listdir(os.path.join(workdir, "src")))]
    wall, rss, _ = _measure(["cp"] + files + [cp_dst], workdir=workdir)
    record("`cp` of the legacy checkpoint (%.2f GB)" % (info["src_bytes"] / 1e9), wall, rss, {})
    cp_ckpt = wall
    shutil.rmtree(cp_dst)
    wall, rss, _ = _measure(["cp", h5, os.path.join(out, "copy.h5")], workdir=workdir)
    record("`cp` of the legacy .h5 (%.2f GB)" % (info["h5_bytes"] / 1e9), wall, rss, {})
    cp_h5 = wall
    os.unlink(os.path.join(out, "copy.h5"))

    wall, rss, data = run_child("tf_keras", workdir)
    record("tf_keras: Checkpoint.read + write (legacy Adam)", wall, rss, data, baselines["tf_keras"],
           note="work excludes building the model (%.1f s)" % data["build_s"])
    shutil.rmtree(os.path.join(out, "tf_keras"))
    wall, rss, data = run_child("keras3", workdir)
    record("Keras 3: model.save(.keras) + load_model", wall, rss, data, baselines["keras3"],
           note="save %.2f s + load %.2f s; the process also holds the model it saved" % (data["save_s"],
                                                                                          data["load_s"]))
    os.unlink(os.path.join(out, "keras3_own.keras"))

    def ours(name, argv, cp=None, with_tf=1, baseline="ours"):
        wall, rss, data = run_child("ours", workdir, argv=json.dumps(argv), with_tf=with_tf)
        if data.get("exit") != 0:
            raise SystemExit("%s exited %s" % (name, data.get("exit")))
        record(name, wall, rss, data, baselines[baseline], cp=cp)

    exp = os.path.join(out, "exp", "adam.ckpt")
    os.makedirs(os.path.dirname(exp))
    ours("ours: convert checkpoint -> 2.11+ checkpoint",
         ["convert", src, exp, "--to", "experimental", "--optimizer", "adam"], cp=cp_ckpt)
    k3 = os.path.join(out, "k3", "adam.ckpt")
    os.makedirs(os.path.dirname(k3))
    ours("ours: upgrade checkpoint -> Keras 3 checkpoint layout", ["upgrade", src, k3, "--optimizer", "adam"],
         cp=cp_ckpt)
    shutil.rmtree(os.path.dirname(k3))
    keras_out = os.path.join(out, "adam.keras")
    ours("ours: convert .h5 -> Keras 3 .keras", ["convert", h5, keras_out, "--to", "keras3"], cp=cp_h5)
    ours("ours: inspect checkpoint", ["inspect", src, "--optimizer", "adam"], with_tf=0, baseline="ours_notf")
    ours("ours: inspect .keras", ["inspect", keras_out], with_tf=0, baseline="ours_notf")
    ours("ours: audit checkpoint", ["audit", src, "--optimizer", "adam"])
    ours("ours: audit .keras", ["audit", keras_out])
    ours("ours: diff checkpoint vs its 2.11+ conversion", ["diff", src, exp, "--optimizer", "adam"])
    return table(info, results)


def table(info, results):
    largest = info["largest_bytes"]
    lines = ["State: legacy (OptimizerV2) Adam built and written by tf_keras, %d parameters (%d Dense %dx%d and "
             "one %dx%d output kernel); weights + m + v in the checkpoint %.2f GB, in the .h5 %.2f GB; largest "
             "tensor %.0f MB." % (info["params"], info["layers"], WIDTH, WIDTH, WIDTH, info["out"],
                                  info["src_bytes"] / 1e9, info["h5_bytes"] / 1e9, largest / 1e6), "",
             "| step | wall s | work s | peak RSS MB | above baseline MB | / largest tensor | target | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        above = None if r["baseline"] is None else r["rss"] - r["baseline"]
        target = ""
        if r["cp"]:
            ratio_work, ratio_wall = r["work"] / r["cp"], r["wall"] / r["cp"]
            target = "%s: work %.1fx, wall %.1fx `cp`" % ("met" if ratio_work <= 1.5 else "missed", ratio_work,
                                                          ratio_wall)
        elif "inspect" in r["name"]:
            target = "%s: wall %.2f s" % ("met" if r["wall"] < 1.0 else "missed", r["wall"])
        lines.append("| %s | %.2f | %.2f | %.0f | %s | %s | %s | %s |" % (
            r["name"], r["wall"], r["work"], r["rss"] / 1e6, "-" if above is None else "%.0f" % max(0, above / 1e6),
            "-" if above is None else "%.2f" % max(0.0, above / largest), target, r["note"]))
    lines += ["", "Machine: %d CPU cores, load average %s at the start and %s at the end; Python %s; %s." % (
        os.cpu_count(), info["load_start"], _load(), sys.version.split()[0], _versions())]
    return "\n".join(lines)


def _load():
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


def _versions():
    from importlib import metadata
    out = []
    for name in ("tensorflow", "tf-keras", "keras", "h5py", "numpy"):
        try:
            out.append("%s %s" % (name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
