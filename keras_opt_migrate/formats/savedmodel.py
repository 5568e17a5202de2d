"""Keras 2 SavedModel directories (`model.save('sm', save_format='tf')`).

The optimizer state is in `sm/variables/variables`, an object-based checkpoint with the
`save_weights` keys (plus `keras_api/metrics/...`), read by `tf_checkpoint`. What the
checkpoint cannot tell is in `sm/keras_metadata.pb`, a `SavedMetadata` protobuf: one node
per Keras object, each with a JSON `metadata` string. The root's JSON has
`training_config.optimizer_config` (the algorithm and its config) and each layer's node
(`root.layer_with_weights-0`) its name, which names the model variables (`hidden/kernel`)
and whether the layer is trainable. The protobuf is decoded here from its wire format: no
graph is loaded, nothing is run, and tf_keras is not needed.

Which model variables the optimizer updates (the trainable ones: not BatchNormalization's
moving statistics, not a frozen layer's weights) is recorded in `saved_model.pb`: its
`SavedObjectGraph` has the same nodes as the checkpoint's object graph, each variable with
its `trainable` flag. That message is only parsed; its functions are never loaded.
"""

import json
import os
import re
import shutil

from ..errors import FormatError, UnsupportedFormatError
from ..optimizers.registry import spec_for_class
from ..optimizers.spec import GENERATIONS
from .base import MAX_JSON_BYTES, Format
from .protowire import fields as _fields
from .tf_bundle import Bundle
from .tf_checkpoint import (GraphWriter, _locate, _model_variables, add_optimizer, model_payload, read_object_graph, strip,
                            trainable_nodes)

METADATA_FILE = "keras_metadata.pb"
VARIABLES_PREFIX = os.path.join("variables", "variables")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# SavedMetadata: field 1 = repeated SavedObject; SavedObject: 3 node_path, 4 identifier, 5 metadata.
NODES_FIELD, PATH_FIELD, IDENTIFIER_FIELD, METADATA_FIELD = 1, 3, 4, 5
WRAPPER_CLASSES = ("LossScaleOptimizer", "LossScaleOptimizerV3")
# Where the state of a SavedModel goes in another generation (the graph pins the optimizer's, see write()).
OTHER_GENERATION_ROUTES = {
    "experimental": "a tf_keras .keras archive (an output named *.keras; tf_keras.models.load_model restores the "
                    "model and the optimizer) or a TF checkpoint (*.ckpt; model.load_weights restores it)",
    "v2": "a .h5 (tf_keras.models.load_model restores the model and the optimizer) or a TF checkpoint (*.ckpt; "
          "model.load_weights restores it)",
}


