"""Keras `.keras` zip archives and Keras 3 `.weights.h5` files.

An archive holds `metadata.json` (`keras_version`), `config.json` (the model config, with
`compile_config.optimizer`) and `model.weights.h5`, the same HDF5 layout a Keras 3
`save_weights('x.weights.h5')` writes (LAYOUTS.md §1.4, §2.4, §2.5, §3.2):
  layers/<snake_case class name>[_N]/vars/0..K   a layer's variables, trainable first
  optimizer/vars/0..N                           the optimizer's `variables`, positional
  optimizer/inner_optimizer/vars/...            LossScaleOptimizer's inner optimizer
                                                (Keras 2.12: optimizer/_optimizer/vars)
Nothing links a slot to its variable: the generation's build order is replayed.
Legacy (v2) optimizers are not saved at all; that reads as a state with no slots and a warning.

The archive is read member by member with `zipfile`; the weights file is opened from the
zip by h5py without extracting anything. No Keras object is deserialized, except that a Keras 3
archive whose layers hold sub-layers (MultiHeadAttention, nested models) or weights of unknown
names is rebuilt by Keras 3 (`keras3_model`, nothing allocated or run) to learn its trainable
order. Writing Keras 3 files from a Keras 2 model uses the layout Keras 3 itself records for the
model it rebuilds (`write_keras3_weights`).
"""

import contextlib
import copy
import dataclasses
import json
import os
import re
import zipfile

import h5py
import numpy as np

from ..errors import FormatError, KerasOptMigrateError, MappingError, UnsupportedFormatError
from ..schema import OptimizerState, VariableSpec, materialize
from . import keras_common as kc
from . import keras3_model as k3m
from . import keras_model as km
from .base import MAX_JSON_BYTES, Format, ModelPayload, is_hdf5, is_zip
from .hdf5 import KERAS3_LSO_VARIABLES, create_dataset, report_missing
from .mapping import attach_positional
from .zip_container import MemberFile, StreamedArchive, check_member_crc, stored_data_offset
from ..optimizers.spec import LAYOUT_FLAGS, positional_layout

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
MAX_WEIGHTS_BYTES = 1 << 40  # 1 TiB: a declared size above this is refused as hostile
MAX_COMPRESSION_RATIO = 100  # Keras stores members uncompressed; real weights deflate far less than this
INNER_GROUPS = ("optimizer/inner_optimizer/vars", "optimizer/_optimizer/vars")
DROPPED = "the file holds no optimizer state: Keras dropped it on save"


# -- the zip container -------------------------------------------------------------------

def _unsafe(name):
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts


@contextlib.contextmanager
def open_archive(path):
    """The ZipFile, after checking every member name is relative and stays inside the archive."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FormatError(path, "not a readable zip archive (%s)" % e) from e
    with z:
        seen = set()
        for info in z.infolist():
            if _unsafe(info.filename):
                raise FormatError(path, "unsafe member name %r (absolute or with '..'); refusing the archive"
                                  % info.filename)
            if info.filename in seen:  # tools disagree on which copy counts
                raise FormatError(path, "the archive holds two members named %r; refusing it" % info.filename)
            seen.add(info.filename)
        yield z


def _member(z, name, path, limit):
    try:
        info = z.getinfo(name)
    except KeyError:
        raise FormatError(path, "the archive has no %s (members: %s)" % (name, ", ".join(z.namelist()[:10])))
    if info.file_size > limit:
        raise FormatError(path, "%s declares %d bytes, more than the %d allowed" % (name, info.file_size, limit))
    archive = os.path.getsize(path)
    if info.header_offset + info.compress_size > archive:
        raise FormatError(path, "%s declares %d stored bytes at offset %d, past the end of the %d-byte archive"
                          % (name, info.compress_size, info.header_offset, archive))
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise FormatError(path, "%s is stored uncompressed but declares %d bytes over %d stored"
                          % (name, info.file_size, info.compress_size))
    if info.file_size > max(info.compress_size * MAX_COMPRESSION_RATIO, 1 << 20):
        raise FormatError(path, "%s expands %d compressed bytes to %d (more than %dx): a zip bomb? refused"
                          % (name, info.compress_size, info.file_size, MAX_COMPRESSION_RATIO))
    return info


def _json_member(z, name, path):
    info = _member(z, name, path, MAX_JSON_BYTES)
    try:
        with z.open(info) as f:
            data = f.read(MAX_JSON_BYTES + 1)
        return json.loads(data.decode("utf8"))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FormatError(path, "cannot read %s from the archive (%s)" % (name, e)) from e
    except ValueError as e:
        raise FormatError(path, "%s is not valid JSON (%s)" % (name, e)) from e


@contextlib.contextmanager
def open_weights(path, check_crc=False):
    """h5py.File of the archive's model.weights.h5, read straight from the zip.

    A stored member is read in place (zipfile's member file re-reads from the start on every
    backward seek), a compressed one through zipfile. `check_crc`: check a stored member's
    CRC-32 first (once per file and process); the readers ask for it before reading tensors.
    """
    with open_archive(path) as z:
        info = _member(z, WEIGHTS, path, MAX_WEIGHTS_BYTES)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                start = stored_data_offset(path, info)
                if check_crc:
                    check_member_crc(path, info, start)
                raw = MemberFile(path, start, info.file_size)
            else:
                raw = z.open(info)
            with raw:
                with h5py.File(raw, "r") as f:
                    yield f
        except (zipfile.BadZipFile, EOFError) as e:
            raise FormatError(path, "cannot read %s from the archive (%s)" % (WEIGHTS, e or type(e).__name__)) from e
        except OSError as e:
            raise FormatError(path, "%s is not a readable HDF5 file (%s)" % (WEIGHTS, str(e).splitlines()[0])) from e


class TensorOpener:
    """Opens the archive's weights again to read one tensor (see `kc.lazy_dataset`).

    The member's CRC-32 is checked once before the first tensor larger than a scalar is read;
    scalars (a step counter `inspect` shows) are read without that pass over the whole member.
    """

    def __init__(self, path):
        self.path = path

    def __call__(self):
        return open_weights(self.path, check_crc=True)

    def small(self):
        return open_weights(self.path)


# -- the weights file ------------------------------------------------------------------

def numbered(group, path):
    """The datasets `0..N-1` of a `vars` group in numeric order (h5py lists 0, 1, 10, 2, ...)."""
    names = list(group.keys())
    if not all(n.isdigit() for n in names) or sorted(int(n) for n in names) != list(range(len(names))):
        raise FormatError(path, "%s should hold datasets named 0..%d, found %s" % (group.name, len(names) - 1, names[:12]))
    return [kc.h5_node(group, str(i), path, h5py.Dataset) for i in range(len(names))]


def _layer_vars(group, path):
    """A layer group's own `vars` datasets (empty when it has none)."""
    if not kc.h5_has(group, "vars"):
        return [], None
    vars_group = kc.h5_node(group, "vars", path, h5py.Group)
    name = vars_group.attrs.get("name")
    return numbered(vars_group, path), (kc._text(name) if name is not None else None)


