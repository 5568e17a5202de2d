"""Keras full-model HDF5 files (`model.save('m.h5')`, and Keras 2.12's default `.keras`).

Layout (LAYOUTS.md §1.3, §2.3, §3.4, §4): `model_weights/<layer>/<weight name>` with the
attributes `layer_names` and per layer `weight_names`; `optimizer_weights/<weight name>`
with the attribute `weight_names`, the optimizer's own list in its real order (h5py
iterates alphabetically, so only the attribute gives the order). The root attribute
`training_config` holds `optimizer_config`.

Slots are attached by name where the names say which variable they belong to (v2
`Adam/hidden/kernel/m:0`, 2.11+ `Adam/m/hidden/kernel:0`, Keras 3 `adam/hidden_kernel_momentum`),
by replaying the generation's build order where they do not (Keras v1's anonymous
`training/Variable_3:0`); where both exist they must agree.
"""

import json

import h5py
import numpy as np

from ..errors import FormatError, KerasOptMigrateError, MappingError, UnsupportedFormatError
from ..optimizers.registry import get_spec
from ..optimizers.spec import positional_layout
from ..schema import OptimizerState, VariableSpec
from . import keras_common as kc
from . import keras_model as km
from .base import Format, ModelPayload, counter_value, is_hdf5
from .mapping import attach_named, attach_positional, strip_device_suffix

ITERATION_NAMES = ("iter", "iteration", "iterations")
# Extra slots every optimizer of a generation may keep (EMA, gradient accumulation).
GENERIC_SLOTS = {"experimental": {"average": "average"},
                 "keras3": {"average": "average", "gradient_accumulator": "gradient_accumulator"}}
# Keras 3 LossScaleOptimizer's own variables, first in its list: (name, canonical extra).
KERAS3_LSO_VARIABLES = (("iteration", "loss_scale_optimizer_iterations"),
                        ("learning_rate", "loss_scale_optimizer_learning_rate"),
                        ("step_counter", "loss_scale_good_steps"),
                        ("dynamic_scale", "loss_scale"))


def parse_weight_name(name, generation, spec, var_names):
    """What an optimizer weight's name says: ("slot", var, canonical slot), ("extra", name), or None."""
    base = strip_device_suffix(name)
    last = base.rsplit("/", 1)[-1]
    if last in ITERATION_NAMES:
        return ("extra", "iterations")
    if generation != "v1":
        own = {n: c for c, n in spec.names.get(generation, {}).items()}
        own.update(GENERIC_SLOTS.get(generation, {}))
        matches = []
        for var in var_names:
            for slot_name, canonical in own.items():
                if generation == "v2":
                    hit = base.endswith("/%s/%s" % (var, slot_name))
                elif generation == "experimental":
                    tail = "%s/%s" % (slot_name, var)
                    hit = base == tail or base.endswith("/" + tail)
                else:  # keras3: `<opt>/<var path with _>_<slot>`
                    hit = last == "%s_%s" % (var.replace("/", "_"), slot_name)
                if hit:
                    matches.append(("slot", var, canonical))
        if len(matches) == 1:
            return matches[0]
        if matches:
            return None  # ambiguous: leave it to the build order
    if last == "learning_rate":
        return ("extra", "learning_rate")
    extra = spec.canonical_extra(generation, last)
    return ("extra", extra) if extra else None


def _describe(parsed):
    if parsed is None:
        return "anonymous"
    return "%s of %s" % (parsed[2], parsed[1]) if parsed[0] == "slot" else parsed[1]