class SavedModelFormat(Format):
    """Keras 2 SavedModels: read, and rewritten with converted optimizer state.

    The writer copies the source SavedModel verbatim (graph, assets, `keras_metadata.pb`) and
    rewrites only `variables/variables`: every model (and metric) tensor and the object graph
    are kept, the optimizer's subtree is replaced by the target's layout, which must be of the
    source's generation (v2 or 2.11+; a SavedModel is Keras 2's format). `saved_model.pb`
    describes that optimizer twice: as objects in its object graph, which TF's loaders
    (`tf.saved_model.load`, tf_keras `load_model`) match against the variables and refuse when
    they differ ("Found N Python objects that were not bound to checkpointed values"), and in
    the traced save / restore functions of its graph, which TF1 loaders and TF Serving run.
    Another generation's optimizer would mean writing those graph functions anew: a SavedModel
    of our own. For another generation, write a `.keras` archive, a `.h5` or a TF checkpoint
    (the model config comes from `keras_metadata.pb`).

    tf_keras `load_model` ignores optimizer state in a SavedModel: it recompiles the optimizer
    from `training_config` and hands back a fresh one (LAYOUTS §7.2). The state is restored by
    the workaround: build the model and the target generation's optimizer, `compile`, then
    `model.load_weights('<sm>/variables/variables')`. `keras_metadata.pb` still names the
    source's optimizer class, so `load_model` keeps recompiling that one.
    """

    name = "savedmodel"
    description = "Keras 2 SavedModel directory (variables/variables + keras_metadata.pb)"
    can_write = True
    needs_model = True
    generations = ("v2", "experimental")
    extensions = ()

    def read_model(self, path):
        origin = str(path)
        meta_path = os.path.join(path, METADATA_FILE)
        nodes = read_saved_metadata(meta_path) if os.path.isfile(meta_path) else {}
        root = nodes.get("root", {})
        layer_names = _layer_names(nodes)
        bundle = Bundle(os.path.join(path, VARIABLES_PREFIX), origin=origin)
        graph = bundle.object_graph()
        if graph is None:
            raise FormatError(origin, "%s has no object graph" % VARIABLES_PREFIX)
        trainable = trainable_variables(_saved_model_message(path), graph, nodes, path)
        payload = model_payload(bundle, graph, origin, self.name, rename=lambda p: _rename(p, layer_names),
                                trainable=trainable)
        payload.config = plain_config(root.get("model_config"), meta_path)
        payload.keras_version = root.get("keras_version")
        payload.extra["training_config"] = root.get("training_config")
        owners = _top_level_owners(graph)
        layers = {}
        for (name, _, _), obj_path, node_id in zip(payload.weights, payload.extra["paths"],
                                                   _model_variables(graph, 0, graph.child(0, "optimizer"))):
            # a variable's shortest path may run through the model's own `variables` list (a nested
            # model's or a sub-layer's weights): it belongs to the top-level layer that tracks it
            head = owners.get(node_id, obj_path.partition("/")[0])
            layers.setdefault(head, {"name": layer_names.get(head, head), "class_name": None, "weights": []})
            layers[head]["weights"].append(name + ":0")
        payload.extra["layers"] = list(layers.values())
        return payload

    def check_writable(self, state, path, model=None):
        """A SavedModel is written from a SavedModel source whose graph holds `state`'s generation."""
        self._source_graph(state, str(path), model)

    def _source_graph(self, state, path, model):
        """(source directory, its bundle, object graph) after checking `state` can be written from `model`."""
        if state.generation not in self.generations:
            raise FormatError(path, "a Keras 2 SavedModel holds %s optimizer state, not %s (Keras 3 cannot load "
                                    "SavedModels: write a .keras archive)" % ("/".join(self.generations),
                                                                            state.generation))
        source = model.source_path if model is not None else None
        if model is None or model.source_format != self.name or not source or not self.validate(source):
            raise FormatError(path, "a SavedModel is written from a SavedModel source (its graph and functions are "
                                    "copied); the source is %s" % (model.source_format if model else "unknown"))
        bundle = Bundle(os.path.join(source, VARIABLES_PREFIX), origin=source)
        graph = bundle.object_graph()
        opt = graph.child(0, "optimizer") if graph is not None else None
        own = _locate(graph, bundle, opt).generation if opt is not None else None
        if own != state.generation:
            raise FormatError(path, "the source SavedModel's graph (saved_model.pb) holds a %s optimizer, and "
                                    "TensorFlow's SavedModel loaders (tf_keras load_model, tf.saved_model.load, TF "
                                    "Serving's restore op) refuse variables whose optimizer objects differ from it, so "
                                    "a SavedModel keeps a %s optimizer; for %s state, write %s"
                              % (own, own, state.generation, OTHER_GENERATION_ROUTES[state.generation]))
        return source, bundle, graph

    def write(self, state, path, model=None, progress=None, **options):
        """Copy the source SavedModel to `path` with `variables/variables` holding `state`."""
        path = str(path)
        source, bundle, graph = self._source_graph(state, path, model)
        shutil.copytree(source, path, ignore=lambda d, names: [n for n in names if os.path.join(d, n).startswith(
            os.path.join(source, VARIABLES_PREFIX) + ".")])
        writer, opt = _keep_all_but_optimizer(graph, bundle, path)
        model_nodes = _model_variables(graph, 0, opt)
        trainable = trainable_nodes(model, state, path)
        if len(model_nodes) != len(model.weights):
            raise FormatError(path, "the SavedModel's graph has %d model variables, its weights %d"
                              % (len(model_nodes), len(model.weights)))
        add_optimizer(writer, opt, state, [model_nodes[i] for i in trainable],
                      [strip(model.weights[i][0]) for i in trainable])
        writer.save(os.path.join(path, VARIABLES_PREFIX), progress)

    def validate(self, path):
        return (os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES)
                and os.path.isfile(os.path.join(path, VARIABLES_PREFIX + ".index")))

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        origin = str(path)
        meta_path = os.path.join(path, METADATA_FILE)
        warnings = []
        if os.path.isfile(meta_path):
            nodes = read_saved_metadata(meta_path)
        else:
            nodes = {}
            warnings.append("no %s: the optimizer's class and config and the layer names are unknown" % METADATA_FILE)
        root = nodes.get("root", {})
        class_name, file_config = _optimizer_config(root)
        hint = optimizer or _algorithm(class_name)
        if class_name and hint is None:
            # the variables alone may fit known algorithms; the metadata says it was none of them
            raise UnsupportedFormatError(origin, "%s names the optimizer class %r, which is no optimizer "
                                                 "keras-opt-migrate knows; if it keeps a known algorithm's state, "
                                                 "pass optimizer=... (CLI --optimizer)" % (METADATA_FILE, class_name))
        layer_names = _layer_names(nodes)

        bundle = Bundle(os.path.join(path, VARIABLES_PREFIX), origin=origin)
        graph = bundle.object_graph()
        if graph is None:
            raise FormatError(origin, "%s has no object graph" % VARIABLES_PREFIX)
        message = _saved_model_message(path)
        trainable = trainable_variables(message, graph, nodes, path)
        if trainable is None:
            warnings.append("saved_model.pb records no variables: every model variable is taken as trainable")
        state = read_object_graph(bundle, graph, origin, optimizer=hint, variables=variables, config=config,
                                  rename=lambda p: _rename(p, layer_names), file_config=file_config,
                                  trainable=trainable)
        state.warnings.extend(warnings)
        wrapper = _wrapper_config(root)
        if wrapper:
            state.source["wrapper"] = wrapper
        state.source.update(format=self.name, path=origin, checkpoint=VARIABLES_PREFIX)
        if class_name:
            state.source["class_name"] = class_name
        if root.get("keras_version"):
            state.source["keras_version"] = root["keras_version"]
        tf_version = _tensorflow_version(message)
        if tf_version:
            state.source["tensorflow_version"] = tf_version
        return state