LAYER_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")  # Keras 2.12 uses the second


def _groups_by_class(f, prefix, path):
    """{snake_case class name: [group names holding variables, in counter order]} below `prefix`."""
    out = {}
    for name in kc.h5_node(f, prefix, path, h5py.Group):
        group = kc.h5_node(f, "%s/%s" % (prefix, name), path, h5py.Group)
        if not (_layer_vars(group, path)[0] or kc.h5_has(group, "layers") or _sub_layer_datasets(group, "", path)):
            continue
        m = re.match(r"^(.*?)(?:_(\d+))?$", name)
        out.setdefault(m.group(1), []).append((int(m.group(2) or 0), name))
    return {k: [n for _, n in sorted(v)] for k, v in out.items()}


def assign_groups(f, layers, path, prefix=None):
    """(container, {id(layer): group name}) matching the config's layers to their weight groups.

    Keras names each layer's group after its class (`dense`, `dense_1`, ...), counted in
    `model.layers` order (Keras 2.12 also counts layers it already saved elsewhere, so
    numbers can skip). Groups holding variables are matched, class by class and in counter
    order, to the config's layers of that class.
    """
    if prefix is None:
        prefix = next((c for c in LAYER_CONTAINERS if kc.h5_has(f, c)), None)
        if prefix is None:
            return None, {}
    groups = _groups_by_class(f, prefix, path)
    by_class = {}
    for layer in layers:
        by_class.setdefault(kc.to_snake_case(kc._bare(layer.class_name)), []).append(layer)
    assigned = {}
    for snake, names in groups.items():
        candidates = by_class.get(snake, [])
        if len(names) == len(candidates):
            assigned.update({id(l): n for l, n in zip(candidates, names)})
            continue
        # layers of this class without variables have no group: match by Keras' counter names
        counter = {id(l): snake if i == 0 else "%s_%d" % (snake, i) for i, l in enumerate(candidates)}
        if not set(names) <= set(counter.values()):
            raise FormatError(path, "cannot match the weight groups %s to the config's %d %s layer(s)"
                              % (names, len(candidates), snake))
        assigned.update({k: v for k, v in counter.items() if v in names})
    return prefix, assigned


def _layer_group(f, prefix, name, layer, path):
    where = "%s/%s" % (prefix, name)
    group = kc.h5_node(f, where, path, h5py.Group)
    datasets, recorded = _layer_vars(group, path)
    if recorded is not None and recorded != layer.name:
        raise FormatError(path, "%s records layer %r, the config's layer in that place is %r"
                          % (where, recorded, layer.name))
    return where, group, datasets


def variables_from_config(f, layers, path, warnings, prefix=None):
    """[(VariableSpec, dataset)] of the trainable variables, walking config layers in order.

    Keras 3 records the layer's own name in `vars.attrs['name']`; where it does, it must
    agree with the config's layer matched to that group.
    """
    prefix, assigned = assign_groups(f, layers, path, prefix)
    out = []
    for layer in layers:
        if id(layer) not in assigned:
            continue
        where, group, datasets = _layer_group(f, prefix, assigned[id(layer)], layer, path)
        if layer.layers and kc.h5_has(group, "layers"):
            out.extend(variables_from_config(f, layer.layers, path, warnings, where + "/layers"))
        if datasets:
            out.extend(_name_layer_vars(layer, datasets, warnings))
    return out


def model_payload(f, model_config, path, keras_version, opener=None):
    """ModelPayload of an archive: every layer's variables (trainable or not) in config order.

    A nested model's weights are its sub-layers' (named `<sub-layer>/<weight>`); in Keras 2
    archives a layer's sub-layer groups (MultiHeadAttention's `_query_dense`, ...) are carried
    too, named by their path. Each layer entry records where each weight sits below the layer's
    group (`save_paths`), which `keras3_model.match_source` pairs with Keras 3's own layout.
    With `opener` (a context manager function yielding the weights file again) the weights are
    LazyTensors read one at a time when written; without it they are read now.
    """
    described, items, warnings = _archive_weights(f, model_config, path, keras_version)
    weights = [(name, kc.lazy_dataset(ds, opener, path, ds.name) if opener else np.asarray(ds[()]), trainable)
               for name, ds, trainable in items]
    return ModelPayload(weights, config=model_config, keras_version=keras_version, source_format="keras_archive",
                        source_path=path, extra={"layers": described, "warnings": warnings})


