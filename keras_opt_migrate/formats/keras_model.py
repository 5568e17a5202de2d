"""The model side of Keras full-model files, as plain data: configs and weight arrays.

Full-model writers (`.h5`, `.keras`, `.weights.h5`) carry the model besides the optimizer
state. Readers describe it as a `ModelPayload` whose `extra["layers"]` lists the layers in
`model.layers` order with their weights ({"name", "class_name", "weights": [h5 weight
names]}; the arrays are `payload.weights` in the same order).

Keras 3 configs are completed here on the JSON alone (the `module` fields Keras 3's `.keras`
loader needs), and Keras 2 configs put in tf_keras' `.keras` form. A Keras 2 model becomes a
Keras 3 one in `keras3_model`, where Keras 3 itself rebuilds it (`keras3_model_config`
returns what it serializes); compile configs for both are built here.
"""

import copy

from ..errors import FormatError

class UntranslatableModelError(FormatError):
    """The model has no Keras 3 form (a Lambda or custom layer, a setting Keras 3 lacks, a subclassed model)."""


# The Keras 3 release whose `.keras` layout the writers reproduce and are tested against.
KERAS3_VERSION = "3.15.1"
KERAS3_LAYERS_MODULE = "keras.layers"

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


# -- Keras 3 configs ---------------------------------------------------------------------

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
    """The Keras 3 form of a model config: a Keras 3 config as its `.keras` files hold it; a Keras 2
    Functional or Sequential config as Keras 3 itself serializes the model it rebuilds from it
    (`keras3_model.build`: nothing of the file runs, no variable is allocated)."""
    if not isinstance(model_config, dict) or not isinstance(model_config.get("config"), dict):
        raise FormatError(where, "the model config is not a JSON object with a config")
    if is_keras3_config(model_config, keras_version):
        return _keras3_with_modules(copy.deepcopy(model_config))
    from .keras3_model import build
    return copy.deepcopy(build(model_config, where, keras_version).config)


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