def attach_list(state, info, names, tensors, origin):
    """Attach an optimizer's own weight list (names + lazy tensors) to `state`.

    By name where every position has a meaningful name; otherwise by the replayed build
    order. When both are available they are compared position by position.
    """
    var_names = state.variable_names
    parsed = [parse_weight_name(n, info.generation, info.spec, var_names) for n in names]
    try:
        layout = positional_layout(info.spec, info.generation, state.config, [v.shape for v in state.variables],
                                   [v.dtype for v in state.variables])
        replay_error = None
        if len(layout) != len(names):
            replay_error = "it gives %d weights, the file has %d" % (len(layout), len(names))
    except KerasOptMigrateError as e:
        layout, replay_error = None, str(e)
    if replay_error is None:
        for i, (entry, p) in enumerate(zip(layout, parsed)):
            expected = ("slot", var_names[entry.var_index], entry.name) if entry.kind == "slot" else ("extra", entry.name)
            if p is not None and p != expected:
                raise MappingError("%s: position %d is %r, which names %s, but the %s build order of %s puts %s there"
                                   % (origin, i, names[i], _describe(p), info.generation, info.spec.name,
                                      _describe(expected)))
            if tuple(tensors[i].shape) != tuple(entry.shape):
                raise MappingError("%s: %r (%s) has shape %s, the %s build order of %s expects %s"
                                   % (origin, names[i], _describe(expected), tuple(tensors[i].shape),
                                      info.generation, info.spec.name, tuple(entry.shape)))
    else:
        by_name = {v.name: v for v in state.variables}
        for p, n, t in zip(parsed, names, tensors):
            if p is not None and p[0] == "slot" and p[2] in info.spec.slots:
                want = info.spec.shape_rule(p[2], by_name[p[1]].shape, state.config, info.generation)
                if want is not None and tuple(t.shape) != tuple(want):
                    raise MappingError("%s: %r (%s) has shape %s, expected %s"
                                       % (origin, n, _describe(p), tuple(t.shape), tuple(want)))
    named = all(p is not None for p in parsed)
    if not named:
        if replay_error is not None:
            raise MappingError("%s: the weights are anonymous (%s) and the %s build order of %s does not fit: %s"
                               % (origin, ", ".join(n for n, p in zip(names, parsed) if p is None)[:200],
                                  info.generation, info.spec.name, replay_error))
        attach_positional(state, info.spec, info.generation, list(zip(names, tensors)), origin)
        return state
    attach_named(state, [(p[1], p[2], n, t) for p, n, t in zip(parsed, names, tensors) if p[0] == "slot"], origin)
    keys = state.source.setdefault("keys", {})
    for p, n, t in zip(parsed, names, tensors):
        if p[0] != "extra":
            continue
        if p[1] == "iterations":
            state.iterations = counter_value(t, origin, what=n)
            keys["iterations"] = n
        else:
            state.extra[p[1]] = t
            keys["extra/%s" % p[1]] = n
    state.source["mapping"] = {"method": "by_name", "build_order_agrees": replay_error is None,
                               "proven_by_shapes": True}
    if replay_error is not None:
        state.warnings.append("slots were attached by name only: the %s build order of %s could not be "
                              "replayed (%s)" % (info.generation, info.spec.name, replay_error))
    return state


def report_missing(state, info, format_label):
    """Warnings for state the generation keeps but this file does not hold."""
    if state.iterations is None:
        state.warnings.append("the file records no iteration count (%s %s keeps none); iterations is unknown"
                              % (info.generation, info.spec.name))
    for key, canonical in info.spec.extras.get(info.generation, {}).items():
        if canonical not in state.extra:
            state.warnings.append(
                "%s %s keeps %r (%s), which %s does not hold: continuing training from this file "
                "will not reproduce the original run" % (info.generation, info.spec.name, canonical, key, format_label))
            state.source.setdefault("missing", []).append("extra/%s" % canonical)
    if info.wrapper and "loss_scale" not in state.extra:
        state.warnings.append("%s's loss scale is not in %s (Keras 2 keeps it only in TF checkpoints); "
                              "it restarts at initial_scale" % (info.wrapper, format_label))
        state.source.setdefault("missing", []).append("extra/loss_scale")


# -- model variables ---------------------------------------------------------------------