# SavedModel metadata encodes what JSON lacks as {"class_name": <marker>, ...} (tf_keras json_utils).
_JSON_SEQUENCES = ("__tuple__", "TensorShape")
_JSON_UNSUPPORTED = ("TypeSpec", "CompositeTensor", "__ellipsis__", "__bytes__")


def plain_config(value, where):
    """A model config from `keras_metadata.pb` as the `.h5` / `.keras` writers take it.

    The SavedModel metadata writes tuples and shapes as `{"class_name": "__tuple__", "items":
    [...]}` and tags shared objects with `shared_object_id`; here tuples become lists and the
    tags are dropped (configs in `.h5` files carry neither). Type specs and composite tensors
    (ragged / sparse inputs) have no plain form and are refused.
    """
    if isinstance(value, list):
        return [plain_config(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    marker = value.get("class_name")
    if marker in _JSON_SEQUENCES and set(value) == {"class_name", "items"}:
        items = value["items"]
        return None if items is None else [plain_config(v, where) for v in items]
    if marker in _JSON_UNSUPPORTED:
        raise FormatError(where, "the model config holds a %s, which has no plain JSON form; rewriting this model in "
                                 "another format is not supported" % marker)
    return {k: plain_config(v, where) for k, v in value.items() if k != "shared_object_id"}


def _top_level_owners(graph):
    """{variable node id: the root child (`layer_with_weights-2`, `layer-3`) of the layer that tracks it}."""
    out = {}
    opt = graph.child(0, "optimizer")
    for name, child in graph.children(0).items():
        if not re.match(r"^layer(_with_weights)?-\d+$", name):
            continue
        for node_id in graph.paths(child, skip={opt} if opt is not None else ()):
            out.setdefault(node_id, name)
    return out


def _layer_names(nodes):
    return {p.split(".", 1)[1]: m["name"] for p, m in nodes.items()
            if p.startswith("root.") and p.count(".") == 1 and isinstance(m.get("name"), str)}


def _keep_all_but_optimizer(graph, bundle, where):
    """A GraphWriter over a copy of `graph` whose optimizer object is emptied (ready for the new
    layout) and whose objects only the optimizer reached are cleared; everything else keeps its
    node id, checkpoint key and value (read from `bundle` when saved)."""
    proto = type(graph.proto)()
    proto.CopyFrom(graph.proto)
    opt = graph.child(0, "optimizer")
    if opt is None:
        raise FormatError(where, "the source SavedModel has no optimizer object to rewrite")
    kept = set(graph.paths(0, skip={opt}))
    for node_id in kept:  # slot tables live on optimizers only; a kept slot variable would be orphaned
        if proto.nodes[node_id].slot_variables:
            raise FormatError(where, "object %d besides the optimizer holds slot variables" % node_id)
    for node_id, node in enumerate(proto.nodes):
        if node_id not in kept:
            del node.children[:]
            del node.attributes[:]
            del node.slot_variables[:]
    writer = GraphWriter(proto)
    for node_id in kept:
        for attr in proto.nodes[node_id].attributes:
            if attr.name == "VARIABLE_VALUE" and attr.checkpoint_key in bundle:
                writer.fixed[node_id] = attr.checkpoint_key
                writer.values[node_id] = (lambda key: lambda: bundle.read(key))(attr.checkpoint_key)
    return writer, opt


def _saved_model_message(path):
    """The parsed `saved_model.pb` (or `.pbtxt`), or None when neither is there.

    Only parsed as a protobuf: the graph is not loaded and no function is run. A file that does
    not parse makes the directory corrupt, although the state itself lives in `variables/`.
    """
    pb = next((os.path.join(path, f) for f in SAVED_MODEL_FILES if os.path.isfile(os.path.join(path, f))), None)
    if pb is None:
        return None
    from .._tensorflow import import_tensorflow
    import_tensorflow()  # quietly, before its protobuf modules import it
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2
    message = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            data = f.read()
        if pb.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), message)
        else:
            message.ParseFromString(data)
    except Exception as e:  # google.protobuf DecodeError / ParseError, OSError, UnicodeDecodeError
        raise FormatError(pb, "not a readable SavedModel protobuf (%s)"
                          % (str(e).splitlines() or [type(e).__name__])[0]) from e
    return message


