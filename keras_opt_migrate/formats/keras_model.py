"""The model side of Keras full-model files, as plain data: configs and weight arrays.

Full-model writers (`.h5`, `.keras`, `.weights.h5`) carry the model besides the optimizer
state. Readers describe it as a `ModelPayload` whose `extra["layers"]` lists the layers in
`model.layers` order with their weights ({"name", "class_name", "weights": [h5 weight
names]}; the arrays are `payload.weights` in the same order).

`keras3_model_config` turns a Keras 2 model config into the Keras 3 form on the JSON alone
(nothing is deserialized, so no Lambda or custom code ever runs). Only layers whose Keras 2
and Keras 3 configs and weight orders are known to agree are translated; any other layer is
refused by name. Keras 3 needs the symbolic tensors' shapes in `inbound_nodes`, so each
supported layer also states its output shape.
"""

import copy
import math

from ..errors import FormatError

class UntranslatableModelError(FormatError):
    """The model config has no known Keras 3 form (a layer class, a nested or subclassed model)."""


# The Keras 3 release whose `.keras` layout the writers reproduce and are tested against.
KERAS3_VERSION = "3.15.1"
KERAS3_LAYERS_MODULE = "keras.layers"

# Keras 2 config keys Keras 3 no longer accepts (dropped when their value is the default).
_DROPPED_KEYS = {"batch_input_shape", "input_length"}
_SAME_SHAPE = ("Dropout", "Activation", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU",
               "Softmax", "GaussianNoise", "GaussianDropout", "SpatialDropout1D", "SpatialDropout2D")
_MERGE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SUPPORTED_LAYERS = ("InputLayer", "Dense", "Embedding", "Flatten", "Reshape", "Concatenate", "Conv1D", "Conv2D") \
    + _SAME_SHAPE + _MERGE
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def bare(class_name):
    return str(class_name or "").split(">")[-1]


def is_keras3_config(model_config, keras_version=None):
    """Whether a model config is in the Keras 3 form: by the version that wrote it, else by its shape.

    Keras 3 configs name `keras.src.models.*` modules (Keras 2.13+ `.keras` files name
    `keras.src.engine.*`) and give InputLayers a `batch_shape`.
    """
    major = str(keras_version or "").split(".")[0]
    if major in ("2", "3"):
        return major == "3"
    module = str(model_config.get("module") or "")
    if module.startswith("keras.src.models") or module == "keras":
        return True
    layers = (model_config.get("config") or {}).get("layers") or []
    return any(isinstance(l, dict) and "batch_shape" in (l.get("config") or {}) for l in layers)


# -- shapes -----------------------------------------------------------------------------

def _conv_out(n, k, s, d, padding):
    if n is None:
        return None
    if padding in ("same", "causal"):
        return int(math.ceil(n / s))
    return (n - d * (k - 1) - 1) // s + 1


def _pair(value, rank):
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * rank


def output_shape(class_name, config, inputs, where):
    """Output shape of a supported layer for input shapes `inputs` (lists, batch dim first)."""
    x = inputs[0]
    if class_name in _SAME_SHAPE:
        return list(x)
    if class_name == "Dense":
        return list(x[:-1]) + [config["units"]]
    if class_name == "Embedding":
        return list(x) + [config["output_dim"]]
    if class_name == "Flatten":
        rest = x[1:]
        return [x[0], None if any(d is None for d in rest) else int(math.prod(rest))]
    if class_name == "Reshape":
        target = list(config["target_shape"])
        if -1 in target and all(d is not None for d in x[1:]):
            known = int(math.prod(d for d in target if d != -1))
            target[target.index(-1)] = int(math.prod(x[1:])) // known
        return [x[0]] + [None if d == -1 else d for d in target]
    if class_name in _MERGE:
        return list(x)
    if class_name == "Concatenate":
        axis = config.get("axis", -1)
        out = list(x)
        total = [s[axis] for s in inputs]
        out[axis] = None if any(t is None for t in total) else sum(total)
        return out
    if class_name in ("Conv1D", "Conv2D"):
        rank = 1 if class_name == "Conv1D" else 2
        first = config.get("data_format") == "channels_first"
        spatial = x[2:] if first else x[1:-1]
        k, s, d = (_pair(config.get(n, 1), rank) for n in ("kernel_size", "strides", "dilation_rate"))
        dims = [_conv_out(n, k[i], s[i], d[i], config.get("padding", "valid")) for i, n in enumerate(spatial)]
        return [x[0], config["filters"]] + dims if first else [x[0]] + dims + [config["filters"]]
    raise UntranslatableModelError(where, "cannot translate layer class %s to Keras 3" % class_name)