def _archive_weights(f, model_config, path, keras_version):
    """(layer entries, [(name, dataset, trainable)], warnings) of an archive's model, in config order."""
    layers = kc.model_layers(model_config, path)
    prefix, assigned = assign_groups(f, layers, path)
    keras2 = kc.keras_major(keras_version) != 3
    items, described, warnings = [], [], []
    for layer in layers:
        if layer.layers and not keras2:
            raise FormatError(path, "layer %r is a nested model; carrying nested models over is not supported"
                              % layer.name)
        found = _layer_weight_list(f, prefix, assigned[id(layer)], layer, path, keras2, warnings) \
            if id(layer) in assigned else []
        items.extend((name, ds, trainable) for name, ds, trainable, _ in found)
        described.append({"name": layer.name, "class_name": kc._bare(layer.class_name),
                          "weights": ["%s:0" % n for n, _, _, _ in found],
                          "save_paths": [rel for _, _, _, rel in found]})
    return described, items, warnings


def keras2_variables(f, model_config, path, keras_version):
    """[(VariableSpec, dataset)] of a tf_keras archive's trainable variables whose layers hold sub-layer
    groups (MultiHeadAttention, nested models), in the trainable order of the model Keras 3 rebuilds from
    config.json (for built-in layers the order tf_keras lists them too: each layer's own variables, then
    its sub-layers' in creation order); each paired with its dataset by `keras3_model.match_source`."""
    described, items, _ = _archive_weights(f, model_config, path, keras_version)
    payload = ModelPayload(items, config=model_config, keras_version=keras_version, source_format="keras_archive",
                           source_path=path, extra={"layers": described})
    rebuilt = k3m.match_source(k3m.build(model_config, path, keras_version), payload, path)
    return [(VariableSpec(items[j][0], items[j][1].shape, items[j][1].dtype), items[j][1])
            for j in k3m.trainable_sources(rebuilt)]


def _layer_weight_list(f, prefix, group_name, layer, path, keras2, warnings):
    """[(name, dataset, trainable, path below the layer's group)] of one config layer's group."""
    where, group, datasets = _layer_group(f, prefix, group_name, layer, path)
    known = kc.known_weights(layer.class_name, layer.config)
    if known is not None and len(known) == len(datasets):
        named = [("%s/%s" % (layer.name, n), t and layer.trainable) for n, t in known]
    else:
        if datasets:
            warnings.append("layer %s (class %s): weight names unknown, assumed trainable"
                            % (layer.name, layer.class_name))
        named = [("%s/vars/%d" % (layer.name, k), layer.trainable) for k in range(len(datasets))]
    out = [(n, ds, t, "vars/%d" % k) for k, ((n, t), ds) in enumerate(zip(named, datasets))]
    if layer.layers is not None:
        if kc.h5_has(group, "layers"):
            sub_prefix, sub_assigned = assign_groups(f, layer.layers, path, where + "/layers")
            for sub in layer.layers:
                if id(sub) in sub_assigned:
                    for n, ds, t, rel in _layer_weight_list(f, sub_prefix, sub_assigned[id(sub)], sub, path, keras2,
                                                            warnings):
                        out.append((n, ds, t, "layers/%s/%s" % (sub_assigned[id(sub)], rel)))
    elif keras2:
        for rel, ds in _sub_layer_datasets(group, "", path):
            out.append(("%s/%s" % (layer.name, rel), ds, layer.trainable, rel))
    return out


def _sub_layer_datasets(group, rel, path):
    """[(path, dataset)] of the `vars` datasets in a layer group's sub-layer groups, in name order."""
    out = []
    for child in sorted(group):
        if child == "vars":
            continue
        sub = kc.h5_node(group, child, path, h5py.Group)
        here = "%s/%s" % (rel, child) if rel else child
        for k, ds in enumerate(_layer_vars(sub, path)[0]):
            out.append(("%s/vars/%d" % (here, k), ds))
        out.extend(_sub_layer_datasets(sub, here, path))
    return out


def _name_layer_vars(layer, datasets, warnings):
    known = kc.known_weights(layer.class_name, layer.config)
    if known is not None and len(known) == len(datasets):
        named = [("%s/%s" % (layer.name, n), t) for n, t in known]
    else:
        warnings.append("layer %s (class %s): cannot prove which of its %d variables are trainable or what they "
                        "are called; assumed all trainable, named %s/vars/<k>" % (layer.name, layer.class_name,
                                                                               len(datasets), layer.name))
        named = [("%s/vars/%d" % (layer.name, k), True) for k in range(len(datasets))]
    if not layer.trainable:
        return []
    return [(VariableSpec(n, ds.shape, ds.dtype), ds) for (n, t), ds in zip(named, datasets) if t]


def _has_nested_groups(f, path):
    """Whether a layer group holds groups of its own (sub-layers: MultiHeadAttention, nested models)."""
    for container in LAYER_CONTAINERS:  # `layers`, or Keras 2.12's `_layer_checkpoint_dependencies`
        if not kc.h5_has(f, container):
            continue
        for name in f[container]:
            group = kc.h5_node(f, "%s/%s" % (container, name), path, h5py.Group)
            if any(child != "vars" for child in group):
                return True
    return False