def _tensorflow_version(message):
    """The TF version recorded in a parsed `saved_model.pb`."""
    if message is None:
        return None
    versions = {g.meta_info_def.tensorflow_version for g in message.meta_graphs} - {""}
    return sorted(versions)[0] if versions else None


def trainable_variables(message, graph, metadata, where):
    """Node ids of the checkpoint's model variables that `model.trainable_variables` holds, or None.

    A variable is trainable when its `SavedVariable` in `saved_model.pb` says so (not
    BatchNormalization's moving statistics) and no layer it belongs to is frozen
    (`"trainable": false` in the layer's `keras_metadata.pb` node; Keras 2 keeps a frozen
    layer's variables trainable but leaves them out of `trainable_variables`). The SavedModel
    writer numbers the `SavedObjectGraph` like the checkpoint's object graph; each model
    variable's name is checked against the checkpoint's before the flags are used (the
    optimizer's own nodes are not: a rewritten SavedModel renumbers them). None when the file
    has no object graph with variables (nothing is known).
    """
    if message is None or len(message.meta_graphs) != 1:
        return None
    saved = message.meta_graphs[0].object_graph_def.nodes
    flags = {i: n.variable for i, n in enumerate(saved) if n.WhichOneof("kind") == "variable"}
    if not flags:
        return None
    pb = os.path.join(where, SAVED_MODEL_FILES[0])
    opt = graph.child(0, "optimizer")
    trainable = set()
    for node_id in graph.paths(0, skip={opt} if opt is not None else ()):
        node = graph.nodes[node_id]
        if not any(a.name == "VARIABLE_VALUE" for a in node.attributes):
            continue
        variable = flags.get(node_id)
        ours = next((a.full_name for a in node.attributes if a.name == "VARIABLE_VALUE"), "")
        if variable is None or (ours and variable.name and variable.name != ours):
            raise FormatError(pb, "its object graph does not match %s's: node %d is variable %r there, %r in the "
                                  "checkpoint; the directory mixes files of different saves"
                              % (VARIABLES_PREFIX, node_id, variable.name if variable is not None else None, ours))
        if variable.trainable:
            trainable.add(node_id)
    for node_path, meta in metadata.items():
        if meta.get("trainable") is False:
            frozen = _resolve(graph, node_path)
            if frozen is not None:
                trainable -= set(graph.paths(frozen))
    return trainable