# -- Keras 2 -> Keras 3 config translation ------------------------------------------------

def _keras3_dtype(dtype):
    """Keras 2 `"float32"` or `{"class_name": "Policy", ...}` -> a Keras 3 dtype policy."""
    if isinstance(dtype, dict):
        name = (dtype.get("config") or {}).get("name", "float32")
    else:
        name = dtype or "float32"
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def _compute_dtype(dtype):
    name = (dtype.get("config") or {}).get("name") if isinstance(dtype, dict) else dtype
    name = name or "float32"
    return name.split("_")[-1] if name.startswith("mixed_") else name


# Keras 2.12 serializes initializers etc. without a module; Keras 3 needs it to find the class.
_MODULE_BY_SUFFIX = {"_initializer": "keras.initializers", "_regularizer": "keras.regularizers",
                     "_constraint": "keras.constraints"}


def _keras3_object(value, key=""):
    """Initializers, regularizers, constraints: add Keras 3's `module` / `registered_name`."""
    if not isinstance(value, dict) or "class_name" not in value:
        return value
    out = dict(value)
    if not out.get("module"):
        out["module"] = next((m for suffix, m in _MODULE_BY_SUFFIX.items() if key.endswith(suffix)), None)
    out.setdefault("registered_name", None)
    if isinstance(out.get("config"), dict):
        out["config"] = {k: _keras3_object(v, k) for k, v in out["config"].items()}
    return out


def _layer_config(class_name, config, where, layer_name):
    config = {k: _keras3_object(v, k) for k, v in config.items() if k not in _DROPPED_KEYS}
    if "dtype" in config or class_name != "InputLayer":
        config["dtype"] = _keras3_dtype(config.get("dtype"))
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list):
        if len(config["axis"]) != 1:
            raise UntranslatableModelError(where, "layer %r: BatchNormalization over several axes %s has no "
                                                  "Keras 3 form" % (layer_name, config["axis"]))
        config["axis"] = config["axis"][0]
    return config


def _input_layer(name, batch_shape, dtype):
    return {"module": KERAS3_LAYERS_MODULE, "class_name": "InputLayer",
            "config": {"batch_shape": list(batch_shape), "dtype": _compute_dtype(dtype), "sparse": False,
                       "ragged": False, "name": name},
            "registered_name": None, "name": name, "inbound_nodes": []}


def _keras_tensor(shape, dtype, history):
    return {"class_name": "__keras_tensor__", "config": {"shape": list(shape), "dtype": dtype,
                                                          "keras_history": list(history)}}


def _check_supported(layer, where):
    class_name = bare(layer.get("class_name"))
    name = layer.get("name") or (layer.get("config") or {}).get("name")
    if class_name in MODEL_CLASSES:
        raise UntranslatableModelError(where, "layer %r is a nested %s model; converting nested models to Keras 3 "
                                              "is not supported" % (name, class_name))
    if class_name not in SUPPORTED_LAYERS:
        raise UntranslatableModelError(where, "layer %r of class %s cannot be translated to Keras 3 (supported: %s)"
                                       % (name, class_name, ", ".join(SUPPORTED_LAYERS)))
    return class_name, name


def _translate_input(layer, where):
    config = layer.get("config") or {}
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None:
        raise FormatError(where, "InputLayer %r has no batch_input_shape" % config.get("name"))
    name = config.get("name") or layer.get("name")
    return _input_layer(name, shape, config.get("dtype")), list(shape), _compute_dtype(config.get("dtype"))


