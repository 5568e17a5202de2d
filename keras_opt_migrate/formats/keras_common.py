"""What the Keras HDF5 and `.keras` readers share: safe HDF5 access, the optimizer's
serialized config, and the model's trainable variables from its serialized config.

Nothing here deserializes a Keras object: configs are read as plain JSON data.
"""

import contextlib
import dataclasses
import json
import re
from typing import Any, Dict, List, Optional

import h5py
import numpy as np

from ..errors import FormatError, MappingError, UnknownOptimizerError
from ..optimizers.registry import get_spec, spec_for_class
from ..schema import LazyTensor
from .base import check_h5_storage, check_hdf5_metadata
from .mapping import canonical_config

# -- HDF5 ------------------------------------------------------------------------------


def h5_node(root, path, where, kind=None):
    """The object at `path` below `root`, following hard links only.

    A missing node, a soft or external link, or a node of the wrong kind (`h5py.Group` /
    `h5py.Dataset`) is a FormatError naming `where` (the file).
    """
    node = root
    done = []
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, h5py.Group):
            raise FormatError(where, "%s is not a group" % "/".join(done))
        link = node.get(part, getlink=True)
        done.append(part)
        if link is None:
            raise FormatError(where, "missing %s" % "/".join(done))
        if not isinstance(link, h5py.HardLink):
            raise FormatError(where, "%s is a %s, not a stored object; refusing to follow it"
                              % ("/".join(done), type(link).__name__))
        node = node[part]
    if kind is not None and not isinstance(node, kind):
        raise FormatError(where, "%s is not a %s" % (path, "dataset" if kind is h5py.Dataset else "group"))
    if isinstance(node, h5py.Dataset):
        check_h5_storage(node, where)
    return node


def h5_has(root, path):
    """True when `path` exists below `root` through hard links.

    A soft or external link on the way is a MappingError (the readers report it naming the
    file): a Keras file never holds links, and following one could read another file.
    """
    node = root
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, h5py.Group):
            return False
        link = node.get(part, getlink=True)
        if link is None:
            return False
        if not isinstance(link, h5py.HardLink):
            raise MappingError("%s/%s is a %s, not a stored object; refusing to follow it"
                               % (node.name.rstrip("/"), part, type(link).__name__))
        node = node[part]
    return True


def _text(value):
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def str_list_attr(obj, name, where):
    """A list-of-strings attribute as Keras writes it (chunked `name0`, `name1`, ... when large)."""
    if name in obj.attrs:
        chunks = [obj.attrs[name]]
    else:
        chunks, i = [], 0
        while "%s%d" % (name, i) in obj.attrs:
            chunks.append(obj.attrs["%s%d" % (name, i)])
            i += 1
        if not chunks:
            raise FormatError(where, "%s has no attribute %r" % (obj.name, name))
    out = []
    for chunk in chunks:
        values = np.asarray(chunk)
        if values.dtype.kind not in "OSU" and values.size:
            raise FormatError(where, "attribute %s of %s is not a list of strings" % (name, obj.name))
        out.extend(_text(v) for v in values.reshape(-1))
    return out


def json_attr(obj, name, where, required=True):
    """A JSON-valued attribute decoded to Python data (None when absent and not required)."""
    if name not in obj.attrs:
        if required:
            raise FormatError(where, "missing attribute %r" % name)
        return None
    try:
        return json.loads(_text(obj.attrs[name]))
    except ValueError as e:
        raise FormatError(where, "attribute %r is not valid JSON (%s)" % (name, e)) from e


def lazy_dataset(ds, opener, where, label):
    """A LazyTensor for dataset `ds`; `opener()` is a context manager yielding the h5py.File again.

    An opener with a `small()` method uses it for scalars (the `.keras` reader checks the whole
    member's CRC before the first larger tensor, not to show a step counter).
    """
    name = ds.name
    open_again = opener.small if ds.size <= 1 and hasattr(opener, "small") else opener

    def load():
        try:
            with open_again() as f:
                return np.asarray(h5_node(f, name, where, h5py.Dataset)[()])
        except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py: RuntimeError on corrupt metadata
            if isinstance(e, FormatError):
                raise
            raise FormatError(where, "cannot read %s (%s)" % (name, e)) from e
    if ds.dtype.kind not in "biuf":
        raise FormatError(where, "%s holds %s data, not numbers" % (name, ds.dtype))
    check_h5_storage(ds, where)
    return LazyTensor(ds.shape, ds.dtype, load, origin="%s:%s" % (where, label))