def _resolve(graph, node_path):
    """The checkpoint node at a metadata path (`root.layer_with_weights-1`), or None."""
    parts = node_path.split(".")
    if parts[0] != "root":
        return None
    node = 0
    for name in parts[1:]:
        node = graph.child(node, name)
        if node is None:
            return None
    return node


def _rename(path, layer_names):
    """`layer_with_weights-0/kernel` -> `hidden/kernel` when the metadata names the layer."""
    head, sep, tail = path.partition("/")
    return layer_names[head] + sep + tail if head in layer_names else path


def _optimizer_config(root):
    """(class name, config) of the compiled optimizer, unwrapping a loss-scale wrapper."""
    opt = (root.get("training_config") or {}).get("optimizer_config") or {}
    class_name, config = opt.get("class_name"), dict(opt.get("config") or {})
    if class_name and class_name.split(">")[-1] in WRAPPER_CLASSES:
        inner = config.get("inner_optimizer") or {}
        class_name, config = inner.get("class_name"), dict(inner.get("config") or {})
    return class_name, config


def _wrapper_config(root):
    """{class_name, config} of a loss-scale wrapper in the metadata's training config, or None."""
    opt = (root.get("training_config") or {}).get("optimizer_config") or {}
    class_name = str(opt.get("class_name") or "").split(">")[-1]
    if class_name not in WRAPPER_CLASSES:
        return None
    config = {k: v for k, v in (opt.get("config") or {}).items() if k != "inner_optimizer"}
    return {"class_name": class_name, "config": config}


def _algorithm(class_name):
    if not class_name:
        return None
    for generation in GENERATIONS:
        spec = spec_for_class(class_name, generation)
        if spec is not None:
            return spec.name
    return None


# -- SavedMetadata wire format -------------------------------------------------------------------
def read_saved_metadata(path):
    """{node_path: parsed metadata JSON} of a `keras_metadata.pb` (FormatError if malformed)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise FormatError(path, "cannot read: %s" % e) from e
    if len(data) > MAX_JSON_BYTES:
        raise FormatError(path, "larger than %d bytes; refused" % MAX_JSON_BYTES)
    out = {}
    try:
        for field, value in _fields(data):
            if field != NODES_FIELD or not isinstance(value, bytes):
                continue
            node = {f: v for f, v in _fields(value) if f in (PATH_FIELD, IDENTIFIER_FIELD, METADATA_FIELD)}
            node_path = node.get(PATH_FIELD, b"").decode("utf-8")
            meta = node.get(METADATA_FIELD, b"").decode("utf-8")
            parsed = json.loads(meta) if meta else {}
            out[node_path] = parsed if isinstance(parsed, dict) else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(path, "not a valid SavedMetadata protobuf: %s" % e) from e
    return out


FORMAT = SavedModelFormat()