def _translate_functional(config, where):
    layers, tensors = [], {}  # tensors: (layer name, node, index) -> (shape, dtype)
    for layer in config.get("layers") or []:
        class_name, name = _check_supported(layer, where)
        if class_name == "InputLayer":
            out, shape, dtype = _translate_input(layer, where)
            layers.append(out)
            tensors[(name, 0, 0)] = (shape, dtype)
            continue
        nodes = layer.get("inbound_nodes") or []
        new_nodes = []
        out_shape, cfg = None, layer.get("config") or {}
        for node_index, node in enumerate(nodes):
            if not isinstance(node, list):
                raise FormatError(where, "layer %r: inbound node %r is not in the Keras 2 form" % (name, node))
            refs = [tuple(n[:3]) for n in node]
            missing = [r for r in refs if r not in tensors]
            if missing:
                raise FormatError(where, "layer %r reads %s, which no earlier layer produces" % (name, missing[0]))
            in_shapes = [tensors[r][0] for r in refs]
            keras_tensors = [_keras_tensor(tensors[r][0], tensors[r][1], r) for r in refs]
            kwargs = next((n[3] for n in node if len(n) > 3 and n[3]), {})
            args = [keras_tensors] if len(refs) > 1 or class_name in _MERGE + ("Concatenate",) else keras_tensors
            new_nodes.append({"args": args, "kwargs": kwargs})
            shape = output_shape(class_name, cfg, in_shapes, where)
            tensors[(name, node_index, 0)] = (shape, _compute_dtype(cfg.get("dtype")))
            if out_shape is None:
                out_shape = in_shapes if len(in_shapes) > 1 else in_shapes[0]
        entry = {"module": KERAS3_LAYERS_MODULE, "class_name": class_name,
                 "config": _layer_config(class_name, cfg, where, name), "registered_name": None,
                 "name": name, "inbound_nodes": new_nodes}
        if out_shape is not None:
            entry["build_config"] = {"input_shape": out_shape}
        layers.append(entry)

    def ends(refs):
        refs = [list(r[:3]) for r in refs]
        return refs[0] if len(refs) == 1 else refs
    return {"name": config.get("name"), "trainable": config.get("trainable", True), "layers": layers,
            "input_layers": ends(config.get("input_layers") or []),
            "output_layers": ends(config.get("output_layers") or [])}


def _translate_sequential(config, where):
    layers, shape = [], None
    for layer in config.get("layers") or []:
        class_name, name = _check_supported(layer, where)
        cfg = layer.get("config") or {}
        if class_name == "InputLayer":
            out, shape, _ = _translate_input(layer, where)
            layers.append(out)
            continue
        if shape is None and cfg.get("batch_input_shape") is not None:
            shape = list(cfg["batch_input_shape"])
            layers.append(_input_layer("input_layer", shape, cfg.get("dtype")))
        entry = {"module": KERAS3_LAYERS_MODULE, "class_name": class_name,
                 "config": _layer_config(class_name, cfg, where, name), "registered_name": None}
        if shape is not None:
            entry["build_config"] = {"input_shape": shape}
            shape = output_shape(class_name, cfg, [shape], where)
        layers.append(entry)
    if not layers or layers[0]["class_name"] != "InputLayer":
        raise UntranslatableModelError(where, "the Sequential model has no input shape; Keras 3 could not build it "
                                              "to load weights")
    return {"name": config.get("name"), "trainable": config.get("trainable", True),
            "dtype": _keras3_dtype(None), "layers": layers}


def _keras3_with_modules(config3):
    """A Keras 3 config as its `.keras` files hold it: Keras 3's legacy `.h5` serialization omits
    every `module` (and the model's `registered_name` / `build_config`), which its `.keras`
    loader needs to find the classes."""
    if "module" in config3:
        return config3
    layers = config3["config"].get("layers") or []
    for layer in layers:
        if isinstance(layer, dict) and "module" not in layer:
            custom = ">" in str(layer.get("class_name"))
            layer["module"] = None if custom else KERAS3_LAYERS_MODULE
            layer.setdefault("registered_name", layer.get("class_name") if custom else None)
            if isinstance(layer.get("config"), dict):
                layer["config"] = {k: _keras3_object(v, k) for k, v in layer["config"].items()}
    if bare(config3.get("class_name")) == "Sequential":
        first = next((l["config"].get("batch_shape") for l in layers
                      if isinstance(l, dict) and isinstance(l.get("config"), dict) and l["config"].get("batch_shape")),
                     None)
        return dict(config3, module="keras", registered_name=None, build_config={"input_shape": first})
    return dict(config3, module="keras.src.models.functional", registered_name="Functional",
                build_config={"input_shape": None})


