"""The library's entry points for reading and writing optimizer state."""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import zipfile
import zlib

import numpy as np

from . import formats
from .errors import FormatError, KerasOptMigrateError, SchemaError, printable
from .formats.base import check_input_path
from .schema import LazyTensor, OptimizerState, VariableSpec, materialize
from .schema.validate import check_config, check_state


# What libraries raise for unreadable input (after our own KerasOptMigrateError, re-raised as is).
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeError, RuntimeError, EOFError,
               zipfile.BadZipFile)


def _variable_specs(variables):
    """Normalise a user's variable hint: VariableSpec, (name, shape[, dtype]) or objects with .shape."""
    if variables is None:
        return None
    out = []
    for i, v in enumerate(variables):
        if isinstance(v, VariableSpec):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out.append(VariableSpec(str(v[0]), tuple(v[1]), v[2] if len(v) > 2 else "float32"))
        elif hasattr(v, "shape"):
            name = getattr(v, "path", None) or getattr(v, "name", None) or "variable_%d" % i
            dtype = getattr(getattr(v, "dtype", None), "name", None) or str(getattr(v, "dtype", "float32"))
            out.append(VariableSpec(str(name).split(":")[0], tuple(int(d) for d in v.shape), dtype))
        else:
            raise KerasOptMigrateError(
                "variables[%d]: expected a VariableSpec, a (name, shape) pair or a variable; received %r"
                % (i, type(v).__name__))
    return out


def load_state(path, *, format=None, optimizer=None, variables=None, config=None):
    """Read the optimizer state in `path` into an `OptimizerState`.

    The format is detected from the file unless `format` names an adapter. Hints, used only
    where the file itself cannot tell and always recorded in `state.source["hints"]`:
      optimizer: the algorithm (some TF checkpoints cannot tell Adam from Adamax; without the
        hint such a file is read as the first candidate and `state.candidates` names them all);
      variables: the model's trainable variables in build order, as VariableSpec,
        (name, shape) pairs or variables, for positional layouts;
      config: hyperparameters that decide a positional layout (amsgrad, centered, ...).
    Raises FormatError (naming the file) for unreadable or unsupported input.
    """
    path = os.fspath(path)
    if config is not None and not isinstance(config, dict):
        raise SchemaError("%s: the config hint must be a JSON object of hyperparameters (e.g. {\"epsilon\": 1e-08}); "
                          "received %s" % (printable(path), type(config).__name__))
    if format:
        fmt = formats.get_format(format)
        check_input_path(path)
    else:
        fmt = formats.detect(path)
    options = {"optimizer": optimizer, "variables": _variable_specs(variables), "config": dict(config or {})}
    try:
        state = fmt.read(path, **options)
    except KerasOptMigrateError:
        raise
    except RecursionError as e:  # json.loads of a config nested thousands of levels deep
        raise FormatError(path, "cannot read as %s: a config is nested too deeply (%s)"
                          % (fmt.description or fmt.name, _one_line(e))) from e
    except READ_ERRORS as e:  # h5py raises RuntimeError for some corrupt metadata
        raise FormatError(path, "cannot read as %s: %s" % (fmt.description or fmt.name, _one_line(e))) from e
    if config:  # first: a reader may have merged the hint into the state's config
        check_config(config, state.optimizer, state.generation, path, field="config hint (--config)")
    check_state(state, path)
    state.source.setdefault("format", fmt.name)
    state.source.setdefault("path", path)
    hints = {k: v for k, v in (("optimizer", optimizer), ("config", config)) if v}
    if variables is not None:
        hints["variables"] = [v.to_json() for v in options["variables"]]
    if hints:
        state.source["hints"] = hints
    return state


def save_state(state, path):
    """Write `state` exactly (all tensors, config, provenance) to keras-opt-migrate's own file."""
    if not isinstance(state, OptimizerState):
        raise KerasOptMigrateError("save_state expects an OptimizerState; received %r" % type(state).__name__)
    return formats.native.FORMAT.write(state, os.fspath(path))


def _one_line(error):
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:500]


# -- conversion -----------------------------------------------------------------------------

