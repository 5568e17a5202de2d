"""Keras 2 models rebuilt by Keras 3 itself: the Keras 3 config, weight layout and trainable order.

A Keras 2 model config (`.h5`, SavedModel metadata, tf_keras `.keras`) is translated to the
form Keras 3's own legacy loader takes, generically: every layer class must be a Keras 3
built-in layer, and a Keras 2 config key its Keras 3 class does not accept is dropped when
its value is the Keras 2 default (or has no effect, like the build shapes Keras 2 records),
and refused, naming the layer, key and value, when dropping it would change the model. The
per-version differences are data (`DROPPED_AT_DEFAULT`, `BUILD_SHAPE_KEYS`, `VALUE_FIXES`,
`RENAMED_WEIGHTS`) or one named rule each: Keras 2 numbers a nested model's calls from 1 and
writes tensors passed as call keywords as `[layer, node, tensor]` lists.

Keras 3 then builds the model (`safe_mode`, inside a `StatelessScope`, so no variable is
allocated): its config is what Keras 3 serializes, its weight layout in `model.weights.h5`
is recorded by driving Keras 3's own `saving_lib` walk with a store that keeps paths, not
values, and its TF-checkpoint layout is the model's trackable children. Each Keras 3
variable is mapped to the Keras 2 source weight it comes from, per layer: by name (with
Keras 3's renames), else by where both saving walks put it (`.keras` sources), else in the
layer's weight order as Keras 3's own legacy `.h5` loader does; shapes are always checked.
The optimizer's variables follow the rebuilt model's `trainable_variables`.

Nothing from the file executes: Lambda layers, Keras 3 layers that wrap foreign code
(`TFSMLayer`, `TorchModuleWrapper`, `JaxLayer`, `FlaxLayer`) and classes Keras 3 does not
ship are refused before anything is deserialized. keras>=3 is needed only here.
"""

import contextlib
import copy
import dataclasses
import inspect
import os
import warnings
from typing import Any, List, Optional

from ..errors import FormatError
from .keras_model import MODEL_CLASSES, UntranslatableModelError, bare, is_keras3_config

# Keras 2 config keys Keras 3 dropped, with the Keras 2 default value that makes dropping them exact:
# (Keras 3 class or "*", key) -> default.
DROPPED_AT_DEFAULT = {
    ("DepthwiseConv2D", "groups"): 1,  # Keras 2 inherited it from Conv2D; a depthwise conv has one group
    ("MultiHeadAttention", "softmax_robust_masking"): False,  # tf_keras 2.14+
    ("BatchNormalization", "renorm"): False,
    ("BatchNormalization", "renorm_clipping"): None,
    ("BatchNormalization", "renorm_momentum"): 0.99,
    ("BatchNormalization", "fused"): None,
    ("BatchNormalization", "virtual_batch_size"): None,
    ("BatchNormalization", "adjustment"): None,
    ("*", "autocast"): True,
}
# Keys Keras 2 records but that only restate what the graph gives (dropped whatever their value):
# MultiHeadAttention's build shapes (Keras 3 builds it from the tensors it is called on), Embedding's
# input_length (the input shape comes from the InputLayer).
BUILD_SHAPE_KEYS = {("MultiHeadAttention", "query_shape"), ("MultiHeadAttention", "key_shape"),
                    ("MultiHeadAttention", "value_shape"), ("Embedding", "input_length")}
# Keys every Keras 3 layer takes through **kwargs (Layer.__init__ and the legacy loader handle them).
LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size"}
# Keras 3 layers that run code or load files not in the config: never rebuilt from a file.
UNSAFE_LAYERS = ("Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer")
# Keras 2 layers that wrap TensorFlow ops (serialized as Python callables): no Keras 3 form.
KERAS2_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")


def _policy_name(value):
    """Keras 2 `{"class_name": "Policy", "config": {"name": "mixed_float16"}}` -> "mixed_float16"."""
    if isinstance(value, dict) and bare(value.get("class_name")) in ("Policy", "DTypePolicy"):
        return (value.get("config") or {}).get("name", "float32")
    return value


# Keras 2 values Keras 3 spells differently: key -> function(value) -> Keras 3 value.
VALUE_FIXES = {"dtype": _policy_name}