def _weight_flags(layer, weight_names, warnings):
    """Which of a layer's h5 weights are trainable (h5 lists trainable weights first)."""
    if not weight_names:
        return []
    if layer is None:
        warnings.append("cannot prove which weights of %s are trainable (no model config for it); assumed all"
                        % ", ".join(weight_names[:3]))
        return [True] * len(weight_names)
    if not layer.trainable:
        return [False] * len(weight_names)
    flags = []
    for wn in weight_names:
        owner = layer
        if layer.layers:  # nested model: the weight's name starts with its sub-layer's name
            first = strip_device_suffix(wn).split("/")[0]
            owner = next((sub for sub in kc._walk(layer.layers) if sub.name == first), None)
            if owner is not None and not owner.trainable:
                flags.append(False)
                continue
        known = kc.known_weights(owner.class_name, owner.config) if owner is not None else None
        base = strip_device_suffix(wn).rsplit("/", 1)[-1]
        table = dict(known or [])
        if base in table:
            flags.append(table[base])
        else:
            warnings.append("cannot prove that %s (layer %s, class %s) is trainable; assumed it is"
                            % (wn, layer.name, owner.class_name if owner else "unknown"))
            flags.append(True)
    return flags


def model_variables(f, model_config, where, warnings):
    """[(VariableSpec, dataset path)] of the trainable model variables, in trainable order."""
    mw = kc.h5_node(f, "model_weights", where, h5py.Group)
    layers = {l.name: l for l in kc.model_layers(model_config, where)} if model_config else {}
    if not model_config:
        warnings.append("the file has no model_config: every model weight is assumed trainable")
    out = []
    for layer_name in kc.str_list_attr(mw, "layer_names", where):
        group = kc.h5_node(mw, layer_name, where, h5py.Group)
        weight_names = kc.str_list_attr(group, "weight_names", where)
        for wn, trainable in zip(weight_names, _weight_flags(layers.get(layer_name), weight_names, warnings)):
            ds = kc.h5_node(group, wn, where, h5py.Dataset)
            if trainable:
                out.append((VariableSpec(strip_device_suffix(wn), ds.shape, ds.dtype), ds.name.lstrip("/")))
    names = [v.name for v, _ in out]
    if len(set(names)) != len(names):
        raise FormatError(where, "model variable names are not unique: %s" % sorted({n for n in names if names.count(n) > 1}))
    return out


def read_model_payload(path):
    """ModelPayload of a Keras HDF5 model file: every model weight (trainable or not), config, training config."""
    with kc.open_h5(path) as f:
        model_config = kc.json_attr(f, "model_config", path, required=False)
        training = kc.json_attr(f, "training_config", path, required=False)
        keras_version = kc._text(f.attrs.get("keras_version", "")) or None
        mw = kc.h5_node(f, "model_weights", path, h5py.Group)
        configs = {l.name: l for l in kc.model_layers(model_config, path)} if model_config else {}
        warnings, weights, layers = [], [], []
        for layer_name in kc.str_list_attr(mw, "layer_names", path):
            group = kc.h5_node(mw, layer_name, path, h5py.Group)
            names = kc.str_list_attr(group, "weight_names", path)
            info = configs.get(layer_name)
            for wn, trainable in zip(names, _weight_flags(info, names, warnings)):
                ds = kc.h5_node(group, wn, path, h5py.Dataset)
                weights.append((strip_device_suffix(wn), kc.lazy_dataset(ds, lambda: kc.open_h5(path), path, ds.name),
                                trainable))
            layers.append({"name": layer_name, "class_name": info.class_name if info else None, "weights": names})
    return ModelPayload(weights, config=model_config, keras_version=keras_version, source_format="keras_h5",
                        source_path=path, extra={"layers": layers, "training_config": training,
                                                 "warnings": warnings})


# -- writing ---------------------------------------------------------------------------