def keras3_variables(f, model_config, path):
    """[(VariableSpec, dataset)] of a Keras 3 archive's trainable variables in `trainable_variables` order,
    as Keras 3 itself builds the model from config.json (nothing is allocated or run)."""
    rebuilt = k3m.build(model_config, path, "3")
    out = []
    for i in rebuilt.trainable:
        var = rebuilt.variables[i]
        where = "%s/vars/%s" % (var.group, var.key) if var.group else "vars/" + var.key
        ds = kc.h5_node(f, where, path, h5py.Dataset)
        if tuple(ds.shape) != var.shape:
            raise FormatError(path, "%s holds shape %s, Keras 3's %s has %s" % (where, ds.shape, var.path, var.shape))
        out.append((VariableSpec(var.path, ds.shape, ds.dtype), ds))
    return out


def variables_without_config(f, path, warnings):
    """Variables of a `.weights.h5` (no config): layer groups in storage order, all assumed trainable."""
    if not kc.h5_has(f, "layers"):
        return []
    found = []
    for group_name in f["layers"]:
        group = kc.h5_node(f, "layers/" + group_name, path, h5py.Group)
        datasets, recorded = _layer_vars(group, path)
        if not datasets:
            continue
        offsets = [ds.id.get_offset() for ds in datasets]
        order = min([o for o in offsets if o is not None], default=float("inf"))
        layer_name = recorded or group_name
        cls = {"dense": "Dense", "embedding": "Embedding"}.get(re.sub(r"_\d+$", "", group_name))
        layer = kc.LayerInfo(layer_name, cls or group_name, {}, True)
        found.append((order, group_name, _name_layer_vars(layer, datasets, [])))
    found.sort(key=lambda x: (x[0], x[1]))
    warnings.append("a weights file has no model config: the layer order (%s) was inferred from where Keras "
                    "stored them, and every variable is assumed trainable; pass variables=... (CLI --variables) "
                    "to be certain" % ", ".join(g for _, g, _ in found))
    return [v for _, _, vs in found for v in vs]


def optimizer_lists(f, info, path):
    """(outer datasets, inner datasets or None) of the optimizer group."""
    outer = numbered(kc.h5_node(f, "optimizer/vars", path, h5py.Group), path)
    inner = None
    for name in INNER_GROUPS:
        if kc.h5_has(f, name):
            inner = numbered(kc.h5_node(f, name, path, h5py.Group), path)
    return outer, inner


# Config keys that decide which variables a positional list holds, and the values to try.
INFERABLE_FLAGS = dict(LAYOUT_FLAGS, use_ema=True, gradient_accumulation_steps=2)
# Flags whose presence a layout proves but whose value it does not (the tried value is a stand-in).
PRESENCE_ONLY = ("momentum", "gradient_accumulation_steps")


def infer_layout_config(info, state, shapes, explicit=()):
    """The one setting of the layout-deciding flags whose build order fits `shapes`, or None.

    Every on/off combination of the flags the caller did not give (`explicit`) is replayed;
    combinations that give the same list are one candidate. Exactly one candidate must fit
    every count and shape; several that fit are a MappingError naming them.
    """
    free = [k for k in INFERABLE_FLAGS if k not in explicit]
    fits = {}
    for bits in range(2 ** len(free)):
        flags = {k: (INFERABLE_FLAGS[k] if bits >> i & 1 else {"momentum": 0.0, "gradient_accumulation_steps": None}
                     .get(k, False)) for i, k in enumerate(free)}
        config = dict(state.config, **flags)
        try:
            layout = positional_layout(info.spec, info.generation, config, [v.shape for v in state.variables],
                                       [v.dtype for v in state.variables])
        except KerasOptMigrateError:
            continue
        if [tuple(e.shape) for e in layout] == [tuple(s) for s in shapes]:
            signature = tuple((e.kind, e.name, e.var_index) for e in layout)
            fits.setdefault(signature, []).append(flags)
    if not fits:
        return None
    if len(fits) > 1:
        described = ["{%s}" % ", ".join("%s=%r" % kv for kv in _decided(group).items()) for group in fits.values()]
        raise MappingError("%d different %s %s layouts fit the file's %d variables: %s; pass config=... (CLI "
                           "--config) to say which" % (len(fits), info.generation, info.spec.name, len(shapes),
                                                       " or ".join(described)))
    group = next(iter(fits.values()))
    decided = _decided(group)
    return {"flags": decided, "how": "the only one of %d candidate configs (%s) whose %s build order fits all %d "
                                     "shapes" % (2 ** len(free), ", ".join(free), info.generation, len(shapes))}


def _decided(group):
    """The flags with one value across every config that gives the same layout (the others do not matter)."""
    return {k: v for k, v in group[0].items() if all(g[k] == v for g in group)}


