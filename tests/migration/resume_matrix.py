"""Every fixture file, converted to every generation it can reach, resumed in the REAL target.

A job is (fixture case, source file, target generation, output format). `run(job)` converts
the file with `keras_opt_migrate.convert` (which reads the output back and checks it), loads
the output in the real target the way a user would, runs the 2 recorded continuation steps
and returns a `Result`; `check(result)` asserts the verdict: within 1e-5 of the recorded
`after` weights where the report says `exact` / `float-tolerance`, `different` with a reason
otherwise. Refusals are results too: `check` asserts they are one line and of an expected
kind, and a refusal to carry state "with certainty" is converted again with `partial=True`
and resumed, so its report must flag what then differs.

Routes (output format per source kind and target; `routes`):
  TF checkpoints (`w.ckpt`, `ckpt/ckpt-1`), TF1 `model.ckpt`, SavedModel `sm`:
      v2, experimental, keras3 as a TF checkpoint; tf1 as a TF1 name-based checkpoint for a
      `model.ckpt` source and object-based otherwise. A SavedModel, a full-model file, also as
      a SavedModel of its own generation (tf_keras' load_weights of `variables/variables`) and
      as the full-model files below.
  Full-model files (`m.h5`, Keras 2.12's `m_default.keras` (HDF5), `m.keras`):
      v2 and experimental as `.h5` when the model config is Keras 2's (a TF checkpoint for
      Keras 3 sources, whose config tf_keras cannot load), keras3 as `.keras`, and experimental
      also as a tf_keras `.keras` when the `.keras` writer lays out that generation.
  Keras 3 `m.weights.h5`: keras3 as `.weights.h5`; v2 and experimental as a TF checkpoint.

Cost: compiling and tracing a Keras model's train step is most of a resume, so traced models are
reused. Where we build the target's model (TF checkpoints, SavedModel variables, `.weights.h5`,
TF1 graphs) one compiled model serves every file of the same (library, model, optimizer class,
config): before each restore every model and optimizer variable is reset to the value a freshly
built one has, so nothing of the previous file survives. A full-model file is loaded by the real
`load_model` every time (that load is under test, and its optimizer's variable count and
iterations are checked); its state then continues in the first model loaded with the same model
config, optimizer class, optimizer config and loss, into which every model and optimizer
variable of the new load is copied.
"""

import collections
import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "formats"))  # tf_support

import keras_opt_migrate as kom  # noqa: E402
import real_targets as rt  # noqa: E402
from corpus import all_cases  # noqa: E402
from keras_opt_migrate import formats  # noqa: E402
from keras_opt_migrate.errors import KerasOptMigrateError, MappingError  # noqa: E402
from keras_opt_migrate.formats import keras_common as kc  # noqa: E402
from keras_opt_migrate.migrate import DIFFERENT  # noqa: E402
from tf_support import mislabelled, truth_algorithm, truth_config  # noqa: E402

TOLERANCE = 1e-5
TF_KINDS = ("save_weights_tf", "tf_checkpoint", "savedmodel", "tf1_saver")
MODEL_KINDS = ("h5", "keras_v3", "keras_zip")
WEIGHTS_KINDS = ("weights_h5",)
# Algorithms whose real class lives in a package not installed beside tf 2.21.
REAL_CLASS_PACKAGE = {"lazyadam": "tensorflow-addons", "clippyadagrad": "tensorflow-recommenders"}
# Where the real LazyAdam is missing, its state goes to the target's plain Adam (same slots).
LAZYADAM_AS = "adam"
OUTPUT_NAMES = {"tf_checkpoint": "out.ckpt", "tf1_checkpoint": "model.ckpt", "savedmodel": "sm",
                "keras_h5": "out.h5", "keras_archive": "out.keras", "keras_weights_h5": "out.weights.h5"}
KERAS_TARGETS = ("v2", "experimental", "keras3")
# KOM_RESUME_NO_REUSE=1: every resume gets its own freshly built or loaded model and tf_keras
# optimizers restore their slots when they create them (a user's compile -> load_weights -> fit),
# to check that reusing compiled models changes no result.
FRESH = bool(os.environ.get("KOM_RESUME_NO_REUSE"))