HDF5_OBJECT_HEADER_LIMIT = 64512  # what Keras splits list attributes at (`name0`, `name1`, ...)
DEFAULT_KERAS2_VERSION = "2.21.0"


def write_str_list_attr(obj, name, values):
    """A list-of-strings attribute the way Keras writes it (chunked when it would not fit)."""
    data = np.asarray([v.encode("utf8") for v in values]) if values else np.asarray([])
    chunks = 1
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in np.array_split(data, chunks)) and chunks < len(values):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
    else:
        for i, chunk in enumerate(np.array_split(data, chunks)):
            obj.attrs["%s%d" % (name, i)] = chunk


def create_dataset(group, name, array):
    """A dataset without creation times (so equal inputs give equal bytes)."""
    array = np.asarray(array)
    return group.create_dataset(name, data=array, track_times=False)


def optimizer_weight_names(state, model_names, entries):
    """Each position's `weight_names` entry as the target generation spells it (LAYOUTS §1.1, §2.1, §4)."""
    spec = get_spec(state.optimizer)
    gen = state.generation
    opt = str(state.config.get("name") or kc.class_name_for(state)) if gen != "v1" else kc.class_name_for(state)
    names, anonymous = [], 0
    for entry, _ in entries:
        if entry.kind == "extra":
            if entry.name == "iterations":
                names.append({"v1": "%s/iterations:0" % opt, "v2": "%s/iter:0" % opt}.get(gen, "iteration:0"))
            else:
                names.append("%s/%s:0" % (opt, spec.extra_key(gen, entry.name) or entry.name))
            continue
        var = model_names[entry.var_index]
        own = spec.names.get(gen, {}).get(entry.name, entry.name)
        if gen == "v1":
            names.append("training/Variable:0" if anonymous == 0 else "training/Variable_%d:0" % anonymous)
            anonymous += 1
        elif gen == "v2":
            names.append("%s/%s/%s:0" % (opt, var, own))
        else:
            names.append("%s/%s/%s:0" % (opt, own, var))
    if len(set(names)) != len(names):
        raise FormatError(None, "optimizer weight names would repeat (%s); two model variables share a name"
                          % sorted({n for n in names if names.count(n) > 1})[:3])
    return names


def write_model_weights(f, model, where):
    """`model_weights/<layer>/<weight>` with Keras' `layer_names` / `weight_names` attributes."""
    layers = (model.extra or {}).get("layers")
    if layers is None:
        raise FormatError(where, "the source model (%s) has no per-layer weight list to write" % model.source_format)
    mw = f.create_group("model_weights", track_order=False)
    mw.attrs["backend"] = "tensorflow"
    mw.attrs["keras_version"] = model.keras_version or DEFAULT_KERAS2_VERSION
    write_str_list_attr(mw, "layer_names", [l["name"] for l in layers])
    i = 0
    for layer in layers:
        group = mw.create_group(layer["name"])
        write_str_list_attr(group, "weight_names", layer["weights"])
        for wn in layer["weights"]:
            create_dataset(group, wn, model.weights[i][1])
            i += 1
    top = mw.create_group("top_level_model_weights")
    write_str_list_attr(top, "weight_names", [])
    if i != len(model.weights):
        raise FormatError(where, "the model's layers list %d weights, the payload holds %d" % (i, len(model.weights)))


# -- the adapter -------------------------------------------------------------------------