def read_weights_file(f, path, info, variables, opener, prefix, warnings, given_flags=()):
    """OptimizerState from an open weights file given the resolved optimizer and variables."""
    state = OptimizerState(optimizer=info.spec.name, generation=info.generation, config=info.config,
                           variables=[v for v, _ in variables], warnings=warnings)
    state.source["variable_keys"] = {v.name: prefix + ds.name.lstrip("/") for v, ds in variables}
    if info.wrapper:
        state.source["wrapper"] = {"class_name": info.wrapper, "config": info.wrapper_config}
    if not kc.h5_has(f, "optimizer/vars"):
        if info.generation == "v2":
            state.warnings.insert(0, DROPPED + " (Keras does not save legacy %s optimizers in .keras files; "
                                  "use the .h5 or TF checkpoint)" % info.class_name)
        else:
            state.warnings.insert(0, "the file holds no optimizer state (no optimizer/vars): the optimizer was "
                                  "never built or not saved")
        state.source["missing"] = ["optimizer"]
        return state
    if info.generation in ("v1", "v2"):
        raise FormatError(path, "optimizer/vars exists but the config names a %s optimizer, which Keras never "
                          "saves this way" % info.generation)
    outer, inner = optimizer_lists(f, info, path)
    datasets = outer
    if info.wrapper:
        if inner is None:
            raise FormatError(path, "%s without its inner optimizer's variables" % info.wrapper)
        skip = len(KERAS3_LSO_VARIABLES) if info.generation == "keras3" else 0
        if [d.shape for d in outer[skip:]] != [d.shape for d in inner]:
            raise FormatError(path, "optimizer/vars and the inner optimizer's vars should hold the same %d "
                              "variables; their shapes differ" % len(inner))
        for (_, canonical), ds in zip(KERAS3_LSO_VARIABLES[:skip], outer[:skip]):
            if ds.shape != ():
                raise FormatError(path, "%s should be a scalar (%s)" % (ds.name, canonical))
            state.extra[canonical] = kc.lazy_dataset(ds, opener, path, ds.name)
            state.source.setdefault("keys", {})["extra/%s" % canonical] = prefix + ds.name.lstrip("/")
        datasets = inner
    tensors = [(prefix + ds.name.lstrip("/"), kc.lazy_dataset(ds, opener, path, ds.name)) for ds in datasets]
    try:
        attach_positional(state, info.spec, info.generation, tensors, "optimizer/vars")
    except MappingError as e:
        inferred = infer_layout_config(info, state, [t.shape for _, t in tensors], explicit=given_flags)
        if inferred is None:
            raise FormatError(path, str(e)) from e
        state.config.update(inferred["flags"])
        state.source["inferred_config"] = inferred
        state.warnings.append("the layout-deciding config (%s) was inferred: %s"
                              % (", ".join("%s=%r" % kv for kv in inferred["flags"].items()), inferred["how"]))
        try:
            attach_positional(state, info.spec, info.generation, tensors, "optimizer/vars")
        except MappingError as again:
            raise FormatError(path, str(again)) from again
        for key in PRESENCE_ONLY:  # the file proves the flag is on, not its value
            if inferred["flags"].get(key):
                state.config.pop(key)
                inferred["flags"][key] = "set (value not in the file; pass config={'%s': ...})" % key
    kc.accumulation_iterations(state)
    report_missing(state, info, "a .keras / .weights.h5 file")
    return state


# -- the adapters ------------------------------------------------------------------------

class KerasArchiveFormat(Format):
    """`.keras` archives: read from every Keras that writes them; written in two flavours.

    The target generation decides the flavour: `keras3` writes what Keras 3.15 saves (loaded
    by `keras.models.load_model`), `experimental` what tf_keras 2.21 saves for a 2.11+
    optimizer (loaded by `tf_keras.models.load_model`). tf_keras saves no legacy (v2)
    optimizer state in `.keras` files (LAYOUTS §1.4), so there is no v2 flavour.
    """

    name = "keras_archive"
    description = "Keras .keras zip archive (config.json, metadata.json, model.weights.h5)"
    can_write = True
    needs_model = True
    generations = ("keras3", "experimental")
    extensions = (".keras",)

    def read_model(self, path):
        path = str(path)
        with open_archive(path) as z:
            metadata = _json_member(z, METADATA, path) if METADATA in z.namelist() else {}
            model_config = _json_member(z, CONFIG, path)
        with open_weights(path) as f:
            payload = model_payload(f, model_config, path, metadata.get("keras_version"),
                                    opener=TensorOpener(path))
        payload.extra["training_config"] = model_config.get("compile_config")
        return payload

    def unwritable(self, state):
        if state.generation == "experimental":
            return _tf_keras_unwritable(state)
        return _keras3_unwritable(state)

    def check_writable(self, state, path, model=None):
        if state.generation == "keras3" and _keras2_source(model):
            k3m.order_state_variables(k3m.for_payload(model, str(path)), model, state, str(path))

    def write(self, state, path, model=None, progress=None, **options):
        """Config, metadata and model.weights.h5 that the target generation's `load_model` restores:
        Keras 3's for `keras3`, tf_keras 2.21's for `experimental`."""
        path = str(path)
        rebuilt = None
        if state.generation == "keras3" and _keras2_source(model):
            rebuilt = k3m.for_payload(model, path)  # Keras 3 itself rebuilds a Keras 2 model
            config, version, compile_config = copy.deepcopy(rebuilt.config), km.KERAS3_VERSION, km.keras3_compile_config
        elif state.generation == "keras3":
            config, version, compile_config = _keras3_config(model, path), km.KERAS3_VERSION, km.keras3_compile_config
        elif state.generation == "experimental":
            config, version = _keras2_config(model, path), km.TF_KERAS_VERSION
            compile_config = km.keras2_compile_config
        else:
            raise FormatError(path, "a .keras archive holds keras3 or experimental (tf_keras 2.11+) optimizer state, "
                                    "not %s: tf_keras does not save legacy optimizers in .keras files; write a .h5 or "
                                    "a TF checkpoint" % state.generation)
        # model.weights.h5 is written in place, one tensor at a time, then the zip is built around it
        archive = StreamedArchive(path, WEIGHTS, date_time=ZIP_DATE, external_attr=ZIP_MODE)
        with h5py.File(path, "w", userblock_size=archive.userblock) as f:
            if rebuilt is not None:
                entry = write_keras3_weights(f, state, model, rebuilt, path, progress)
            else:
                entry = write_archive_weights(f, state, model, config, path, progress)
        config["compile_config"] = compile_config((model.extra or {}).get("training_config"), entry)
        metadata = {"keras_version": version}
        archive.finish({CONFIG: json.dumps(config).encode("utf8"), METADATA: json.dumps(metadata).encode("utf8")})

    def validate(self, path):
        if not is_zip(path):
            return False
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
        return CONFIG in names and (WEIGHTS in names or METADATA in names)

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        path = str(path)
        try:
            with open_archive(path) as z:
                metadata = _json_member(z, METADATA, path) if METADATA in z.namelist() else {}
                model_config = _json_member(z, CONFIG, path)
                if "model.weights.npz" in z.namelist() and WEIGHTS not in z.namelist():
                    raise UnsupportedFormatError(path, "weights stored as model.weights.npz are not supported yet")
            if not isinstance(model_config, dict) or not isinstance(metadata, dict):
                raise FormatError(path, "config.json and metadata.json must hold JSON objects")
            keras_version = metadata.get("keras_version")
            compile_config = model_config.get("compile_config") or {}
            entry = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
            warnings = []
            if entry is not None:
                info = kc.resolve_optimizer(entry, keras_version, path, optimizer, config)
            else:
                info = kc.info_from_hint(optimizer, "keras3" if kc.keras_major(keras_version) == 3 else "experimental",
                                         config, path)
                warnings.append("config.json has no compiled optimizer; optimizer=%r was used" % optimizer)
            layers = kc.model_layers(model_config, path)
            with open_weights(path) as f:
                before = len(warnings)
                found = variables_from_config(f, layers, path, warnings)
                if kc.keras_major(keras_version) == 3 and (_has_nested_groups(f, path) or any(
                        "cannot prove" in w for w in warnings[before:])):
                    found = keras3_variables(f, model_config, path)  # only Keras 3 knows these layers' order
                    del warnings[before:]
                elif kc.keras_major(keras_version) == 2 and _has_nested_groups(f, path):
                    try:
                        found = keras2_variables(f, model_config, path, keras_version)
                        del warnings[before:]
                    except FormatError as e:  # no keras 3, or a model it cannot rebuild: the config walk stands
                        warnings.append("the layers' sub-layer variables could not be ordered (%s)" % e.problem)
                found = _apply_hint(found, variables, warnings)
                state = read_weights_file(f, path, info, found, TensorOpener(path), WEIGHTS + ":", warnings)
        except MappingError as e:
            raise FormatError(path, str(e)) from e
        except (OSError, KeyError, ValueError, TypeError) as e:
            if isinstance(e, KerasOptMigrateError):
                raise
            raise FormatError(path, "malformed .keras archive (%s)" % str(e).splitlines()[0]) from e
        state.source.update({"format": self.name, "path": path, "container": "zip", "member": WEIGHTS,
                             "keras_version": keras_version, "class_name": info.class_name})
        return state