# The tag Keras 2.12-2.15 `.keras` configs give a numpy value (ReLU's `negative_slope` of 0.0 is
# {"class_name": "__numpy__", "config": {"value": 0.0, "dtype": "float32"}}); Keras 3's legacy loader
# passes the dict on as the value, so it is replaced by the plain value it tags.
NUMPY_TAG = "__numpy__"


def _untag_numpy(value):
    if isinstance(value, dict):
        if value.get("class_name") == NUMPY_TAG and isinstance(value.get("config"), dict):
            return value["config"].get("value")
        return {k: _untag_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag_numpy(v) for v in value]
    return value

# Variables Keras 3 renamed: (Keras 3 class, Keras 2 weight name) -> Keras 3 weight name.
RENAMED_WEIGHTS = {("DepthwiseConv2D", "depthwise_kernel"): "kernel"}


def import_keras3(where):
    """The Keras 3 package, or a FormatError saying it is needed."""
    from .._tensorflow import import_tensorflow
    try:
        import_tensorflow()  # quietly: Keras 3's TensorFlow backend imports it
    except ImportError:
        pass  # Keras 3 on another backend
    try:
        import keras
    except ImportError as e:
        raise FormatError(where, "rebuilding the model in Keras 3 needs keras>=3, which is not importable (%s); "
                                 "install keras>=3" % e) from e
    if not str(getattr(keras, "__version__", "0")).startswith("3"):
        raise FormatError(where, "rebuilding the model in Keras 3 needs keras>=3, found keras %s; install keras>=3"
                          % getattr(keras, "__version__", "?"))
    return keras


def _layer_class(keras, class_name):
    if class_name in MODEL_CLASSES:
        return None
    cls = getattr(keras.layers, class_name, None)
    return cls if inspect.isclass(cls) else None


def _accepted(cls):
    names = set(LAYER_KWARGS)
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    names.discard("self")
    return names


def _layer_name(layer):
    return layer.get("name") or (layer.get("config") or {}).get("name")


def check_rebuildable(model_config, where):
    """Refuse, before anything is deserialized, layers Keras 3 would have to run code for or cannot find."""
    keras = import_keras3(where)
    for layer in list(_walk_layers(model_config, where)) + _wrapped_layers(model_config):
        class_name = str(layer.get("class_name") or "")
        name = _layer_name(layer)
        if class_name in UNSAFE_LAYERS or class_name in KERAS2_OP_LAYERS:
            raise UntranslatableModelError(where, "layer %r is a %s, whose function is Python code stored in the file; "
                                                  "it is never run, so the model cannot be rebuilt in Keras 3"
                                           % (name, class_name))
        if class_name not in MODEL_CLASSES and _layer_class(keras, class_name) is None:
            raise UntranslatableModelError(where, "layer %r is of class %s, which is not a Keras 3 built-in layer (a "
                                                  "custom class is never loaded from a file)"
                                           % (name, class_name))


def _wrapped_layers(value, inside=False):
    """Layer configs held inside other layers' configs (`TimeDistributed`'s and `Bidirectional`'s
    `layer` / `backward_layer`, RNN cells), and any serialized Python function (`__lambda__`), anywhere."""
    out = []
    if isinstance(value, dict):
        if inside and "class_name" in value and isinstance(value.get("config"), dict):
            out.append(value)
        elif value.get("class_name") == "__lambda__":
            out.append({"class_name": "Lambda", "name": "(a serialized Python function)", "config": {}})
        for key, item in value.items():
            out.extend(_wrapped_layers(item, inside=key in ("layer", "backward_layer", "cell", "cells")))
    elif isinstance(value, list):
        for item in value:
            out.extend(_wrapped_layers(item, inside))
    return out


def _walk_layers(model_config, where):
    config = model_config.get("config") if isinstance(model_config, dict) else None
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        raise FormatError(where, "the model config has no list of layers (class %s)"
                          % (model_config.get("class_name") if isinstance(model_config, dict) else None))
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise FormatError(where, "a layer in the model config is not a JSON object with a config")
        yield layer
        if bare(layer.get("class_name")) in MODEL_CLASSES:
            yield from _walk_layers(layer, where)