class Hdf5Format(Format):
    name = "keras_h5"
    description = "Keras full-model HDF5 (.h5; Keras 2.12 default .keras) with optimizer_weights"
    can_write = True
    needs_model = True
    generations = ("v1", "v2", "experimental")
    extensions = (".h5", ".hdf5")

    def read_model(self, path):
        return read_model_payload(str(path))

    def unwritable(self, state):
        out = {}
        if state.generation == "experimental" and "learning_rate" in state.extra:
            out["learning_rate"] = ("the 2.11+ optimizer keeps its learning rate in the config, not in "
                                    "optimizer_weights (the config holds the same value)", False)
        if state.generation == "experimental" and "u_product" in state.extra:
            out["u_product"] = ("the 2.11+ Nadam's _u_product is not in optimizer.variables, so .h5 files lack it "
                                "and loading restarts it at 1.0 (LAYOUTS §2.1)", True)
        for name in state.extra:
            if name.startswith("loss_scale"):
                out[name] = ("Keras 2 keeps the loss scale only in TF checkpoints; it restarts at initial_scale", True)
        return out

    def write(self, state, path, model=None, progress=None, **options):
        path = str(path)
        if state.generation not in self.generations:
            raise FormatError(path, "a Keras 2 .h5 holds %s optimizer state, not %s (Keras 3 cannot load optimizer "
                                    "state from .h5: write a .keras archive)" % ("/".join(self.generations),
                                                                                 state.generation))
        if model is None:
            raise FormatError(path, "writing a full-model .h5 needs the source model; the source holds none")
        if not isinstance(model.config, dict):
            raise FormatError(path, "the source has no model config to write into a full-model .h5")
        if km.is_keras3_config(model.config, model.keras_version):
            raise FormatError(path, "the source model's config is Keras 3's, which Keras 2 cannot load; write a "
                                    ".keras archive (generation keras3) instead")
        model_names = kc.payload_trainable(model, state, path)
        entries = kc.optimizer_arrays(state, path)
        names = optimizer_weight_names(state, model_names, entries)
        training = km.keras2_training_config((model.extra or {}).get("training_config"), kc.optimizer_entry(state))
        with h5py.File(path, "w") as f:
            f.attrs["backend"] = "tensorflow"
            f.attrs["keras_version"] = _keras2_version(model)
            f.attrs["model_config"] = json.dumps(model.config, sort_keys=False).encode("utf8")
            f.attrs["training_config"] = json.dumps(training).encode("utf8")
            write_model_weights(f, model, path)
            group = f.create_group("optimizer_weights")
            write_str_list_attr(group, "weight_names", names)
            for i, (name, (_, array)) in enumerate(zip(names, entries)):
                create_dataset(group, name, array)
                if progress:
                    progress(i + 1, len(names), name)

    def validate(self, path):
        if not is_hdf5(path):
            return False
        try:
            with h5py.File(path, "r") as f:
                return "model_weights" in f or "optimizer_weights" in f
        except OSError:
            return False

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        path = str(path)
        try:
            with kc.open_h5(path) as f:
                return self._read(f, path, optimizer, variables, config or {})
        except MappingError as e:
            raise FormatError(path, str(e)) from e
        except (OSError, KeyError, ValueError, TypeError) as e:
            if isinstance(e, KerasOptMigrateError):
                raise
            raise FormatError(path, "malformed Keras HDF5 file (%s)" % str(e).splitlines()[0]) from e

    def _read(self, f, path, hint, hint_variables, hint_config):
        keras_version = kc._text(f.attrs.get("keras_version", "")) or None
        backend = kc._text(f.attrs.get("backend", "")) or None
        training = kc.json_attr(f, "training_config", path, required=False)
        model_config = kc.json_attr(f, "model_config", path, required=False)
        warnings = []
        model_vars = model_variables(f, model_config, path, warnings) if "model_weights" in f else []
        variables = [v for v, _ in model_vars]
        if hint_variables is not None:
            if [v.shape for v in hint_variables] != [v.shape for v in variables]:
                warnings.append("variables=... differs from the file's trainable weights %s; using variables=..."
                                % [v.name for v in variables])
            variables = list(hint_variables)
        opt_entry = (training or {}).get("optimizer_config") if isinstance(training, dict) else None
        has_weights = kc.h5_has(f, "optimizer_weights")
        names = kc.str_list_attr(kc.h5_node(f, "optimizer_weights", path, h5py.Group), "weight_names", path) \
            if has_weights else []
        if has_weights:
            _check_weight_names(f["optimizer_weights"], names, path)
        if opt_entry is not None:
            info = kc.resolve_optimizer(opt_entry, keras_version, path, hint, hint_config)
        elif hint:
            generation = "keras3" if kc.keras_major(keras_version) == 3 else _guess_generation(names)
            info = kc.info_from_hint(hint, generation, hint_config, path)
        else:
            raise UnsupportedFormatError(path, "the file holds no optimizer state and no optimizer config: "
                                         "Keras saved the model without its optimizer (a TFOptimizer-wrapped "
                                         "TF1 optimizer, or include_optimizer=False); read the TF checkpoint instead")
        state = OptimizerState(optimizer=info.spec.name, generation=info.generation, config=info.config,
                               variables=variables, warnings=warnings)
        state.source.update({"format": self.name, "path": path, "container": "hdf5",
                             "keras_version": keras_version, "backend": backend, "class_name": info.class_name,
                             "variable_keys": {v.name: key for v, key in model_vars}})
        if info.wrapper:
            state.source["wrapper"] = {"class_name": info.wrapper, "config": info.wrapper_config}
        if not has_weights:
            state.warnings.append("the file holds no optimizer state (no optimizer_weights): the model was saved "
                                  "before the optimizer was built or with include_optimizer=False")
            return state
        opener = lambda: kc.open_h5(path)  # noqa: E731
        group = kc.h5_node(f, "optimizer_weights", path, h5py.Group)
        tensors = [kc.lazy_dataset(kc.h5_node(group, n, path, h5py.Dataset), opener, path, n) for n in names]
        keys = ["optimizer_weights/%s" % n for n in names]
        if info.wrapper and info.generation == "keras3":
            keys, tensors = _keras3_lso_prefix(state, keys, tensors, path)
        attach_list(state, info, keys, tensors, "optimizer_weights")
        kc.accumulation_iterations(state)
        report_missing(state, info, "an HDF5 model file")
        return state