class KerasWeightsFormat(Format):
    name = "keras_weights_h5"
    description = "Keras 3 weights file (.weights.h5: layers/*/vars, optimizer/vars; needs optimizer=...)"
    can_write = True
    needs_model = True
    generations = ("keras3",)
    extensions = (".weights.h5",)

    def read_model(self, path):
        """The layer groups as they are (a weights file has no config to name them by)."""
        path = str(path)
        with kc.open_h5(path) as f:
            groups = []
            if kc.h5_has(f, "layers"):
                for name in f["layers"]:
                    group = kc.h5_node(f, "layers/" + name, path, h5py.Group)
                    datasets, recorded = _layer_vars(group, path)
                    offsets = [o for o in (ds.id.get_offset() for ds in datasets) if o is not None]
                    groups.append((min(offsets, default=float("inf")), name, recorded,
                                   [kc.lazy_dataset(ds, lambda: kc.open_h5(path), path, ds.name) for ds in datasets]))
            # storage order is build order (what `variables_without_config` infers); keep it when rewriting
            groups = [g[1:] for g in sorted(groups, key=lambda g: (g[0], g[1]))]
            found = variables_without_config(f, path, [])
        trainable = {v.name for v, _ in found}
        weights, layers = [], []
        for name, recorded, arrays in groups:
            layer = recorded or name
            names = ["%s/vars/%d" % (layer, k) for k in range(len(arrays))]
            known = [v.name for v, _ in found if v.name.startswith(layer + "/")]
            if len(known) == len(arrays):
                names = known
            weights.extend((n, a, n in trainable) for n, a in zip(names, arrays))
            layers.append({"name": layer, "group": name, "weights": ["%s:0" % n for n in names]})
        order = {v.name: i for i, (v, _) in enumerate(found)}
        return ModelPayload(weights, config=None, source_format=self.name, source_path=path,
                            extra={"layers": layers, "trainable_order": order})

    def unwritable(self, state):
        return _keras3_unwritable(state)

    def check_writable(self, state, path, model=None):
        if state.generation == "keras3" and _keras2_source(model):
            k3m.order_state_variables(k3m.for_payload(model, str(path)), model, state, str(path))

    def write(self, state, path, model=None, progress=None, **options):
        """A Keras 3 `.weights.h5` (what `model.save_weights` writes), loadable by `model.load_weights`."""
        path = str(path)
        if state.generation != "keras3":
            raise FormatError(path, "the .weights.h5 writer lays out Keras 3 state, not %s" % state.generation)
        if _keras2_source(model):
            rebuilt = k3m.for_payload(model, path)
            with h5py.File(path, "w") as f:
                write_keras3_weights(f, state, model, rebuilt, path, progress)
            return
        if model is not None and isinstance(model.config, dict):
            config3 = km.keras3_model_config(model.config, path, model.keras_version)
        elif model is not None and any("group" in l for l in (model.extra or {}).get("layers", [])):
            config3 = None
        else:
            raise FormatError(path, "writing a .weights.h5 needs the source model's weights")
        with h5py.File(path, "w") as f:
            if config3 is not None:
                write_archive_weights(f, state, model, config3, path, progress)
            else:
                _copy_weights_groups(f, state, model, path, progress)

    def validate(self, path):
        if not is_hdf5(path):
            return False
        try:
            with h5py.File(path, "r") as f:
                return "model_weights" not in f and ("optimizer" in f or "layers" in f)
        except OSError:
            return False

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        path = str(path)
        try:
            with kc.open_h5(path) as f:
                generation = _weights_generation(f, path, optimizer, config, variables)
                if not optimizer:
                    raise MappingError(
                        "%s: a .weights.h5 file does not say which optimizer wrote its state; pass "
                        "optimizer=<algorithm> (CLI --optimizer), e.g. optimizer='adam'" % path)
                info = kc.info_from_hint(optimizer, generation, config, path)
                if any(kc.h5_has(f, g) for g in INNER_GROUPS):  # a loss-scale wrapper around `optimizer`
                    info.wrapper = "LossScaleOptimizer" if generation == "keras3" else "LossScaleOptimizerV3"
                warnings = []
                found = _apply_hint(variables_without_config(f, path, warnings), variables, warnings)
                state = read_weights_file(f, path, info, found, lambda: kc.open_h5(path), "", warnings,
                                          given_flags=tuple(config or ()))
        except MappingError as e:
            raise FormatError(path, str(e).replace(path + ": ", "")) from e
        except (OSError, KeyError, ValueError, TypeError) as e:
            if isinstance(e, KerasOptMigrateError):
                raise
            raise FormatError(path, "malformed .weights.h5 file (%s)" % str(e).splitlines()[0]) from e
        state.source.update({"format": self.name, "path": path, "container": "hdf5"})
        return state