@dataclasses.dataclass(frozen=True)
class Job:
    case: object
    source: str
    target: str
    fmt: str

    @property
    def id(self):
        return "%s/%s->%s:%s" % (self.case.id, self.source, self.target, self.fmt)

    @property
    def kind(self):
        return self.case.truth["files"][self.source]


@dataclasses.dataclass
class Result:
    job: Job
    status: str  # "resumed", "refused", "skipped"
    message: str = ""
    report: Optional[object] = None
    delta: Optional[float] = None
    partial: bool = False  # converted with partial=True after a strict refusal
    refusal: Optional[str] = None  # the strict refusal that led to the partial conversion

    def record(self):
        out = {"job": self.job.id, "status": self.status, "message": self.message[:300], "delta": self.delta,
               "partial": self.partial}
        if self.report is not None:
            out.update(continuation=self.report.continuation, reason=self.report.continuation_reason,
                       target_optimizer=self.report.target_optimizer)
        return out


# -- the matrix ---------------------------------------------------------------------------------

def _writes(fmt, generation):
    return generation in formats.get_format(fmt).generations


def _model_file_routes(case):
    if case.truth["label"] == "k315":  # a Keras 3 model config, which tf_keras cannot load
        out = [("v2", "tf_checkpoint"), ("experimental", "tf_checkpoint")]
    else:
        out = [("v2", "keras_h5"), ("experimental", "keras_h5")]
        if _writes("keras_archive", "experimental"):
            out.append(("experimental", "keras_archive"))
    return out + [("keras3", "keras_archive")]


def routes(case, name):
    """[(target generation, output format)] that the source file can reach."""
    kind = case.truth["files"][name]
    if kind in TF_KINDS:
        out = [(t, "tf_checkpoint") for t in KERAS_TARGETS]
        out.append(("tf1", "tf1_checkpoint" if kind == "tf1_saver" else "tf_checkpoint"))
        if kind == "savedmodel":
            own = "v2" if mislabelled(case) else case.generation
            out += [(own, "savedmodel")] + _model_file_routes(case)
        return out
    if kind in MODEL_KINDS:
        return _model_file_routes(case)
    if kind in WEIGHTS_KINDS:
        return [("v2", "tf_checkpoint"), ("experimental", "tf_checkpoint"), ("keras3", "keras_weights_h5")]
    raise AssertionError("%s/%s: unknown fixture file kind %r" % (case.id, name, kind))


def jobs(kinds):
    """Every (case, file, target, format) whose source file kind is in `kinds`, ordered by (group,
    case, target) before the label, so that consecutive jobs share a compiled model."""
    out = []
    for case in all_cases():
        for name, kind in sorted(case.truth.get("files", {}).items()):
            if kind in kinds:
                out.extend(Job(case, name, target, fmt) for target, fmt in routes(case, name))
    order = {t: i for i, t in enumerate(KERAS_TARGETS + ("tf1",))}
    return sorted(out, key=lambda j: (j.case.truth["group"], j.case.truth["case"], order[j.target], j.fmt,
                                      j.case.truth["label"], j.source))


# -- conversion ---------------------------------------------------------------------------------

def source_hints(job):
    """What a user knows and some files do not keep: the algorithm (legacy Adam and Adamax TF
    checkpoints are identical; a .weights.h5 names no optimizer) and the constructor's config
    (TF1 / 2.11+ checkpoints keep no hyperparameters but the learning rate; a .weights.h5 none)."""
    if job.kind in MODEL_KINDS:
        return {}
    return {"source_optimizer": truth_algorithm(job.case), "source_config": dict(truth_config(job.case)) or None}


def target_optimizer(job):
    """The target algorithm when it must be named: LazyAdam into v2, where the real LazyAdam
    (tensorflow-addons) is missing, goes to plain Adam (migrate substitutes it elsewhere)."""
    if truth_algorithm(job.case) == "lazyadam" and job.target == "v2":
        return LAZYADAM_AS
    return None