@contextlib.contextmanager
def open_h5(path):
    check_hdf5_metadata(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FormatError(path, "not a readable HDF5 file (%s)" % str(e).splitlines()[0]) from e
    with f:
        yield f


# -- the optimizer's serialized config ---------------------------------------------------

LSO_CLASSES = ("LossScaleOptimizer", "LossScaleOptimizerV3")


@dataclasses.dataclass
class OptimizerInfo:
    """An optimizer resolved from its serialized config (inner optimizer for a loss-scale wrapper).

    wrapper: None, or the wrapper's class name (`LossScaleOptimizer`, `LossScaleOptimizerV3`).
    """

    spec: Any
    generation: str
    class_name: str
    config: Dict[str, Any]
    wrapper: Optional[str] = None
    wrapper_config: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _bare(class_name):
    return str(class_name or "").split(">")[-1]


def keras_major(version):
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def generation_of(entry, keras_version):
    """Generation of a serialized (non-wrapper) optimizer: keras3, experimental, v2 or v1.

    Keras 3 files say so by version. In Keras 2, the 2.11+ optimizers serialize with a
    `Custom>` class name (h5) or a non-legacy `module` (.keras) and `is_legacy_optimizer:
    false`; v1 (`optimizer_v1`) configs have `lr` and no `name`; the rest is OptimizerV2.
    """
    if keras_major(keras_version) == 3:
        return "keras3"
    config = entry.get("config") or {}
    module = str(entry.get("module") or "")
    if "legacy" in module or "tensorflow_addons" in module or str(entry.get("class_name", "")).startswith("Addons>"):
        return "v2"
    if config.get("is_legacy_optimizer") is False or str(entry.get("class_name", "")).startswith("Custom>"):
        return "experimental"
    if config.get("is_legacy_optimizer") is True:
        return "v2"
    if "name" not in config and "lr" in config:
        return "v1"
    if module.startswith(("keras.optimizers", "tf_keras.optimizers", "keras.src.optimizers",
                          "tensorflow_recommenders")):
        return "experimental"
    return "v2"


def resolve_optimizer(entry, keras_version, where, hint=None, hint_config=None):
    """OptimizerInfo for a serialized optimizer `{"class_name", "config", "module"?}`.

    hint: an algorithm name the user passed; it must agree with the file when the file names one.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
        raise FormatError(where, "the optimizer config is not a JSON object with class_name and config")
    class_name = str(entry.get("class_name") or "")
    wrapper, wrapper_config = None, {}
    if _bare(class_name) in LSO_CLASSES:
        wrapper, wrapper_config = _bare(class_name), dict(entry.get("config") or {})
        entry = wrapper_config.get("inner_optimizer")
        if not isinstance(entry, dict):
            raise FormatError(where, "%s config without an inner_optimizer" % class_name)
        wrapper_config = {k: v for k, v in wrapper_config.items() if k != "inner_optimizer"}
        class_name = str(entry.get("class_name") or "")
    generation = generation_of(entry, keras_version)
    if wrapper == "LossScaleOptimizerV3":
        generation = "experimental"
    spec = spec_for_class(class_name, generation)
    if hint:
        hinted = get_spec(hint)
        if spec is not None and spec.name != hinted.name:
            raise MappingError("%s: the file holds a %s optimizer but optimizer=%r was passed"
                               % (where, class_name, hint))
        spec = hinted
    if spec is None:
        raise UnknownOptimizerError(
            "%s: no %s optimizer %r is known; pass optimizer=<algorithm> (CLI --optimizer) if it keeps "
            "the state of a known one" % (where, generation, class_name))
    config = canonical_config(entry.get("config"))
    config.update(hint_config or {})
    return OptimizerInfo(spec, generation, _bare(class_name), config, wrapper, wrapper_config)


def info_from_hint(hint, generation, hint_config, where):
    """OptimizerInfo when the file holds no optimizer config (e.g. `.weights.h5`)."""
    if not hint:
        raise MappingError("%s: the file does not say which optimizer wrote its state; pass "
                           "optimizer=<algorithm> (CLI --optimizer), e.g. optimizer='adam'" % where)
    spec = get_spec(hint)
    return OptimizerInfo(spec, generation, spec.name, canonical_config(hint_config))


# -- the model's trainable variables, from its serialized config ------------------------

# Weights a layer creates, in creation order, as (name, trainable, condition on its config).
# Only layers listed here have certain names; others are assumed to be fully trainable.
_WEIGHTS = {
    "Dense": [("kernel", True, None), ("bias", True, "use_bias")],
    "Embedding": [("embeddings", True, None)],
    "BatchNormalization": [("gamma", True, "scale"), ("beta", True, "center"),
                           ("moving_mean", False, None), ("moving_variance", False, None)],
    "LayerNormalization": [("gamma", True, "scale"), ("beta", True, "center")],
    # adapt()'s statistics, never trained (EfficientNet's input normalization)
    "Normalization": [("mean", False, None), ("variance", False, None), ("count", False, None)],
    "DepthwiseConv2D": [("depthwise_kernel", True, None), ("bias", True, "use_bias")],
    "SeparableConv1D": [("depthwise_kernel", True, None), ("pointwise_kernel", True, None), ("bias", True, "use_bias")],
    "SeparableConv2D": [("depthwise_kernel", True, None), ("pointwise_kernel", True, None), ("bias", True, "use_bias")],
}
for _conv in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
    _WEIGHTS[_conv] = _WEIGHTS["Dense"]
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def known_weights(class_name, config):
    """[(weight name, trainable)] for a layer class Keras ships, or None when unknown."""
    table = _WEIGHTS.get(_bare(class_name))
    if table is None:
        return None
    return [(name, trainable) for name, trainable, cond in table if cond is None or config.get(cond, True)]


@dataclasses.dataclass
class LayerInfo:
    name: str
    class_name: str
    config: Dict[str, Any]
    trainable: bool
    layers: Optional[List["LayerInfo"]] = None  # sub-layers of a nested model


def model_layers(model_config, where):
    """The layers of a serialized Functional / Sequential model, in `model.layers` order."""
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise FormatError(where, "the model config is not a JSON object with a config")
    config = model_config["config"]
    layers = config.get("layers")
    if not isinstance(layers, list):
        raise FormatError(where, "the model config has no list of layers (class %s)"
                          % model_config.get("class_name"))
    out = []
    outer_trainable = config.get("trainable", True) is not False
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise FormatError(where, "a layer in the model config is not a JSON object with a config")
        cfg = layer["config"]
        name = str(layer.get("name") or cfg.get("name") or "")
        info = LayerInfo(name, str(layer.get("class_name") or ""), cfg,
                         outer_trainable and cfg.get("trainable", True) is not False)
        if _bare(info.class_name) in MODEL_CLASSES and isinstance(cfg.get("layers"), list):
            info.layers = model_layers(layer, where)
            if not info.trainable:
                for sub in _walk(info.layers):
                    sub.trainable = False
        out.append(info)
    return out


def _walk(layers):
    for layer in layers:
        yield layer
        if layer.layers:
            yield from _walk(layer.layers)


def to_snake_case(name):
    """Keras' `to_snake_case`, used to name layer groups in `.keras` weights files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name if not name.startswith("_") else "private" + name


def check_hint_variables(variables, hint, where):
    """The user's `variables=` hint replaces what the file says, if the shapes agree."""
    if hint is None:
        return variables
    if [tuple(v.shape) for v in hint] != [tuple(v.shape) for v in variables]:
        raise MappingError(
            "%s: variables=... gives shapes %s, the file's trainable variables have %s"
            % (where, [tuple(v.shape) for v in hint], [tuple(v.shape) for v in variables]))
    return list(hint)


def accumulation_iterations(state):
    """Keras 3 with `gradient_accumulation_steps`: the stored counter counts batches.

    `optimizer.iterations` (applied updates) is the counter floor-divided by the steps; that
    is what `state.iterations` holds, the stored counter stays in `extra`.
    """
    steps = state.config.get("gradient_accumulation_steps")
    if state.generation != "keras3" or not steps or state.iterations is None:
        return state
    state.extra["gradient_accumulation_iterations"] = np.asarray(state.iterations, dtype=np.int64)
    keys = state.source.setdefault("keys", {})
    if "iterations" in keys:
        keys["extra/gradient_accumulation_iterations"] = keys["iterations"]
    state.iterations = int(state.iterations) // int(steps)
    return state


# -- writing: the optimizer's config and its positional list -------------------------------

SCHEDULES_MODULE = {"keras3": "keras.optimizers.schedules"}


def class_name_for(state):
    """The class name the target generation gives the algorithm (`Adam`, `SGD`, ...)."""
    spec = get_spec(state.optimizer)
    names = spec.class_names.get(state.generation) or ()
    if not names:
        raise UnknownOptimizerError("the %s generation has no %s class to write" % (state.generation, spec.name))
    return _bare(names[0])


def _schedule_entry(value, generation):
    if not (isinstance(value, dict) and "class_name" in value):
        return value
    out = {"class_name": _bare(value["class_name"]), "config": dict(value.get("config") or {})}
    if generation == "keras3":
        if out["config"].get("name") is None:  # Keras 3 opens a name scope with it: None is refused
            out["config"].pop("name", None)
        out = {"module": SCHEDULES_MODULE["keras3"], **out, "registered_name": None}
    return out


def optimizer_entry(state):
    """The serialized optimizer a Keras of `state.generation` writes for this state.

    v1: `{"class_name": "Adam", "config": {"lr": ...}}`; v2: `{"class_name": "Adam",
    "config": {"name": "Adam", ...}}`; 2.11+: `"Custom>Adam"` with `is_legacy_optimizer:
    false` (LAYOUTS.md §2.3); Keras 3: `{"module": "keras.optimizers", ...}`.
    """
    from ..optimizers.registry import keras3_prefix
    cls = class_name_for(state)
    config = {k: _schedule_entry(v, state.generation) for k, v in state.config.items()}
    name = config.pop("name", None)
    if state.generation == "v1":
        config.pop("is_legacy_optimizer", None)
        if "learning_rate" in config:
            config["lr"] = config.pop("learning_rate")
        return {"class_name": cls, "config": config}
    if state.generation == "v2":
        return {"class_name": cls, "config": {"name": name or cls, **config}}
    if state.generation == "experimental":
        config["is_legacy_optimizer"] = False
        return {"class_name": "Custom>" + cls, "config": {"name": name or cls, **config}}
    if state.generation == "keras3":
        if name in (None, cls):
            name = keras3_prefix(cls)
        return {"module": "keras.optimizers", "class_name": cls, "config": {"name": name, **config},
                "registered_name": None}
    raise UnknownOptimizerError("no Keras file holds %s optimizer state" % state.generation)


ARCHIVE_SCHEDULES_MODULE = "keras.optimizers.schedules"
# Loss-scale wrappers' config defaults (the same in tf_keras legacy, V3 and Keras 3).
LOSS_SCALE_DEFAULTS = {"initial_scale": 2.0 ** 15, "dynamic_growth_steps": 2000}
TF_KERAS_LSO_MODULE = "tf_keras.src.mixed_precision.loss_scale_optimizer"


def archive_optimizer_entry(state):
    """The serialized optimizer of a `.keras` config.json: Keras 3's, or tf_keras' for the 2.11+ generation.

    tf_keras looks classes up by module in `.keras` files: `{"module": "keras.optimizers",
    "class_name": "Adam", ..., "registered_name": None}`, schedules likewise (LAYOUTS §2.4),
    where its `.h5` files write `Custom>Adam`.
    """
    entry = optimizer_entry(state)
    if state.generation == "keras3":
        return entry
    if state.generation != "experimental":
        raise UnknownOptimizerError("a .keras archive holds keras3 or experimental optimizer state, not %s"
                                    % state.generation)
    config = {}
    for key, value in entry["config"].items():
        if isinstance(value, dict) and "class_name" in value:
            value = {"module": ARCHIVE_SCHEDULES_MODULE, "class_name": _bare(value["class_name"]),
                     "config": dict(value.get("config") or {}), "registered_name": None}
        config[key] = value
    return {"module": "keras.optimizers", "class_name": _bare(entry["class_name"]), "config": config,
            "registered_name": None}


def loss_scale_wrapper(state):
    """(class name, {initial_scale, dynamic_growth_steps}) of the state's loss-scale wrapper, or None.

    `migrate` records the target's wrapper in `source["wrapper"]`; readers record the file's.
    """
    wrapper = state.source.get("wrapper")
    name, config = (wrapper.get("class_name"), wrapper.get("config") or {}) if isinstance(wrapper, dict) \
        else (wrapper, {})
    if _bare(name) not in LSO_CLASSES:
        return None
    settings = dict(LOSS_SCALE_DEFAULTS, **{k: config[k] for k in LOSS_SCALE_DEFAULTS if k in config})
    return _bare(name), {"initial_scale": float(settings["initial_scale"]),
                         "dynamic_growth_steps": int(settings["dynamic_growth_steps"])}


def wrap_optimizer_entry(state, entry):
    """`entry` inside the loss-scale wrapper the state records, serialized as its generation's `.keras` does."""
    wrapper = loss_scale_wrapper(state)
    if wrapper is None:
        return entry
    _, settings = wrapper
    if state.generation == "keras3":
        return {"module": "keras.optimizers", "class_name": "LossScaleOptimizer",
                "config": {"name": "loss_scale_optimizer", "inner_optimizer": entry, **settings},
                "registered_name": None}
    if state.generation == "experimental":
        return {"module": TF_KERAS_LSO_MODULE, "class_name": "LossScaleOptimizerV3",
                "config": {"inner_optimizer": entry, "dynamic": True, **settings},
                "registered_name": "LossScaleOptimizerV3"}
    raise UnknownOptimizerError("no .keras archive holds a %s loss-scale wrapper" % state.generation)


def optimizer_arrays(state, where):
    """[(Entry, tensor)] of the optimizer's positional list in the state's generation.

    Tensors are numpy arrays or LazyTensors (`np.asarray` / `materialize` reads one), so a
    writer holds one at a time.

    The order is the generation's build order replayed over `state.variables`
    (`positional_layout`); every tensor must be present with the shape the order expects.
    """
    from ..optimizers.spec import positional_layout
    from ..schema.state import tensor_shape
    spec = get_spec(state.optimizer)
    variables = state.variables
    layout = positional_layout(spec, state.generation, state.config, [v.shape for v in variables],
                               [v.dtype for v in variables])
    out, missing = [], []
    for entry in layout:
        if entry.kind == "slot":
            value = state.slots.get(variables[entry.var_index].name, {}).get(entry.name)
            label = "%s of %s" % (entry.name, variables[entry.var_index].name)
        elif entry.name == "iterations":
            # with gradient accumulation, Keras 3's counter counts batches (`accumulation_iterations`)
            value = state.extra.get("gradient_accumulation_iterations")
            if value is None:
                value = np.asarray(state.iterations or 0, dtype=entry.dtype)
            label = "iterations"
        else:
            value = state.extra.get(entry.name)
            label = entry.name
        if value is None:
            missing.append(label)
            continue
        if tuple(tensor_shape(value)) != tuple(entry.shape):
            raise FormatError(where, "%s has shape %s, the %s build order of %s expects %s"
                              % (label, tuple(tensor_shape(value)), state.generation, spec.name, tuple(entry.shape)))
        out.append((entry, value))  # a LazyTensor stays lazy: writers load one tensor at a time
    if missing:
        raise FormatError(where, "%d of %d %s %s optimizer variables are not in the state: %s"
                          % (len(missing), len(layout), state.generation, spec.name, ", ".join(missing[:5])))
    return out


def payload_trainable(model, state, where):
    """The payload's trainable weight names, checked against the state's variables (count and shapes)."""
    trainable = [(n, np.shape(t)) for n, t, flag in model.weights if flag]
    shapes = [tuple(v.shape) for v in state.variables]
    if [tuple(s) for _, s in trainable] != shapes:
        raise FormatError(where, "the model's trainable weights %s do not match the optimizer state's variables %s"
                          % ([tuple(s) for _, s in trainable][:6], shapes[:6]))
    return [n for n, _ in trainable]