def _copy_weights_groups(f, state, model, where, progress):
    """A weights file from another weights file: its layer groups as they were, the new optimizer list."""
    if [tuple(np.shape(a)) for n, a, t in _ordered_trainable(model)] != [tuple(v.shape) for v in state.variables]:
        raise FormatError(where, "the source weights file's variables do not match the optimizer state's")
    layers = f.create_group("layers")
    i = 0
    for layer in model.extra["layers"]:
        vars_group = layers.create_group(layer["group"]).create_group("vars")
        vars_group.attrs["name"] = layer["name"]
        for k in range(len(layer["weights"])):
            create_dataset(vars_group, str(k), model.weights[i][1])
            i += 1
    write_optimizer_groups(f, state, kc.optimizer_arrays(state, where), where, progress)


def _ordered_trainable(model):
    order = model.extra.get("trainable_order", {})
    return sorted((w for w in model.weights if w[2]), key=lambda w: order.get(w[0], 0))


def _weights_generation(f, path, optimizer, config, variables):
    """Keras 3 (`vars` groups carry a `name` attribute, learning_rate at vars/1) or Keras 2."""
    if kc.h5_has(f, "optimizer/vars"):
        named = "name" in kc.h5_node(f, "optimizer/vars", path, h5py.Group).attrs
        if named:
            return "keras3"
    if (config or {}).get("generation") in ("keras3", "experimental"):
        return config["generation"]
    return "keras3"


def _apply_hint(found, hint, warnings):
    if hint is None:
        return found
    if [v.shape for v, _ in found] != [v.shape for v in hint]:
        warnings.append("variables=... differs from the file's trainable variables %s; using variables=..."
                        % [v.name for v, _ in found])
        return [(v, _NoDataset(v.name)) for v in hint]
    return [(h, ds) for h, (_, ds) in zip(hint, found)]


# -- writing ---------------------------------------------------------------------------

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: equal inputs give equal archives
ZIP_MODE = 0o600 << 16  # what Keras writes


def _keras3_unwritable(state):
    out = {}
    if kc.loss_scale_wrapper(state) is None:
        for name in state.extra:
            if name.startswith("loss_scale"):
                out[name] = ("the state records no loss-scale wrapper to write it in; the loss scale restarts at "
                             "initial_scale", True)
    return out


def _tf_keras_unwritable(state):
    """What tf_keras 2.21's `.keras` files do not keep: it saves `optimizer.variables` only (LAYOUTS §2.1, §2.5)."""
    out = {}
    if "learning_rate" in state.extra:
        out["learning_rate"] = ("the 2.11+ optimizer keeps its learning rate in the config (which holds the same "
                                "value), not in optimizer.variables", False)
    if "current_learning_rate" in state.extra:
        out["current_learning_rate"] = ("the schedule in the config recomputes it from iterations", False)
    if "u_product" in state.extra:
        out["u_product"] = ("the 2.11+ Nadam's _u_product is not in optimizer.variables, so .keras files lack it "
                            "and loading restarts it at 1.0 (LAYOUTS §2.1)", True)
    for name in state.extra:
        if name.startswith("loss_scale"):
            out[name] = ("tf_keras keeps the loss scale only in TF checkpoints; it restarts at initial_scale", True)
    return out


def _layer_arrays(model, where):
    """{layer name: [arrays]} from the payload, in each layer's own variable order."""
    layers = (model.extra or {}).get("layers")
    if layers is None:
        raise FormatError(where, "the source model (%s) has no per-layer weight list" % model.source_format)
    out, i = {}, 0
    for layer in layers:
        n = len(layer["weights"])
        out[layer["name"]] = [model.weights[k][1] for k in range(i, i + n)]
        i += n
    return out