def _convert(job, out, partial=False):
    return kom.convert(str(job.case.file(job.source)), out, job.target, format=job.fmt,
                       optimizer=target_optimizer(job), partial=partial, **source_hints(job))


def target_state(job, partial=False):
    hints = source_hints(job)
    state = kom.load_state(str(job.case.file(job.source)), optimizer=hints.get("source_optimizer"),
                           config=hints.get("source_config"))
    return kom.migrate(state, job.target, optimizer=target_optimizer(job), partial=partial)[0]


# -- reusable compiled models -------------------------------------------------------------------

def _optimizer_variables(opt):
    variables = opt.variables
    return list(variables() if callable(variables) else variables)


def _state_variables(model):
    """Every variable whose value a resume depends on: the model's weights, the optimizer's listed
    variables, and the tf.Variables the optimizer tracks without listing them (tf_keras: the 2.11+
    Nadam's `_u_product`, the legacy hyperparameters and loss scale of a LossScaleOptimizer)."""
    out = list(model.weights) + _optimizer_variables(model.optimizer)
    seen = {id(v) for v in out}
    tf = rt.tf()
    for obj in tf.train.TrackableView(model.optimizer).descendants():
        if isinstance(obj, tf.Variable) and id(obj) not in seen:
            seen.add(id(obj))
            out.append(obj)
    return out


def _create_optimizer_variables(opt, var_list):
    if hasattr(opt, "_create_all_weights"):  # tf_keras OptimizerV2 (legacy): slots are made lazily otherwise
        opt._create_all_weights(var_list)
    else:
        opt.build(var_list)


class _KerasTrainer:
    """One compiled model + optimizer of the target (in its loss-scale wrapper when the file keeps
    one); `reset` puts back the values a freshly built pair has."""

    def __init__(self, generation, model_kind, state, wrapper, prebuild=True):
        lib = rt.keras_lib(generation)
        self.model = rt.build_model(lib, model_kind)
        self.optimizer = rt.make_optimizer(generation, state)
        if wrapper:
            self.optimizer = rt.wrap_loss_scale(generation, self.optimizer, wrapper)
        self.model.compile(optimizer=self.optimizer, loss="mse")
        if prebuild or generation == "keras3":  # Keras 3 is built before a TF checkpoint restore either way
            _create_optimizer_variables(self.optimizer, self.model.trainable_variables)
        self.variables = _state_variables(self.model)
        self.fresh = [np.array(v.numpy()) for v in self.variables]

    def reset(self):
        for v, value in zip(self.variables, self.fresh):
            v.assign(value)

    def close(self):
        pass


class _Tf1GraphTrainer:
    """A TF1 graph (get_variable under the fixture's scopes, the real TF1 optimizer, a Saver) and
    its session; each resume re-runs the initializers before `Saver.restore`."""

    def __init__(self, model_kind, state):
        self.graph, self.sess, self.parts = rt.tf1_namebased_graph(model_kind, state)

    def resume(self, case, prefix):
        return rt.tf1_namebased_run(self.sess, self.parts, case, prefix)

    def close(self):
        self.sess.close()


class _Cache:
    def __init__(self, size=8):
        self.size, self.items = size, collections.OrderedDict()

    def get(self, key, make):
        if FRESH:
            return make()
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = self.items[key] = make()
        while len(self.items) > self.size:
            self.items.popitem(last=False)[1].close()
        return value


TRAINERS = _Cache()


def _key(*parts, state):
    return parts + (state.optimizer, json.dumps(state.config, sort_keys=True, default=str),
                    tuple(tuple(v.shape) for v in state.variables))


# Optimizers whose update depends on Python-side state fixed when the train step is traced: tf_keras'
# 2.11+ Nadam counts `_u_product` updates in a Python int, and a user's compile -> restore -> fit
# traces twice (once creating the variables, once without), which pre-built variables do not (1.9e-7
# apart after 2 steps). They resume the user's way, in a model of their own.
TRACE_STATEFUL = {("experimental", "nadam")}