def translate_keras2_config(model_config, where):
    """(the Keras 2 model config in the form Keras 3's legacy loader takes, [(layer, key, why) dropped]).

    Works on a copy. `module` / `registered_name` tags (tf_keras `.keras` files write them) are
    removed so Keras 3 reads the config as the Keras 2 config it is.
    """
    keras = import_keras3(where)
    check_rebuildable(model_config, where)
    config = copy.deepcopy(model_config)
    dropped = []
    _strip_tags(config)
    for owner in _functional_configs(config):
        _renumber_nested_model_nodes(owner, where)
    for layer in _walk_layers(config, where):
        class_name = bare(layer.get("class_name"))
        cls = _layer_class(keras, class_name)
        if cls is None:
            continue
        accepted = _accepted(cls)
        cfg = layer["config"]
        name = _layer_name(layer)
        for key in list(cfg):
            cfg[key] = _untag_numpy(cfg[key])
            if key in VALUE_FIXES:
                cfg[key] = VALUE_FIXES[key](cfg[key])
            if key in accepted:
                continue
            value = cfg[key]
            if (class_name, key) in BUILD_SHAPE_KEYS:
                dropped.append((name, key, "%s %s=%s: a build shape, Keras 3 takes it from the graph"
                                % (class_name, key, value)))
            else:
                default = next((DROPPED_AT_DEFAULT[k] for k in ((class_name, key), ("*", key))
                                if k in DROPPED_AT_DEFAULT), _NO_DEFAULT)
                if default is _NO_DEFAULT or value != default:
                    raise UntranslatableModelError(
                        where, "layer %r (%s): Keras 3's %s has no %r, and %s=%r %s"
                        % (name, class_name, class_name, key, key, value,
                           "is not known to be its Keras 2 default" if default is _NO_DEFAULT
                           else "differs from the Keras 2 default %r, so dropping it would change the model" % default))
                dropped.append((name, key, "%s %s=%r: the Keras 2 default, Keras 3 has no such key"
                                % (class_name, key, value)))
            del cfg[key]
        _tensor_kwargs_to_keras3(layer, config, where)
        axis = cfg.get("axis")
        if class_name == "BatchNormalization" and isinstance(axis, list) and len(axis) != 1:
            raise UntranslatableModelError(where, "layer %r: BatchNormalization over the axes %s has no Keras 3 form "
                                                  "(Keras 3 normalizes over one axis)" % (name, axis))
    return config, dropped


_NO_DEFAULT = object()