@contextlib.contextmanager
def _staged_output(dst, force):
    """Yield a path inside a staging directory beside `dst`; move what was written into place on success.

    Everything written under the staged path (a file, a directory, or checkpoint files that
    start with its name) replaces the destination only when the block finishes without an
    error; `.index` files move last, so a reader never sees an index without its data.
    """
    dst = os.path.abspath(dst)
    parent, base = os.path.dirname(dst), os.path.basename(dst)
    if not os.path.isdir(parent):
        raise FormatError(dst, "the output directory %s does not exist" % parent)
    existing = [p for p in (dst, dst + ".index") if os.path.exists(p)]
    if existing and not force:
        raise FormatError(dst, "already exists; pass force=True (CLI --force) to overwrite it")
    stage = tempfile.mkdtemp(prefix=".%s.stage-" % base, dir=parent)
    try:
        yield os.path.join(stage, base)
        produced = sorted(os.listdir(stage), key=lambda n: (n.endswith(".index"), n))
        if not produced:
            raise FormatError(dst, "the writer produced no file")
        for name in produced:
            target = os.path.join(parent, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(stage, name), target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _target_format(dst, fmt, source_format):
    if fmt:
        return formats.get_format(fmt)
    lower = str(dst).lower()
    for candidate in formats.REGISTRY:
        if candidate.can_write and any(lower.endswith(ext) for ext in candidate.extensions):
            return candidate
    if source_format == "savedmodel" and not os.path.splitext(lower)[1]:
        return formats.get_format("savedmodel")
    return formats.get_format("tf_checkpoint")


def _formats_holding(generation):
    """The writable formats that hold `generation`'s state, for error messages (`*.h5 (h5), ...`)."""
    out = []
    for fmt in formats.REGISTRY:
        if fmt.can_write and generation in (fmt.generations or ()) and fmt.name not in ("native", "savedmodel"):
            out.append("%s (%s)" % ("/".join("*" + e for e in fmt.extensions), fmt.name) if fmt.extensions
                       else "a %s" % fmt.description)
    return " or ".join(out) or "no Keras format (only the native state file)"


def _check_output(src, dst):
    """Refuse an output that is the input, lies inside it, or is an existing directory (even with force).

    Paths are compared after resolving symlinks (and by inode where both exist). A TF checkpoint
    prefix's files are its `.index` and `.data-*` shards.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    inputs = [real_src]
    if not os.path.lexists(src):  # a checkpoint prefix
        folder, base = os.path.split(real_src)
        try:
            names = os.listdir(folder or ".")
        except OSError:
            names = []
        inputs += [os.path.join(folder, n) for n in names if n == base + ".index" or n.startswith(base + ".data-")]
    outputs = [real_dst, real_dst + ".index"]
    for out in outputs:
        for inp in inputs:
            same = out == inp or (os.path.exists(out) and os.path.exists(inp) and os.path.samefile(out, inp))
            if same:
                raise FormatError(dst, "is the input %s; refusing to overwrite what is being read (with or without "
                                       "--force): name a new output path" % printable(src))
    if os.path.isdir(real_src) and os.path.commonpath([real_src, real_dst]) == real_src:
        raise FormatError(dst, "lies inside the input directory %s; refusing to write into what is being read: "
                               "name an output outside it" % printable(src))
    if os.path.isdir(dst):
        raise FormatError(dst, "is an existing directory; refusing to replace it and all it holds (with or without "
                               "--force): remove it yourself or name a new output path")


def convert(src, dst, to, *, format=None, optimizer=None, config=None, partial=False, dry_run=False,
            force=False, progress=None, source_optimizer=None, variables=None, source_config=None,
            source_format=None):
    """Convert the optimizer state in `src` to generation `to` and write it to `dst`.

    Reads `src` (never modifies it), converts through the schema (`migrate`), writes `dst` in
    `format` (by default from its extension; a TF checkpoint prefix otherwise) via a staging
    directory, reads the result back and checks it equals the converted state, and only then
    moves it into place. Returns the ConversionReport. `dry_run=True` writes nothing.
    A source that cannot tell which of several algorithms wrote it converts without
    `source_optimizer` only where all of them give the same output (the report says so);
    otherwise MappingError names them and what would differ.
    source_optimizer / variables / source_config: hints for reading `src` (see load_state);
    source_format: read `src` as this format instead of detecting it.
    An output that is the input, lies inside it or is an existing directory is refused, even with
    `force`.
    progress(done, total, what): optional callback, called per tensor written.
    """
    from .candidates import migrate_candidates
    from .diff import diff
    if config is not None and not isinstance(config, dict):
        raise SchemaError("%s: the target config must be a JSON object of hyperparameters; received %s"
                          % (printable(dst), type(config).__name__))
    _check_output(src, dst)
    state = load_state(src, format=source_format, optimizer=source_optimizer, variables=variables,
                       config=source_config)
    fmt = _target_format(dst, format, state.source.get("format"))
    if not fmt.can_write:
        raise FormatError(dst, "writing the %s format is not supported" % fmt.name)
    if fmt.generations and to not in fmt.generations:
        raise FormatError(dst, "the %s format cannot hold %s optimizer state; it holds %s; for %s state, write %s"
                          % (fmt.name, to, ", ".join(fmt.generations), to, _formats_holding(to)))
    # A source that cannot tell its algorithm (state.candidates) converts only if every candidate
    # gives the same stored form in the target format (`Format.stored_form`).
    target, report = migrate_candidates(state, to, fmt.stored_form, what="the %s output" % fmt.name,
                                        prepare=lambda t, r: _drop_unwritable(fmt, t, r),
                                        optimizer=optimizer, config=config, partial=partial)
    if config:
        check_config(config, target.optimizer, target.generation, src, field="target config (--target-config)")
    report.target_format = fmt.name
    model = _read_model(src, source_format) if fmt.needs_model else None
    fmt.check_writable(target, dst, model=model)  # a refusal that depends on the source, before anything is staged
    rebuilt = (model.extra or {}).get("_keras3_model") if model is not None else None
    if rebuilt is not None:  # a Keras 2 model rebuilt by Keras 3 (formats.keras3_model) for the writer
        from .formats.keras3_model import report_items
        for action, name, source, written, detail in report_items(rebuilt, model):
            report.add(action, "model", name, source=source, target=written, detail=detail)
    if dry_run:
        return report
    with _staged_output(dst, force) as staged:
        digests = {}
        fmt.write(_recording(target, digests, fmt.checksums), staged, model=model, progress=progress)
        back = check_state(fmt.read(staged, optimizer=target.optimizer, variables=target.variables,
                                    config=target.config), dst)
        check = diff(target, back, atol=0.0, tensor_check=_digest_check(digests))
        if not check.equal:
            raise FormatError(dst, "the written file does not read back as the converted state (%s); nothing was "
                                   "written" % "; ".join(str(e) for e in check.entries[:3]))
    return report


def _digest(array):
    """(dtype, shape, CRC-32 of the bytes) of a numeric array; None for other arrays."""
    array = np.asarray(array)
    if array.dtype.kind not in "biufc":
        return None
    flat = np.ascontiguousarray(array).reshape(-1)
    return array.dtype.str, tuple(array.shape), zlib.crc32(memoryview(flat).cast("B"))


def _recording(target, digests, checksums=None):
    """A shallow copy of `target` whose lazy tensors record the digest of what the writer loads.

    The writer streams the state one tensor at a time; the digest of every tensor it wrote is
    kept (by the identity of the tensor in `target`), so the read-back check needs neither the
    source again nor two tensors in memory at once. Tensors whose source records a checksum of
    the kind the target format records too (`checksums`: TF bundle to TF bundle) need no digest.
    """
    def wrap(tensor):
        if not isinstance(tensor, LazyTensor):
            return tensor
        if checksums and tensor.checksum and tensor.checksum[0] == checksums:
            return tensor

        def load():
            value = tensor.load()
            digests[id(tensor)] = _digest(value)
            return value
        return LazyTensor(tensor.shape, tensor.dtype, load, origin=tensor.origin)
    return dataclasses.replace(
        target, slots={v: {s: wrap(t) for s, t in per.items()} for v, per in target.slots.items()},
        extra={k: wrap(t) for k, t in target.extra.items()})


def _digest_check(digests):
    """diff's tensor check for the read-back: equal file checksums, the written tensor's digest, else
    a full comparison."""
    from .diff import _compare

    def check(expected, written, atol):
        mine, theirs = getattr(expected, "checksum", None), getattr(written, "checksum", None)
        if mine and theirs and mine[0] == theirs[0] and tuple(expected.shape) == tuple(written.shape) \
                and np.dtype(expected.dtype) == np.dtype(written.dtype) and mine[1] == theirs[1]:
            # TF bundle to TF bundle: the CRC-32C TensorFlow computed from the bytes it wrote equals the
            # source's (verified when the source was read), so the written bytes are not read again
            return None, None
        recorded = digests.get(id(expected))
        if recorded is not None and tuple(written.shape) == recorded[1]:
            value = materialize(written)
            if _digest(value) == recorded:
                return None, None
            return _compare(expected, value, atol)
        return _compare(expected, written, atol)
    return check


def _read_model(src, source_format=None):
    source = formats.get_format(source_format) if source_format else formats.detect(src)
    try:
        return source.read_model(src)
    except KerasOptMigrateError:
        raise
    except RecursionError as e:
        raise FormatError(src, "cannot read the model: a config is nested too deeply") from e
    except READ_ERRORS as e:
        raise FormatError(src, "cannot read the model from this %s: %s" % (source.name, _one_line(e))) from e


def _drop_unwritable(fmt, target, report):
    """Remove the extras the target format cannot hold; say so, and whether training then differs."""
    from .migrate import DIFFERENT
    for name, (why, changes) in fmt.unwritable(target).items():
        target.extra.pop(name, None)
        report.add("dropped", "extra", name, detail="%s cannot hold it: %s" % (fmt.name, why))
        if changes:
            reason = "%s is not stored in %s (%s)" % (name, fmt.name, why)
            if report.continuation == DIFFERENT:
                report.continuation_reason += "; " + reason
            else:
                report.continuation, report.continuation_reason = DIFFERENT, reason
            target.warnings.append("dropped %s: %s" % (name, why))


FULL_MODEL_FORMATS = ("keras_h5", "keras_archive", "savedmodel")


def upgrade(src, dst, **options):
    """Convert to the newest target that fits the source: Keras 3.

    Full-model files (`.h5`, `.keras`, SavedModel) become a Keras 3 `.keras` archive when the
    output is named `*.keras`, a Keras 3 `.weights.h5` when it is named `*.weights.h5` (Keras 3
    rebuilds the Keras 2 model, `formats.keras3_model`; a model that has no Keras 3 form is
    refused, naming the layer and the alternative), and the Keras 3 TF checkpoint layout
    otherwise (`tf.train.Checkpoint(model=..., optimizer=...)` restores it into a Keras 3 model
    built in code). TF checkpoints become the Keras 3 checkpoint layout, `.weights.h5` a Keras 3
    `.weights.h5`.
    """
    from .formats.keras_model import UntranslatableModelError
    source_format = options.get("source_format")
    source = formats.get_format(source_format) if source_format else formats.detect(src)
    fmt = options.pop("format", None)
    if fmt is None and source.name in FULL_MODEL_FORMATS:
        lower = str(dst).lower()
        fmt = "keras_archive" if lower.endswith(".keras") else "keras_weights_h5" if lower.endswith(
            ".weights.h5") else "tf_checkpoint"
    try:
        return convert(src, dst, "keras3", format=fmt, **options)
    except UntranslatableModelError as e:
        stem = os.path.splitext(str(dst))[0]
        raise FormatError(src, "%s; the optimizer state can still be upgraded to the Keras 3 TF checkpoint layout: "
                               "name the output without .keras (e.g. %s.ckpt), then build the model in Keras 3 and "
                               "restore it with tf.train.Checkpoint(model=model, optimizer=optimizer).restore(...)"
                          % (e.problem, stem)) from e


# -- a model built in code ------------------------------------------------------------------------

@dataclasses.dataclass
class LoadReport:
    """What `load_into` restored: each model weight's source, and the optimizer state."""

    path: str
    weights: list  # [(name in the file, model weight name, "name" / "structure" / "order")]
    optimizer: str = None  # the algorithm restored
    source_generation: str = None
    target_generation: str = None
    iterations: int = None
    slots: int = 0
    conversion: dict = None  # migrate's report when the state changed generation
    warnings: list = dataclasses.field(default_factory=list)

    def to_json(self):
        return dataclasses.asdict(self)

    def format_text(self):
        how = {}
        for _, _, by in self.weights:
            how[by] = how.get(by, 0) + 1
        lines = ["%s: %d model weights restored (%s); %s optimizer state (%s -> %s), %d slots, iterations %s"
                 % (self.path, len(self.weights), ", ".join("%d by %s" % (n, k) for k, n in sorted(how.items())),
                    self.optimizer, self.source_generation, self.target_generation, self.slots, self.iterations)]
        lines += ["  warning: %s" % w for w in self.warnings]
        return "\n".join(lines)


def load_into(model, path, *, optimizer=None, config=None):
    """Restore model weights (trainable and not) AND optimizer state from `path` into `model`.

    `model` is a tf_keras or Keras 3 model built in code and compiled (its optimizer may be
    unbuilt: it is built over the model's trainable variables). `path` is any supported file
    with model weights and optimizer state (`.h5`, `.keras`, `.weights.h5`, TF checkpoint,
    SavedModel). The file's weights are paired with the model's by `matching.match` (names
    across generations, else the model's structure for checkpoint object paths); the state is
    converted to the optimizer's generation and restored with the model proving the mapping.
    optimizer / config: hints for files that cannot tell them (see `load_state`); by default
    the algorithm comes from the model's optimizer. Everything is checked before anything is
    assigned. Returns a `LoadReport`.
    """
    from . import matching
    from .restore import _entry, load_for
    path = os.fspath(path)
    target = getattr(model, "optimizer", None)
    if target is None or not hasattr(model, "weights"):
        raise KerasOptMigrateError("load_into needs a compiled model (model.compile(optimizer=...)); received %s "
                                   "without an optimizer" % type(model).__name__)
    _, restore, algorithm = _entry(target)
    payload = _read_model(path)
    extra = payload.extra or {}
    paths = extra.get("paths") or extra.get("object_paths")
    file_weights = list(payload.weights)
    if paths and len(paths) == len(file_weights) and extra.get("non_trainable"):
        # weights the payload keeps apart from those its writers lay out (a Keras 3 TF checkpoint's)
        file_weights += [(name, tensor, flag) for name, tensor, flag, _ in extra["non_trainable"]]
        paths = list(paths) + [p for _, _, _, p in extra["non_trainable"]]
    src = matching.sources([(name, tensor) for name, tensor, _ in file_weights],
                           paths if paths and len(paths) == len(file_weights) else None)
    weights = list(model.weights)
    found = matching.match(src, matching.targets(weights, model), require_all_targets=True,
                           what=(path, "the model"))
    values = []
    for s, t in found.pairs:
        var = weights[t]
        dtype = var.dtype.as_numpy_dtype if hasattr(var.dtype, "as_numpy_dtype") else np.dtype(var.dtype)
        value = np.asarray(materialize(file_weights[s][1]))
        if value.dtype.kind != np.dtype(dtype).kind:
            raise FormatError(path, "weight %s holds %s values, the model's %s is %s"
                              % (file_weights[s][0], value.dtype, matching.variable_name(var), np.dtype(dtype)))
        values.append((var, value.astype(dtype, copy=False)))
    hint = optimizer or (algorithm(target) if algorithm else None)
    if optimizer or config:
        state = load_state(path, optimizer=optimizer, config=config)
    else:
        state = load_for(path, hint, list(model.trainable_variables))
    source_generation = state.generation
    restored = restore_state_into(restore, target, state, model)
    for var, value in values:  # the optimizer accepted its state: nothing can fail from here
        var.assign(value)
    return LoadReport(
        path=path, weights=[(file_weights[s][0], matching.variable_name(weights[t]), found.by.get(s, "name"))
                            for s, t in found.pairs],
        optimizer=restored.optimizer, source_generation=source_generation, target_generation=restored.generation,
        iterations=restored.iterations, slots=sum(len(per) for per in restored.slots.values()),
        conversion=restored.source.get("conversion"), warnings=list(restored.warnings))


def restore_state_into(restore, optimizer, state, model):
    """Run a restorer over `model`'s trainable variables; returns the state it restored (converted)."""
    from .restore_keras import is_real_keras_optimizer, restore as restore_real
    if is_real_keras_optimizer(optimizer):
        return restore_real(optimizer, state, None, model)
    restore(optimizer, state, list(model.trainable_variables), model)
    return state