def _keras_trainer(generation, case, state, wrapper):
    kind = case.truth["model"]
    if FRESH or (generation, state.optimizer) in TRACE_STATEFUL:
        return _KerasTrainer(generation, kind, state, wrapper, prebuild=False)
    key = _key("keras", generation, kind, json.dumps(wrapper, sort_keys=True), state=state)
    return TRAINERS.get(key, lambda: _KerasTrainer(generation, kind, state, wrapper))


# -- resuming -------------------------------------------------------------------------------

def _train(model, case):
    x, y = case.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    return [np.asarray(w) for w in model.trainable_weights]


def _iterations(opt):
    return int(np.asarray(opt.iterations))


def _resume_built(job, out, state, written):
    """Restore `out` into the reusable compiled model of the target; train; weights after."""
    wrapper = kc.loss_scale_wrapper(state) if kc.loss_scale_wrapper(written) else None
    trainer = _keras_trainer(job.target, job.case, state, wrapper and wrapper[1])
    trainer.reset()
    model, opt = trainer.model, trainer.optimizer
    if job.fmt == "savedmodel":
        model.load_weights(os.path.join(out, "variables", "variables"))
    elif job.fmt == "keras_weights_h5" or written.source.get("root") == "save_weights":
        model.load_weights(out)
    else:
        rt.tf().train.Checkpoint(model=model, optimizer=opt).restore(out)
    _check_restored(job, opt, written)
    return _train(model, job.case)


def _check_restored(job, opt, written):
    """What the real optimizer holds after the load: the file's iterations and loss scale."""
    assert _iterations(opt) == written.iterations, "%s: the real optimizer restored iterations=%d, the file has %s" % (
        job.id, _iterations(opt), written.iterations)
    if "loss_scale" in written.extra:
        want = (float(np.asarray(written.extra["loss_scale"])),
                int(np.asarray(written.extra.get("loss_scale_good_steps", 0))))
        assert rt.loss_scale(opt) == want, "%s: the real loss scale (scale, good steps) is %s, the file's %s" % (
            job.id, rt.loss_scale(opt), want)


class _LoadedTrainer:
    """The first model `load_model` returned for a (model config, optimizer class and config, loss):
    already traced, it continues later files' states, copied from their own freshly loaded models."""

    def __init__(self, model):
        self.model = model
        self.variables = _state_variables(model)

    def take_state_of(self, model, job):
        """Copy every model and optimizer variable of `model` (same configs, so the same variables)."""
        theirs = _state_variables(model)
        assert [(_short(v), tuple(v.shape)) for v in theirs] == [(_short(v), tuple(v.shape)) for v in self.variables], (
            "%s: the loaded model's variables differ from those of a model with the same configs" % job.id)
        for mine, value in zip(self.variables, theirs):
            mine.assign(value.numpy())

    def close(self):
        pass


def _short(variable):
    """A variable's own name without the uniquifying prefixes and suffixes a second loaded model gets
    (Keras 3 names an unnamed variable `variable`, then `variable_1`)."""
    name = str(getattr(variable, "path", None) or variable.name).split(":")[0]
    return re.sub(r"_\d+$", "", name.rsplit("/", 1)[-1])


def _loaded_key(lib, model):
    opt = model.optimizer
    return ("loaded", lib.__name__, json.dumps(model.get_config(), sort_keys=True, default=repr),
            type(opt).__name__, json.dumps(opt.get_config(), sort_keys=True, default=repr), repr(model.loss))