def _check_weight_names(group, names, path):
    """`weight_names` lists every dataset of `optimizer_weights` once (Keras writes both from one list)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FormatError(path, "optimizer_weights.weight_names lists %s more than once" % repeated[0])
    stored = []
    group.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None)
    unlisted = sorted(set(stored) - set(names))
    if unlisted:
        raise FormatError(path, "optimizer_weights holds %d dataset(s) weight_names does not list (%s); the list "
                                "has %d names" % (len(unlisted), unlisted[0], len(names)))


def _keras2_version(model):
    version = model.keras_version or ""
    return version if kc.keras_major(version) == 2 else DEFAULT_KERAS2_VERSION


def _guess_generation(names):
    """Keras 2 generation from optimizer weight names alone (used only with an optimizer= hint)."""
    stripped = [strip_device_suffix(n) for n in names]
    if any(n.rsplit("/", 1)[-1].startswith("Variable") for n in stripped):
        return "v1"
    if "iteration" in stripped:  # the 2.11+ optimizer's counter has no optimizer prefix
        return "experimental"
    return "v2"


def _keras3_lso_prefix(state, keys, tensors, path):
    """Split Keras 3 LossScaleOptimizer's own four variables off its list; return the inner list."""
    n = len(KERAS3_LSO_VARIABLES)
    if len(keys) < n:
        raise FormatError(path, "a Keras 3 LossScaleOptimizer list needs at least %d weights, found %d" % (n, len(keys)))
    for (name, canonical), key, tensor in zip(KERAS3_LSO_VARIABLES, keys[:n], tensors[:n]):
        if strip_device_suffix(key).rsplit("/", 1)[-1] != name or tensor.shape != ():
            raise FormatError(path, "Keras 3 LossScaleOptimizer weight %s should be the scalar %r" % (key, name))
        state.extra[canonical] = tensor
        state.source.setdefault("keys", {})["extra/%s" % canonical] = key
    return keys[n:], tensors[n:]


FORMAT = Hdf5Format()