def _tensor_kwargs_to_keras3(layer, model_config, where):
    """Keras 2 writes a tensor passed as a call keyword (MultiHeadAttention's `value`) as a
    `[layer, node, tensor]` list in the node's kwargs; Keras 3's legacy loader would pass the list
    itself. Such nodes are rewritten in Keras 3's node form, where the tensor is a reference Keras 3
    resolves to the inbound layer's output (the placeholder shape is never used)."""
    names = set()
    for owner in _functional_configs(model_config):
        names |= {_layer_name(l) for l in (owner.get("config") or {}).get("layers") or [] if isinstance(l, dict)}

    def ref(value):
        return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and value[0] in names
                and all(isinstance(v, int) for v in value[1:]))

    def tensor(value):
        return {"class_name": "__keras_tensor__", "config": {"shape": [], "dtype": "float32",
                                                               "keras_history": list(value)}}

    def convert(value):
        if ref(value):
            return tensor(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    nodes = layer.get("inbound_nodes")
    if not isinstance(nodes, list):
        return
    for n, node in enumerate(nodes):
        if not isinstance(node, list) or not node or not all(isinstance(e, list) and len(e) in (3, 4) for e in node):
            continue
        kwargs = [e[3] for e in node if len(e) == 4 and e[3]]
        if not kwargs or not any(convert(k) != k for k in kwargs):
            continue
        inputs = [tensor(e[:3]) for e in node]
        nodes[n] = {"args": [inputs[0] if len(inputs) == 1 else inputs], "kwargs": convert(kwargs[0])}


def _renumber_nested_model_nodes(model_config, where):
    """Keras 2 leaves out of the config the node a model built on an `Input` makes of itself and
    counts its calls from 1 (tf_keras `_should_skip_first_node`); Keras 3 counts them from 0. The
    references to such a nested model's outputs are shifted down by one."""
    config = model_config.get("config") or {}
    skip = set()
    for layer in config.get("layers") or []:
        inner = ((layer.get("config") or {}).get("layers") or []) if isinstance(layer, dict) else []
        if bare(layer.get("class_name")) in MODEL_CLASSES and inner and isinstance(inner[0], dict) \
                and bare(inner[0].get("class_name")) == "InputLayer":
            skip.add(_layer_name(layer))
    if not skip:
        return

    def shift(ref):
        if isinstance(ref, list) and len(ref) in (3, 4) and isinstance(ref[0], str) and isinstance(ref[1], int):
            if ref[0] in skip:
                if ref[1] < 1:
                    raise FormatError(where, "a reference to the nested model %r names node %d, which Keras 2 "
                                             "never writes" % (ref[0], ref[1]))
                ref = [ref[0], ref[1] - 1] + list(ref[2:])
            return ref[:3] + [shift(v) for v in ref[3:]]
        if isinstance(ref, list):
            return [shift(v) for v in ref]
        if isinstance(ref, dict):
            return {k: shift(v) for k, v in ref.items()}
        return ref
    for layer in config.get("layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("inbound_nodes"), list):
            layer["inbound_nodes"] = [shift(node) for node in layer["inbound_nodes"]]
    for key in ("input_layers", "output_layers"):
        if isinstance(config.get(key), list):
            config[key] = shift(config[key])


def _functional_configs(model_config):
    yield model_config
    for layer in (model_config.get("config") or {}).get("layers") or []:
        if isinstance(layer, dict) and bare(layer.get("class_name")) in MODEL_CLASSES:
            yield from _functional_configs(layer)


def _strip_tags(layer_or_model):
    for key in ("module", "registered_name"):
        layer_or_model.pop(key, None)
    if bare(layer_or_model.get("class_name")) == "Model":
        layer_or_model["class_name"] = "Functional"
    for layer in ((layer_or_model.get("config") or {}).get("layers") or []):
        if isinstance(layer, dict):
            layer.pop("build_config", None)
            _strip_tags(layer)


# -- the built model -------------------------------------------------------------------------

@dataclasses.dataclass
class Keras3Variable:
    """One Keras 3 model variable: where Keras 3 keeps it and which source weight it holds."""

    path: str  # Keras 3's variable.path (`dense/kernel`, `inner/s1/kernel`)
    shape: tuple
    dtype: str
    trainable: bool
    group: str  # its `vars` group in model.weights.h5 (`layers/dense`); "" for the model's own
    key: str  # its dataset in that group ("0", "1", ...)
    layer: str  # the top-level layer holding it (in `model.layers`)
    checkpoint_path: Optional[str] = None  # its object path under the model in a tf.train.Checkpoint
    source: Optional[int] = None  # index of the source payload weight it takes its value from
    how: str = ""


@dataclasses.dataclass
class Keras3Model:
    config: dict  # what Keras 3 serializes (`.keras` config.json, before compile_config)
    name: str
    groups: List[tuple]  # [(group path, metadata or None)] in the order Keras 3 makes them
    variables: List[Keras3Variable]  # in the order Keras 3 writes them
    trainable: List[int]  # indices into `variables`, in `model.trainable_variables` order
    dropped: List[str] = dataclasses.field(default_factory=list)
    layer_weights: Any = None  # {top-level layer name: [indices into variables] in legacy weight order}


def build(model_config, where, keras_version=None):
    """The Keras3Model of a Keras 2 or Keras 3 model config (Keras 3 builds it, nothing is allocated)."""
    keras = import_keras3(where)
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.saving import serialization_lib
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise FormatError(where, "the model config is not a JSON object with a config")
    keras3 = is_keras3_config(model_config, keras_version)
    if keras3:
        check_rebuildable(model_config, where)
        config, dropped = copy.deepcopy(model_config), []
        config.pop("compile_config", None)  # the model only: no optimizer is built
    else:
        config, dropped = translate_keras2_config(model_config, where)
    try:
        # variables made in a StatelessScope stay uninitialized (no memory) unless the scope initializes
        # them on exit; the model is only walked, never run or read
        with _quiet(), StatelessScope(initialize_variables=False), serialization_lib.SafeModeScope(True):
            if keras3:
                model = serialization_lib.deserialize_keras_object(config, safe_mode=True)
            else:
                from keras.src.legacy.saving import saving_utils
                model = saving_utils.model_from_config(config)
            serialized = serialization_lib.serialize_keras_object(model)
            out = _layout(keras, model, where)
    except FormatError:
        raise
    except Exception as e:  # Keras raises ValueError / TypeError / KeyError for configs it cannot rebuild
        text = (str(e).strip().splitlines() or [type(e).__name__])[-1][:400]
        raise UntranslatableModelError(where, "Keras 3 cannot rebuild the model from its config (%s: %s)"
                                       % (type(e).__name__, text)) from e
    serialized.pop("compile_config", None)
    out.config, out.dropped = serialized, dropped
    return out


@contextlib.contextmanager
def _quiet():
    """File descriptor 2 muted while Keras 3 builds the model: TensorFlow's C++ runtime logs its
    device set-up there (a CUDA probe on CPU machines) whatever its log level; Keras' Python
    warnings are about the model's code, not the user's file (KERAS_OPT_MIGRATE_DEBUG=1 shows both)."""
    if os.environ.get("KERAS_OPT_MIGRATE_DEBUG"):
        yield
        return
    from .._tensorflow import muted_stderr
    with muted_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _layout(keras, model, where):
    from keras.src.saving import saving_lib

    class RecordingStore(saving_lib.H5IOStore):
        """Keras 3's H5 store, recording which variable goes where instead of writing it."""

        def __init__(self):  # no file: nothing of H5IOStore's own state is used
            self.groups, self.items, self.current = [], [], None

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.current = path
            self.groups.append((path, dict(metadata) if metadata else None))
            return self

        def __setitem__(self, key, value):
            self.items.append((self.current, str(key), value))

    store = RecordingStore()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    ckpt_paths = _checkpoint_paths(model)
    top = {}
    for layer in model.layers:
        for v in _legacy_weights(layer):
            top.setdefault(id(v), layer.name)
    variables, by_id = [], {}
    for group, key, v in store.items:
        if id(v) in by_id:
            raise FormatError(where, "Keras 3 saves variable %s twice" % v.path)
        by_id[id(v)] = len(variables)
        variables.append(Keras3Variable(str(v.path), tuple(int(d) for d in v.shape), str(v.dtype), bool(v.trainable),
                                        group, key, top.get(id(v), ""), ckpt_paths.get(id(v))))
    missing = [v.path for v in model.weights if id(v) not in by_id]
    if missing:
        raise FormatError(where, "Keras 3's saving walk does not reach the variables %s" % missing[:3])
    trainable = [by_id[id(v)] for v in model.trainable_variables]
    layer_weights = {layer.name: [by_id[id(v)] for v in _legacy_weights(layer)] for layer in model.layers}
    return Keras3Model(None, model.name, store.groups, variables, trainable, layer_weights=layer_weights)


def _legacy_weights(layer):
    """A layer's weights in the order Keras' `.h5` files list them: trainable, then non-trainable."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _checkpoint_paths(model):
    """{id(variable): its shortest object path under the model}, as `tf.train.Checkpoint` names it.

    The paths are the model's own trackable children (TensorFlow's object graph), walked breadth
    first as TensorFlow does when it names checkpoint keys.
    """
    from keras import Variable as KerasVariable
    paths, seen, frontier = {}, {id(model)}, [(model, "")]
    while frontier:
        nxt = []
        for obj, prefix in frontier:
            try:
                children = obj._trackable_children(save_type="checkpoint")
            except Exception:  # noqa: BLE001 - an object TensorFlow cannot walk holds no model variable
                continue
            for name, child in children.items():
                path = "%s/%s" % (prefix, name) if prefix else name
                if isinstance(child, KerasVariable):
                    paths.setdefault(id(child), path)
                    continue
                if id(child) in seen:
                    continue
                seen.add(id(child))
                nxt.append((child, path))
        frontier = nxt
    return paths


# -- which source weight each Keras 3 variable holds -------------------------------------------

def _strip(name):
    head, sep, tail = str(name).rpartition(":")
    return head if sep and tail.isdigit() else str(name)


def match_source(k3, payload, where):
    """Set `source` of every Keras 3 variable to the payload weight it comes from.

    Per top-level layer (the payload's `extra["layers"]`, matched by name): the counts must agree;
    then each Keras 3 variable is paired with the source weight of the same name (after Keras 3's
    renames: `depthwise_kernel` -> `kernel`; nested models' paths are matched by their tail), and
    where names do not pair every weight, in the layer's weight order (trainable first), which is
    how Keras 3's own loader reads Keras 2 `.h5` files. Every pair's shapes must be equal.
    """
    layers = (payload.extra or {}).get("layers")
    if layers is None:
        raise FormatError(where, "the source model (%s) has no per-layer weight list" % payload.source_format)
    start, source_layers, layer_entries = 0, {}, {}
    for layer in layers:
        n = len(layer["weights"])
        source_layers[layer["name"]] = list(range(start, start + n))
        layer_entries[layer["name"]] = (start, layer)
        start += n
    if start != len(payload.weights):
        raise FormatError(where, "the source's layers list %d weights, it holds %d" % (start, len(payload.weights)))
    classes = _owner_classes(k3)
    problems = []
    for layer_name, indices in k3.layer_weights.items():
        src = source_layers.pop(layer_name, [])
        if len(src) != len(indices):
            problems.append("layer %r: Keras 3 builds %d weights (%s), the source holds %d (%s)"
                            % (layer_name, len(indices), ", ".join(k3.variables[i].path for i in indices[:4]),
                               len(src), ", ".join(_strip(payload.weights[j][0]) for j in src[:4])))
            continue
        pairs = _pair_by_name(k3, indices, src, payload, classes)
        how = "by name"
        if pairs is None and src:
            pairs, how = _pair_by_save_path(k3, layer_name, indices, src, layer_entries[layer_name]), "by saving path"
        if pairs is None:
            pairs, how = list(zip(indices, src)), "by the layer's weight order"
        for i, j in pairs:
            var, shape = k3.variables[i], tuple(int(d) for d in getattr(payload.weights[j][1], "shape", ()))
            if var.shape != shape:
                problems.append("%s (Keras 3) has shape %s, its source weight %s (paired %s) has %s"
                                % (var.path, var.shape, _strip(payload.weights[j][0]), how, shape))
            var.source, var.how = j, how
    leftover = [name for name, idx in source_layers.items() if idx]
    if leftover:
        problems.append("the source's layer(s) %s hold weights, the Keras 3 model has no such layer"
                        % ", ".join(repr(n) for n in leftover[:5]))
    if problems:
        raise UntranslatableModelError(where, "%d problem(s) mapping the source weights to the Keras 3 model: %s"
                                       % (len(problems), "; ".join(problems[:3])))
    return k3


def _normal_save_path(path):
    """A path in a weights file below a layer's group, as both Keras versions' saving walks name it:
    Keras 2 names sub-layer groups by attribute (`_query_dense`), Keras 3 by property (`query_dense`)."""
    return "/".join(part.lstrip("_") for part in path.split("/"))


def _pair_by_save_path(k3, layer_name, indices, src, entry):
    """[(Keras 3 index, source index)] by where each weight sits below the layer's group in the source's
    weights file (a `.keras` archive records `save_paths`) and in Keras 3's, or None."""
    start, layer = entry
    paths = layer.get("save_paths")
    top = next((g for g, meta in k3.groups if meta and meta.get("name") == layer_name and g.count("/") == 1), None)
    if not paths or top is None:
        return None
    source = {_normal_save_path(p): start + k for k, p in enumerate(paths)}
    out = []
    for i in indices:
        var = k3.variables[i]
        if var.group != top and not var.group.startswith(top + "/"):
            return None
        below = var.group[len(top) + 1:]
        key = _normal_save_path("%s/vars/%s" % (below, var.key) if below else "vars/%s" % var.key)
        if key not in source:
            return None
        out.append((i, source.pop(key)))
    return out if not source else None


def _owner_classes(k3):
    """{variable path: the Keras 3 class of the layer owning it} from the Keras 3 config (renames need it)."""
    out = {}

    def walk(config, prefix):
        for layer in (config.get("config") or {}).get("layers") or []:
            name = (layer.get("config") or {}).get("name") or layer.get("name")
            cls = bare(layer.get("class_name"))
            out["%s%s" % (prefix, name)] = cls
            if cls in MODEL_CLASSES:
                walk(layer, "%s%s/" % (prefix, name))
    walk(k3.config, "")
    return out


def _pair_by_name(k3, indices, src, payload, classes):
    """[(Keras 3 index, source index)] when every name pairs exactly once, else None."""
    wanted = {}
    for i in indices:
        path = k3.variables[i].path
        owner, _, attr = path.rpartition("/")
        wanted[i] = (path, owner, attr, classes.get(owner))
    out, used = [], set()
    for i in indices:
        path, owner, attr, cls = wanted[i]
        hits = []
        for j in src:
            name = _strip(payload.weights[j][0])
            s_owner, _, s_attr = name.rpartition("/")
            s_attr = RENAMED_WEIGHTS.get((cls, s_attr), s_attr)
            candidate = "%s/%s" % (s_owner, s_attr) if s_owner else s_attr
            if candidate == path or path.endswith("/" + candidate):
                hits.append(j)
        if len(hits) != 1 or hits[0] in used:
            return None
        used.add(hits[0])
        out.append((i, hits[0]))
    return out


def trainable_sources(k3):
    """Source weight indices of `model.trainable_variables`, in Keras 3's order."""
    return [k3.variables[i].source for i in k3.trainable]


def order_state_variables(k3, payload, state, where):
    """`state.variables` in the Keras 3 model's `trainable_variables` order (the optimizer's build order).

    Each state variable is the source trainable weight of the same name; where names do not
    pair (or repeat), the state's order is the source's trainable order. The Keras 3 trainable
    set must be exactly the variables the state has slots for.
    """
    names = [v.name for v in state.variables]
    source_names = {j: _strip(payload.weights[j][0]) for j in range(len(payload.weights))}
    wanted = trainable_sources(k3)
    by_name = {n: v for n, v in zip(names, state.variables)} if len(set(names)) == len(names) else {}
    if by_name and all(source_names[j] in by_name for j in wanted) and len(wanted) == len(names):
        ordered = [by_name[source_names[j]] for j in wanted]
    else:
        flagged = [j for j, w in enumerate(payload.weights) if w[2]]
        if len(flagged) != len(names) or sorted(flagged) != sorted(wanted):
            raise FormatError(where, "the Keras 3 model trains %d variables (%s), the optimizer state has %d (%s); "
                                     "they cannot be paired" % (len(wanted), ", ".join(source_names[j] for j in wanted[:4]),
                                                                len(names), ", ".join(names[:4])))
        position = {j: k for k, j in enumerate(flagged)}
        ordered = [state.variables[position[j]] for j in wanted]
    for var, j in zip(ordered, wanted):
        shape = tuple(int(d) for d in getattr(payload.weights[j][1], "shape", ()))
        if tuple(var.shape) != shape:
            raise FormatError(where, "optimizer variable %s has shape %s, the Keras 3 variable it maps to %s"
                              % (var.name, tuple(var.shape), shape))
    return ordered


def for_payload(payload, where):
    """The Keras3Model of a source payload, with every variable mapped to its source weight (cached)."""
    cached = (payload.extra or {}).get("_keras3_model")
    if cached is not None:
        return cached
    if not isinstance(payload.config, dict):
        raise FormatError(where, "the source (%s) has no model config to rebuild in Keras 3" % payload.source_format)
    k3 = build(payload.config, payload.source_path or where, payload.keras_version)
    match_source(k3, payload, payload.source_path or where)
    payload.extra["_keras3_model"] = k3
    return k3


def report_items(k3, payload):
    """[(action, name, source, target, detail)] for a conversion report: the Keras 2 settings dropped,
    and each source weight Keras 3 keeps under another name or pairs other than by name."""
    out = [("dropped", "%s/%s" % (layer, key), None, None, why) for layer, key, why in k3.dropped]
    for var in k3.variables:
        source = _strip(payload.weights[var.source][0])
        if source != var.path or var.how != "by name":
            out.append(("mapped", var.path, source, var.path, "model weight, paired %s%s"
                        % (var.how, "" if var.trainable else "; non-trainable")))
    return out