def _resume_loaded(job, out, written):
    """`load_model` of a full-model file in the real target; check what it restored; continue it."""
    lib = rt.keras_lib("keras3" if job.fmt == "keras_archive" and job.target == "keras3" else "experimental")
    model = lib.models.load_model(out)
    opt = model.optimizer
    count = len(kc.optimizer_arrays(written, out))
    if job.target == "keras3" and kc.loss_scale_wrapper(written):
        count += 4  # Keras 3 LossScaleOptimizer's own iteration, learning_rate, scale and counter
    real = len(opt.get_weights()) if job.target == "v2" else len(_optimizer_variables(opt))
    assert real == count, "%s: the real optimizer has %d variables, the file %d" % (job.id, real, count)
    if kc.loss_scale_wrapper(written):
        assert "LossScaleOptimizer" in type(opt).__name__, "%s: the file's loss-scale wrapper was not loaded (%s)" % (
            job.id, type(opt).__name__)
    # Keras 3's `iterations` counts applied updates also under gradient accumulation, like state.iterations
    _check_restored(job, opt, written)
    trainer = TRAINERS.get(_loaded_key(lib, model), lambda: _LoadedTrainer(model))
    if trainer.model is not model:
        trainer.take_state_of(model, job)
    return _train(trainer.model, job.case)


def _resume_tf1(job, out, state):
    if job.fmt == "tf1_checkpoint":
        trainer = TRAINERS.get(_key("tf1", job.case.truth["model"], state=state),
                               lambda: _Tf1GraphTrainer(job.case.truth["model"], state))
        return trainer.resume(job.case, out)
    return rt.tf1_objectbased_resume(job.case, state, out)


def _tf1_cannot_replay(state):
    lr = state.config.get("learning_rate")
    return isinstance(lr, dict) or bool(state.config.get("decay"))


def read_back(job, out, report, state):
    """The converted file as our reader sees it; its slots must be the report's (all but the dropped)."""
    back = kom.load_state(out, format=job.fmt, optimizer=report.target_optimizer, config=state.config)
    assert back.generation == job.target and back.optimizer == report.target_optimizer, (
        "%s: wrote %s %s, reads back as %s %s" % (job.id, job.target, report.target_optimizer, back.generation,
                                                  back.optimizer))
    reported = sum(1 for i in report.items if i.kind == "slot" and i.action != "dropped")
    held = sum(len(per) for per in back.slots.values())
    assert held == reported, "%s: the file holds %d slot tensors, the report lists %d" % (job.id, held, reported)
    return back


def resume(job, out, report, partial=False):
    """(weights after the continuation, None), or (None, why the real target cannot run it)."""
    state = target_state(job, partial=partial)
    written = read_back(job, out, report, state)
    if job.target == "tf1":
        if _tf1_cannot_replay(state):
            return None, ("TF1 optimizers take a learning rate, not a Keras schedule: the file is written (and read "
                          "back by convert) but a real TF1 optimizer cannot replay the schedule")
        return _resume_tf1(job, out, state), None
    if report.target_optimizer in REAL_CLASS_PACKAGE:
        return None, ("the real %s class (%s) is not installed beside tf 2.21; the file was written and read back"
                      % (report.target_optimizer, REAL_CLASS_PACKAGE[report.target_optimizer]))
    if job.fmt in ("keras_h5", "keras_archive"):
        return _resume_loaded(job, out, written), None
    return _resume_built(job, out, state, written), None


def run(job):
    """Convert, resume in the real target, and say what happened."""
    with tempfile.TemporaryDirectory(prefix="kom-resume-") as tmp:
        out = os.path.join(tmp, OUTPUT_NAMES[job.fmt])
        refusal = None
        try:
            report = _convert(job, out)
        except MappingError as e:
            refusal = str(e)
            try:
                report = _convert(job, out, partial=True)
            except KerasOptMigrateError as e2:
                return Result(job, "refused", "%s; with partial=True: %s" % (refusal, e2))
        except KerasOptMigrateError as e:
            return Result(job, "refused", str(e))
        got, why_not = resume(job, out, report, partial=refusal is not None)
        if got is None:
            return Result(job, "skipped", why_not, report=report, partial=refusal is not None, refusal=refusal)
        return Result(job, "resumed", report=report, delta=rt.max_delta(got, job.case), partial=refusal is not None,
                      refusal=refusal)