def keras3_model_config(model_config, where, keras_version=None):
    """The Keras 3 form of a Keras 2 Functional or Sequential model config (plain JSON data)."""
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise FormatError(where, "the model config is not a JSON object with a config")
    if is_keras3_config(model_config, keras_version):
        return _keras3_with_modules(copy.deepcopy(model_config))
    class_name = bare(model_config.get("class_name"))
    config = model_config["config"]
    if class_name in ("Functional", "Model") and "input_layers" in config:
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": _translate_functional(config, where), "registered_name": "Functional",
                "build_config": {"input_shape": None}}
    if class_name == "Sequential":
        inner = _translate_sequential(config, where)
        first = inner["layers"][0]["config"]["batch_shape"]
        return {"module": "keras", "class_name": "Sequential", "config": inner, "registered_name": None,
                "build_config": {"input_shape": first}}
    raise UntranslatableModelError(where, "model class %s cannot be translated to Keras 3 (only Functional and "
                                          "Sequential models, not subclassed ones)" % class_name)


# -- Keras 2 configs in tf_keras' `.keras` form ---------------------------------------------

# The tf_keras release whose `.keras` layout the writer reproduces and is tested against.
TF_KERAS_VERSION = "2.21.0"
KERAS2_FUNCTIONAL_MODULE = "tf_keras.src.engine.functional"
_KERAS2_OBJECT_MODULES = {"loss": "keras.losses", "metrics": "keras.metrics"}


def _keras2_nested(value, key):
    """Initializers, regularizers, constraints without a module (Keras 2.12 writes none) get theirs;
    anything else (dtype policies, ...) is left as tf_keras reads it."""
    module = next((m for suffix, m in _MODULE_BY_SUFFIX.items() if key.endswith(suffix)), None)
    if not (module and isinstance(value, dict) and "class_name" in value) or value.get("module"):
        return value
    return dict(value, module=module, registered_name=value.get("registered_name"))


def _keras2_layer(layer, where):
    class_name = bare(layer.get("class_name"))
    name = layer.get("name") or (layer.get("config") or {}).get("name")
    if class_name in MODEL_CLASSES:
        raise FormatError(where, "layer %r is a nested %s model; writing nested models to a .keras archive is not "
                                 "supported" % (name, class_name))
    out = dict(layer)
    cfg = out.get("config")
    if isinstance(cfg, dict):
        out["config"] = {k: _keras2_nested(v, k) for k, v in cfg.items()}
    custom = ">" in str(layer.get("class_name"))  # a registered class: found by its registered name
    out.setdefault("module", None if custom else KERAS3_LAYERS_MODULE)
    out.setdefault("registered_name", layer.get("class_name") if custom else None)
    return out


def _first_batch_shape(layers):
    for layer in layers:
        cfg = layer.get("config") or {}
        shape = cfg.get("batch_input_shape", cfg.get("batch_shape"))
        if shape is not None:
            return list(shape)
    return None


def keras2_archive_model_config(model_config, where, keras_version=None):
    """The form tf_keras 2.21 writes a Keras 2 Functional / Sequential config in `.keras` archives.

    Keras 2 `.h5` files and SavedModels serialize the model without `module` fields (the
    "legacy" form); tf_keras' `.keras` loader looks every class up by module, so each layer
    gets `keras.layers` (registered custom classes keep their registered name), nested
    initializers etc. their module, and the model tf_keras' Functional module and a
    `build_config`. Layer configs are otherwise kept as they are: both sides are Keras 2.
    """
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise FormatError(where, "the model config is not a JSON object with a config")
    if is_keras3_config(model_config, keras_version):
        raise FormatError(where, "the source model's config is Keras 3's, which tf_keras cannot load; write the "
                                 "Keras 3 .keras flavour instead (generation keras3)")
    class_name = bare(model_config.get("class_name"))
    config = copy.deepcopy(model_config["config"])
    layers = config.get("layers")
    if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
        raise FormatError(where, "the model config has no list of layers (class %s)" % class_name)
    config["layers"] = [_keras2_layer(l, where) for l in layers]
    shape = _first_batch_shape(layers)
    if class_name in ("Functional", "Model") and "input_layers" in config:
        inputs = config.get("input_layers") or []
        out = {"module": KERAS2_FUNCTIONAL_MODULE, "class_name": "Functional", "config": config,
               "registered_name": "Functional"}
        if len(inputs) == 1 or (inputs and not isinstance(inputs[0], list)):
            out["build_config"] = {"input_shape": shape}
        return out
    if class_name == "Sequential":
        if shape is None:
            raise FormatError(where, "the Sequential model has no input shape; tf_keras could not build it to load "
                                     "weights")
        return {"module": "keras", "class_name": "Sequential", "config": config, "registered_name": None,
                "build_config": {"input_shape": shape}}
    raise FormatError(where, "model class %s cannot be written to a .keras archive (only Functional and Sequential "
                             "models, not subclassed ones)" % class_name)