def write_archive_weights(f, state, model, config, where, progress=None):
    """Fill an open HDF5 file with a `.keras` weights layout: layers/*/vars, optimizer/vars, vars.

    `config` is the model config in the target's form (Keras 3, or tf_keras' for the 2.11+
    generation); layer groups are named as that Keras names them (`archive_layer_groups`).
    Keras 3 records each layer's name on its `vars` group, tf_keras does not. Returns the
    serialized optimizer (inside its loss-scale wrapper, when the state has one).
    """
    kc.payload_trainable(model, state, where)
    entries = kc.optimizer_arrays(state, where)
    arrays = _layer_arrays(model, where)
    keras3 = state.generation == "keras3"
    layers = f.create_group("layers")
    for group_name, layer_name, _ in km.archive_layer_groups(config):
        vars_group = layers.create_group(group_name).create_group("vars")
        if keras3:
            vars_group.attrs["name"] = layer_name
        for k, array in enumerate(arrays.pop(layer_name, [])):
            create_dataset(vars_group, str(k), array)
    leftover = [name for name, values in arrays.items() if values]
    if leftover:
        raise FormatError(where, "the model config has no layer %s, which holds weights" % ", ".join(leftover))
    entry = write_optimizer_groups(f, state, entries, where, progress)
    root = f.create_group("vars")
    if keras3:
        root.attrs["name"] = config["config"].get("name") or "functional"
    return entry


def _keras2_source(model):
    """Whether the source payload carries a Keras 2 model config (which Keras 3 rebuilds to write it)."""
    return model is not None and isinstance(model.config, dict) and not km.is_keras3_config(model.config,
                                                                                            model.keras_version)


def write_keras3_weights(f, state, model, rebuilt, where, progress=None):
    """A Keras 3 `model.weights.h5` of a Keras 2 source model as Keras 3 itself lays it out.

    `rebuilt` (`keras3_model.Keras3Model`) says which group and dataset each Keras 3 variable
    goes to and which source weight it holds; the weights are streamed one at a time. The
    optimizer's list follows the Keras 3 model's `trainable_variables` order. Returns the
    serialized optimizer.
    """
    ordered = k3m.order_state_variables(rebuilt, model, state, where)
    state3 = dataclasses.replace(state, variables=ordered)
    entries = kc.optimizer_arrays(state3, where)
    for group, metadata in rebuilt.groups:
        if metadata:
            vars_group = f.require_group("%s/vars" % group if group else "vars")
            for key, value in metadata.items():
                vars_group.attrs[key] = value
    for var in rebuilt.variables:
        vars_group = f.require_group("%s/vars" % var.group if var.group else "vars")
        create_dataset(vars_group, var.key, model.weights[var.source][1])
    return write_optimizer_groups(f, state3, entries, where, progress)


def write_optimizer_groups(f, state, entries, where, progress=None):
    """`optimizer/vars` (and a loss-scale wrapper's `optimizer/inner_optimizer/vars`); returns the serialized optimizer.

    Keras 3's LossScaleOptimizer lists its own iteration, learning_rate, step_counter and
    dynamic_scale, then its inner optimizer's variables; tf_keras' LossScaleOptimizerV3 lists
    the inner optimizer's only. Both save the inner optimizer's list a second time as
    `inner_optimizer` (LAYOUTS §2.5, §3.2).
    """
    inner = kc.archive_optimizer_entry(state)
    entry = kc.wrap_optimizer_entry(state, inner)
    keras3 = state.generation == "keras3"
    arrays = [("optimizer/vars/%d" % i, array) for i, (_, array) in enumerate(entries)]
    groups = [("optimizer/vars", entry, arrays)]
    if entry is not inner:
        if keras3:
            arrays = [("optimizer/vars/%d" % i, array) for i, array in enumerate(
                [a for _, a in _keras3_lso_arrays(state, where)] + [a for _, a in entries])]
            groups = [("optimizer/vars", entry, arrays)]
        groups.append(("optimizer/inner_optimizer/vars", inner,
                       [("optimizer/inner_optimizer/vars/%d" % i, a) for i, (_, a) in enumerate(entries)]))
    total, done = sum(len(g[2]) for g in groups), 0
    for group_path, group_entry, items in groups:
        group = f.require_group(group_path)
        if keras3:
            group.attrs["name"] = group_entry["config"]["name"]
        for label, array in items:
            create_dataset(group, label.rsplit("/", 1)[1], array)
            done += 1
            if progress:
                progress(done, total, label)
    return entry


def _keras3_lso_arrays(state, where):
    """[(name, array)] of Keras 3 LossScaleOptimizer's own variables, in its build order."""
    dtypes = {"iteration": np.int64, "learning_rate": np.float32, "step_counter": np.int64,
              "dynamic_scale": np.float32}
    out, missing = [], []
    for name, canonical in KERAS3_LSO_VARIABLES:
        if canonical not in state.extra:
            missing.append(canonical)
            continue
        array = np.asarray(materialize(state.extra[canonical]))
        if array.shape != ():
            raise FormatError(where, "%s (the LossScaleOptimizer's %s) should be a scalar, has shape %s"
                              % (canonical, name, array.shape))
        out.append((name, array.astype(dtypes[name], copy=False)))
    if missing:
        raise FormatError(where, "a Keras 3 LossScaleOptimizer needs %s, which the state does not hold"
                          % ", ".join(missing))
    return out


def _keras2_config(model, where):
    if model is None or not isinstance(model.config, dict):
        raise FormatError(where, "writing a .keras archive needs the source's model config; the source (%s) has none"
                          % (model.source_format if model else "no model"))
    return km.keras2_archive_model_config(model.config, model.source_path or where, model.keras_version)


def _keras3_config(model, where):
    if model is None or not isinstance(model.config, dict):
        raise FormatError(where, "writing a .keras archive needs the source's model config; the source (%s) has none"
                          % (model.source_format if model else "no model"))
    return km.keras3_model_config(model.config, model.source_path or where, model.keras_version)


class _NoDataset:
    def __init__(self, name):
        self.name = "(hint) " + name


FORMAT = KerasArchiveFormat()
WEIGHTS_FORMAT = KerasWeightsFormat()