def keep(result):
    """KOM_RESULTS=<dir>: one JSON line per job, for reports."""
    directory = os.environ.get("KOM_RESULTS")
    if directory:
        with open(os.path.join(directory, "resume_matrix.jsonl"), "a") as f:
            f.write(json.dumps(result.record()) + "\n")


# -- verdicts -----------------------------------------------------------------------------------

# Refusals that are right: the source holds no optimizer state, the target generation lacks
# the algorithm, or the writer cannot lay the state out in that format.
EXPECTED_REFUSALS = (
    "holds no optimizer",  # Keras v1 TF checkpoints; TFOptimizer .h5
    "holds no optimizer state",
    "generation has no",
    "cannot hold",
)


KERAS3_SPARSE = "Keras 3 applies an IndexedSlices gradient without summing repeated ids"


def sparse_caveat_explains(result):
    """A same-rule verdict on the embedding model may miss by more than the tolerance only when the
    report names the sparse-gradient difference that applies (it cannot see the model): across the
    Keras 3 boundary, that Keras 3 applies repeated ids unsummed (the real libraries differ there;
    tf_keras and TF1 sum them first), else that sparse gradients continue differently."""
    report, job = result.report, result.job
    if job.case.truth["model"] != "emb":
        return False
    if (report.source_generation == "keras3") != (job.target == "keras3"):
        return KERAS3_SPARSE in report.continuation_reason
    return "sparse gradients" in report.continuation_reason


def check(result):
    """Assert the job's verdict; returns a note for the test's skip / pass message."""
    job, report = result.job, result.report
    if result.status == "refused":
        message = result.message
        assert message and "\n" not in message.strip(), "%s: a refusal must be one line: %r" % (job.id, message)
        assert any(s in message for s in EXPECTED_REFUSALS), "%s: unexpected refusal: %s" % (job.id, message)
        return "refused: " + message
    if result.partial:
        assert report.partial, "%s: converted after the refusal (%s) without partial=True" % (job.id, result.refusal)
    if result.status == "skipped":
        return result.message
    if report.continuation == DIFFERENT:
        assert report.continuation_reason, "%s: a 'different' verdict must say why:\n%s" % (job.id, report.format_text())
        return "different (%s), max |w - after| = %.3g" % (report.continuation_reason, result.delta)
    if result.delta > TOLERANCE:
        assert sparse_caveat_explains(result), "%s: report says %s (%s) but max |w - after| = %g" % (
            job.id, report.continuation, report.continuation_reason, result.delta)
        return "%s with the sparse-gradient caveat, max |w - after| = %.3g" % (report.continuation, result.delta)
    return "%s, max |w - after| = %.3g" % (report.continuation, result.delta)


def run_and_check(job):
    """One test item: run the job, keep its result (KOM_RESULTS), assert its verdict, skip what did not resume."""
    import pytest
    result = run(job)
    keep(result)
    note = check(result)
    if result.status != "resumed":
        pytest.skip(note)


# -- known faults ---------------------------------------------------------------------------------

# (predicate over a job, reason): converter faults this matrix found, each expected to fail until
# fixed (strict xfail: a fix makes the test fail until its entry is removed here). Found and since
# fixed: SavedModel configs' `__tuple__` shapes in .keras (83034c7); Keras 3 .h5 configs copied
# verbatim into .keras (5ce39ba); partial conversions that dropped state or zero-initialised a counter the
# update reads judged float-tolerance, and Keras 3's gradient-accumulation counter reaching a TF
# checkpoint writer (f9744da); LazyAdam -> Keras 3 Adam losing the Keras 3 sparse caveat (19c9111).
KNOWN_FAULTS = []


def params(job_list):
    """pytest params with ids; known faults marked xfail(strict=True) with their cause."""
    import pytest
    out = []
    for job in job_list:
        reasons = [why for applies, why in KNOWN_FAULTS if applies(job)]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(reasons))] if reasons else []
        out.append(pytest.param(job, id=job.id, marks=marks))
    return out