def _keras2_object(value, module):
    if isinstance(value, dict) and "class_name" in value:
        out = _keras3_object(value)
        out["module"] = out.get("module") or module
        return out
    if isinstance(value, list):
        return [_keras2_object(v, module) for v in value]
    if isinstance(value, dict):
        return {k: _keras2_object(v, module) for k, v in value.items()}
    return value


def keras2_compile_config(training_config, optimizer_entry):
    """tf_keras `.keras` `compile_config` from a Keras 2 `training_config` (or a tf_keras compile_config)."""
    training = dict(training_config or {})
    return {"optimizer": optimizer_entry, "loss": _keras2_object(training.get("loss"), _KERAS2_OBJECT_MODULES["loss"]),
            "metrics": _keras2_object(training.get("metrics"), _KERAS2_OBJECT_MODULES["metrics"]),
            "loss_weights": training.get("loss_weights"),
            "weighted_metrics": _keras2_object(training.get("weighted_metrics"), _KERAS2_OBJECT_MODULES["metrics"]),
            "run_eagerly": training.get("run_eagerly"), "steps_per_execution": training.get("steps_per_execution"),
            "jit_compile": training.get("jit_compile")}


def archive_layer_groups(model_config):
    """[(group name under `layers/`, layer name, class name)]: Keras 3's and tf_keras' `.keras` naming alike."""
    return keras3_layer_groups(model_config)


def keras3_layer_groups(config3):
    """[(group name under `layers/`, layer name, class name)] in Keras 3's `model.layers` order.

    Keras 3 names a layer's weights group after its class (`dense`, `dense_1`, ...) in
    `model.layers` order; a Sequential model's `layers` omits its InputLayer.
    """
    sequential = bare(config3.get("class_name")) == "Sequential"
    out, used = [], {}
    for i, layer in enumerate(config3["config"]["layers"]):
        class_name = bare(layer.get("class_name"))
        if sequential and class_name == "InputLayer":
            continue
        snake = to_snake_case(class_name)
        n = used.get(snake, 0)
        used[snake] = n + 1
        out.append((snake if n == 0 else "%s_%d" % (snake, n), layer.get("name") or layer["config"].get("name"),
                    class_name))
    return out


def to_snake_case(name):
    from .keras_common import to_snake_case as snake
    return snake(name)


# -- compile config -----------------------------------------------------------------------

def _keras3_loss(loss):
    if isinstance(loss, dict) and "class_name" in loss:
        out = _keras3_object(loss)
        out["module"] = out.get("module") or "keras.losses"
        cfg = out.get("config")
        if isinstance(cfg, dict) or cfg is None:  # a function loss keeps its name (a string) as config
            cfg = dict(cfg or {})
            if cfg.get("reduction") in ("auto", None):
                cfg["reduction"] = "sum_over_batch_size"
            out["config"] = cfg
        return out
    return loss


def keras3_compile_config(training_config, optimizer_entry):
    """Keras 3 `compile_config` from a Keras 2 `training_config` (or a Keras 3 compile_config)."""
    training = dict(training_config or {})
    metrics = training.get("metrics") or None
    return {"optimizer": optimizer_entry, "loss": _keras3_loss(training.get("loss")),
            "loss_weights": training.get("loss_weights"), "metrics": metrics,
            "weighted_metrics": training.get("weighted_metrics") or None,
            "run_eagerly": bool(training.get("run_eagerly", False)),
            "steps_per_execution": training.get("steps_per_execution") or 1,
            "jit_compile": bool(training.get("jit_compile", False))}


def keras2_training_config(source_training, optimizer_entry):
    """Keras 2 `training_config` (h5 root attribute) around an optimizer entry."""
    training = dict(source_training or {})
    out = {"loss": training.get("loss"), "metrics": training.get("metrics"),
           "weighted_metrics": training.get("weighted_metrics"), "loss_weights": training.get("loss_weights")}
    out["optimizer_config"] = optimizer_entry
    return out
