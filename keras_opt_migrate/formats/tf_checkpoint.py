"""Object-based TensorFlow checkpoints: `model.save_weights('w.ckpt')` and `tf.train.Checkpoint`.

The object graph (`_CHECKPOINTABLE_OBJECT_GRAPH`) is walked from the root. `save_weights`
roots it at the model (`layer_with_weights-0/...`, `optimizer/...`); `tf.train.Checkpoint`
adds a `model` child. The optimizer object tells its generation:

  * OptimizerV2 (`iter` and hyperparameter variables, `.OPTIMIZER_SLOT` edges listed in the
    optimizer's `slot_variables` table): slots are attached by those edges;
  * the 2.11+ optimizer and Keras 3 (`_iterations`, `_variables/N`; Keras 3 also keeps the
    model's variables in `_trainable_variables`): nothing links `_variables/N` to a model
    variable but the build order, which is replayed (`mapping.attach_positional`) and then
    checked against the per-slot lists (`_momentums/i`, ...) the object graph also records;
  * TF1 optimizers (slot edges, `beta1_power`, no `iter`), also nested one level deeper by
    Keras' `TFOptimizer` wrapper (`optimizer/optimizer`, `optimizer/global_step`).

Loss-scale wrappers (legacy, V3, Keras 3) are unwrapped and their scale kept in `extra`.
Where the file cannot tell algorithms apart, the state is read as the first of them and
`state.candidates` names them all (see `keras_opt_migrate.candidates`).
"""

import dataclasses
import math
import re

import numpy as np

from .. import matching
from ..errors import FormatError, MappingError, UnsupportedFormatError
from ..optimizers.registry import SPECS, get_spec
from ..optimizers.spec import GENERIC_TRACKED, LAYOUT_FLAGS, flag_configs, positional_layout, slot_sets
from ..schema import OptimizerState, VariableSpec, materialize
from .base import Format, ModelPayload
from .mapping import attach_named, attach_positional, canonical_config
from .tf_bundle import (CHECKSUM_KIND, GRAPH_KEY, VALUE_SUFFIX, Bundle, key_path, looks_object_based, resolve_prefix,
                        write_bundle)

# Loss-scale state of the wrappers, under the schema's canonical extra names.
LOSS_SCALE_CHILDREN = {"current_loss_scale": "loss_scale", "good_steps": "loss_scale_good_steps"}  # legacy, V3
KERAS3_LOSS_SCALE = {"dynamic_scale": "loss_scale", "step_counter": "loss_scale_good_steps",  # and its own, unused:
                     "_iterations": "loss_scale_optimizer_iterations",
                     "_learning_rate": "loss_scale_optimizer_learning_rate"}
_LAYER = re.compile(r"^layer_with_weights-(\d+)$")
STEP_CHILD = "global_step"  # a step counter beside TF1 optimizers, which keep none themselves


@dataclasses.dataclass
class _Optimizer:
    """Where the optimizer's own state sits in the object graph, and what wraps it."""

    generation: str
    node: int
    wrapper: str = None
    step_key: str = None  # TFOptimizer's global_step
    extras: dict = dataclasses.field(default_factory=dict)  # canonical -> checkpoint key


class TfCheckpointFormat(Format):
    """Reads every generation's object-based checkpoint; writes v2, 2.11+, Keras 3 and TF1 layouts.

    Writing needs the source's model weights (`ModelPayload`), laid out where the target's
    loader looks for them. Two roots (option `root=`):
      "save_weights": the graph is rooted at the model (`layer_with_weights-0/kernel`,
          `optimizer/...`): what tf_keras `model.load_weights(path)` reads;
      "checkpoint": `model/...`, `optimizer/...`, `save_counter`: what
          `tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path)` reads.
    By default the source checkpoint's root is kept; other sources get "save_weights" for
    v2 / 2.11+ targets. Keras 3 and TF1 object-based targets are always "checkpoint"
    (Keras 3 `load_weights` reads no TF checkpoints; TF1 optimizers are not Keras-tracked).
    Keras 3: as real Keras 3 checkpoints, the trainable weights are keyed
    `optimizer/_trainable_variables/K` (their shortest path; restored once the optimizer is
    built) and every weight also hangs at its trackable path under the model
    (`model/_operations/2/moving_mean`), which is where the non-trainable ones are keyed. Those
    paths come from the Keras 3 model rebuilt from the source's Keras 2 config
    (`keras3_model`); a source without a config (a checkpoint) gives trainable weights only.
    """

    name = "tf_checkpoint"
    checksums = CHECKSUM_KIND
    description = "TensorFlow object-based checkpoint (save_weights TF format, tf.train.Checkpoint)"
    can_write = True
    needs_model = True
    generations = ("v2", "experimental", "keras3", "tf1")
    extensions = (".ckpt",)

    def stored_form(self, state):
        return stored_optimizer_form(state)

    def unwritable(self, state):
        out = {}
        if state.generation in ("v2", "tf1", "keras3") and "current_learning_rate" in state.extra:
            out["current_learning_rate"] = ("only the 2.11+ optimizer keeps the last step's learning rate; the "
                                            "schedule recomputes it from iterations", False)
        if state.generation in ("v2", "tf1") and "learning_rate" in state.extra:
            out["learning_rate"] = ("this generation keeps the learning rate as a hyperparameter (config)", False)
        if state.generation == "tf1":
            for name in state.extra:
                if name.startswith("loss_scale"):
                    out[name] = ("writing a %s loss-scale wrapper is not supported; the loss scale restarts at "
                                 "initial_scale" % state.generation, True)
        return out

    def read_model(self, path):
        prefix = resolve_prefix(path)
        if prefix is None:
            raise FormatError(path, "not a TensorFlow checkpoint (no .index file and no `checkpoint` file)")
        bundle = Bundle(prefix, origin=path)
        graph = bundle.object_graph()
        if graph is None:
            raise UnsupportedFormatError(path, "a name-based TF1 Saver checkpoint; read it with "
                                               "format='tf1_checkpoint'")
        return model_payload(bundle, graph, str(path), source_format=self.name)

    def write(self, state, path, model=None, progress=None, root=None, **options):
        """Write `state` (in its target generation) and `model`'s weights as checkpoint prefix `path`."""
        path = str(path)
        if state.generation not in self.generations:
            raise FormatError(path, "TF checkpoints hold %s optimizer state, not %s"
                              % ("/".join(self.generations), state.generation))
        if model is None:
            raise FormatError(path, "writing a TF checkpoint needs the source model's weights; the source holds none")
        root = choose_root(state.generation, model, root)
        writer = GraphWriter()
        if root == "checkpoint":
            model_node = writer.link(0, "model", writer.node())
            opt = writer.link(0, "optimizer", writer.node())
            writer.link(model_node, "optimizer", opt)
        else:
            model_node, opt = 0, writer.link(0, "optimizer", writer.node())
        if state.generation == "keras3":
            state, var_nodes = _add_keras3_model(writer, model_node, model, state, path)
            names = [v.name for v in state.variables]
        else:
            trainable = trainable_nodes(model, state, path)
            nodes = _add_model(writer, model_node, model, model_paths(model, path))
            var_nodes = [nodes[i] for i in trainable]
            names = [strip(model.weights[i][0]) for i in trainable]
        try:
            add_optimizer(writer, opt, state, var_nodes, names)
        except FormatError as e:
            if e.path == "None":  # the layout helpers do not know the file name
                raise FormatError(path, e.problem) from e
            raise
        if root == "checkpoint":
            if state.generation == "tf1" and "beta1_power" not in state.extra and state.iterations is not None:
                writer.variable(np.asarray(state.iterations, np.int64), "global_step", 0, STEP_CHILD)
            writer.variable(np.asarray(1, np.int64), "save_counter", 0, "save_counter")
        try:
            writer.save(path, progress)
        except FormatError as e:
            if e.path == "None":
                raise FormatError(path, e.problem) from e
            raise

    def check_writable(self, state, path, model=None):
        if state.generation == "keras3" and model is not None:
            _keras3_layout(model, state, str(path))

    def validate(self, path):
        prefix = resolve_prefix(path)
        return prefix is not None and looks_object_based(prefix)

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        prefix = resolve_prefix(path)
        if prefix is None:
            raise FormatError(path, "not a TensorFlow checkpoint (no .index file and no `checkpoint` file)")
        bundle = Bundle(prefix, origin=path)
        graph = bundle.object_graph()
        if graph is None:
            raise UnsupportedFormatError(path, "a name-based TF1 Saver checkpoint (no object graph); "
                                               "read it with format='tf1_checkpoint'")
        state = read_object_graph(bundle, graph, str(path), optimizer=optimizer, variables=variables,
                                  config=config)
        state.source.update(format=self.name, path=str(path), prefix=prefix)
        return state


def choose_root(generation, model, root=None):
    """The graph root to write (see `TfCheckpointFormat`): an explicit choice, the source's, or the default."""
    if generation in ("keras3", "tf1"):
        if root == "save_weights":
            raise FormatError(None, "%s checkpoints are restored through tf.train.Checkpoint(model=..., "
                                    "optimizer=...); root='save_weights' does not apply" % generation)
        return "checkpoint"
    if root is not None:
        if root not in ROOTS:
            raise FormatError(None, "root must be one of %s; received root=%r" % (", ".join(ROOTS), root))
        return root
    return (model.extra or {}).get("checkpoint_root") or "save_weights"


def model_payload(bundle, graph, origin, source_format, rename=None, trainable=None):
    """The model's weights in an object-based checkpoint, with their object paths (for the writers).

    Names are the variables' own names (`hidden/kernel`, the graph's `full_name`), paths the
    object paths under the model (`layer_with_weights-0/kernel`). Keras 3 checkpoints keep
    the model's trainable weights only, under the optimizer (`_trainable_variables/K`).
    trainable: node ids of the trainable variables when the file records them (a SavedModel);
    otherwise the v2 slot edges tell, and without those every weight counts as trainable.
    """
    root = 0
    model_node = graph.child(root, "model")
    model_root = root if model_node is None else model_node
    opt_node = graph.child(root, "optimizer")
    weights, paths = [], []
    trainable_ids = None
    if opt_node is not None:
        found = _locate(graph, bundle, opt_node)
        ch = graph.children(found.node)
        if found.generation == "keras3":
            nodes = graph.list_items(ch["_trainable_variables"])
            extra = {"checkpoint_root": "checkpoint", "keras3": True}
            for node_id in nodes:
                key = graph.value_key(node_id)
                weights.append((_full_name(graph, node_id) or key_path(key), bundle.tensor(key), True))
            if model_node is not None:
                # tf.train.Checkpoint(model=...) also holds the non-trainable weights (BatchNormalization's
                # statistics) under `model/`. The writers lay out the trainable ones only (as Keras 3 keeps
                # them under the optimizer); `load_into` restores all: `non_trainable` and `object_paths`
                under = graph.paths(model_node, skip={opt_node})
                listed = set(nodes)
                extra["object_paths"] = [under.get(n) or key_path(graph.value_key(n)) for n in nodes]
                extra["non_trainable"] = [
                    (_full_name(graph, n) or key_path(graph.value_key(n)), bundle.tensor(graph.value_key(n)), False,
                     path) for n, path in under.items() if n not in listed and graph.value_key(n)]
            return ModelPayload(weights, source_format=source_format, source_path=origin, extra=extra)
        slotted = {orig for orig, _, _ in graph.slot_variables(found.node)}
        if not slotted and found.generation == "experimental" and "_variables" in ch:
            # 2.11+: the slots are named after the variables they belong to (`Adam/m/bn/gamma`)
            everything = _model_variables(graph, model_root, opt_node)
            slotted = set(_trainable_by_slot_names(graph, everything, graph.list_items(ch["_variables"])))
            if slotted and len(slotted) == len(everything):
                slotted = set()
        trainable_ids = slotted or None
    if trainable is not None:
        trainable_ids = set(trainable)
    names = graph.paths(model_root, skip={opt_node} if opt_node is not None else set())
    for node_id in _model_variables(graph, model_root, opt_node):
        key = graph.value_key(node_id)
        path = names.get(node_id) or key_path(key)
        name = _full_name(graph, node_id) or (rename(path) if rename else path)
        weights.append((name, bundle.tensor(key), trainable_ids is None or node_id in trainable_ids))
        paths.append(path)
    if not weights:
        raise FormatError(origin, "the checkpoint holds no model weights")
    return ModelPayload(weights, source_format=source_format, source_path=origin,
                        extra={"paths": paths, "checkpoint_root": "save_weights" if model_node is None else "checkpoint"})


def _full_name(graph, node_id):
    for a in graph.nodes[node_id].attributes:
        if a.name == "VARIABLE_VALUE" and a.full_name:
            return a.full_name
    return None


def read_object_graph(bundle, graph, origin, *, optimizer=None, variables=None, config=None, rename=None,
                      file_config=None, trainable=None):
    """The `OptimizerState` of an object-based checkpoint (also used for SavedModel variables).

    optimizer: algorithm hint (user or file metadata); variables: model variables hint;
    config: user config hint; file_config: the optimizer config a file's metadata holds;
    rename: function object path -> model variable name (SavedModel layer names);
    trainable: node ids of the model's trainable variables when the file records them (a
    SavedModel's object graph does): the others (BatchNormalization's moving statistics, frozen
    layers) have no optimizer state, which matters where only the build order links the two.
    """
    root = 0
    opt_node = graph.child(root, "optimizer")
    if opt_node is None:
        raise UnsupportedFormatError(origin, "the checkpoint holds no optimizer (model weights only; "
                                             "Keras v1 optimizers in graph mode save none)")
    model_node = graph.child(root, "model")
    model_root = root if model_node is None else model_node
    found = _locate(graph, bundle, opt_node)
    config = canonical_config(dict(file_config or {}, **(config or {})))
    names = graph.paths(model_root, skip={opt_node})
    name_of = _namer(graph, names, rename)
    if found.generation in ("experimental", "keras3"):
        state = _read_positional(bundle, graph, origin, found, model_root, opt_node, name_of,
                                 optimizer, variables, config, trainable=trainable)
    else:
        state = _read_named(bundle, graph, origin, found, model_root, opt_node, name_of,
                            optimizer, variables, config, trainable=trainable)
    keys = state.source.setdefault("keys", {})
    for canonical, key in found.extras.items():
        state.extra[canonical] = bundle.tensor(key)
        keys["extra/%s" % canonical] = key
    step = graph.child(root, STEP_CHILD)
    if state.iterations is None and step is not None and graph.value_key(step) in bundle:
        state.iterations = bundle.counter(graph.value_key(step))  # tf.train.Checkpoint(global_step=...)
        keys["iterations"] = graph.value_key(step)
    state.source["root"] = "save_weights" if model_node is None else "checkpoint"
    if found.wrapper:
        state.source["wrapper"] = found.wrapper
    return state


# -- locating the optimizer -------------------------------------------------------------------
def _locate(graph, bundle, node):
    """Find the generation and the node holding the optimizer's slots, unwrapping wrappers."""
    found = _Optimizer("tf1", node)
    ch = graph.children(node)
    if "inner_optimizer" in ch and "_variables" in ch:  # Keras 3 LossScaleOptimizer
        _collect(graph, node, KERAS3_LOSS_SCALE, found.extras)
        found.wrapper, node = "LossScaleOptimizer", ch["inner_optimizer"]
        ch = graph.children(node)
    if "loss_scale" in ch:  # legacy LossScaleOptimizer and LossScaleOptimizerV3
        _collect(graph, ch["loss_scale"], LOSS_SCALE_CHILDREN, found.extras)
        found.wrapper = "LossScaleOptimizer"
    if "_variables" in ch or "_iterations" in ch:
        found.generation = "keras3" if "_trainable_variables" in ch else "experimental"
    elif "iter" in ch:
        found.generation = "v2"
    elif "optimizer" in ch:  # Keras TFOptimizer around a TF1 optimizer
        found.wrapper, node = "TFOptimizer", ch["optimizer"]
        if "global_step" in ch:
            found.step_key = graph.value_key(ch["global_step"])
    found.node = node
    return found


def _collect(graph, node, table, into):
    for name, canonical in table.items():
        child = graph.child(node, name)
        key = graph.value_key(child) if child is not None else None
        if key:
            into[canonical] = key


# -- model variables ------------------------------------------------------------------------------
_LISTS_OF_VARIABLES = ("variables", "trainable_variables", "non_trainable_variables", "keras_api")


def _namer(graph, paths, rename):
    def name_of(node_id):
        path = paths.get(node_id) or key_path(graph.value_key(node_id) or "node_%d" % node_id)
        name = rename(path) if rename else path
        if name.split("/", 1)[0] in _LISTS_OF_VARIABLES:
            # a SavedModel's shortest path to a nested model's variable goes through the root's `variables`
            # list (`variables/6`), which says nothing of the variable: its own name does
            name = _full_name(graph, node_id) or name
        return name
    return name_of


def _model_variables(graph, model_root, opt_node, trainable=None):
    """Variable nodes of the model in trainable build order: `layer_with_weights-K` in K order,
    then each layer's variables in the order the layer tracked them (only those in `trainable`,
    a set of node ids, when given)."""
    layers = sorted((int(m.group(1)), nid) for name, nid in graph.children(model_root).items()
                    for m in [_LAYER.match(name)] if m)
    ordered, seen = [], {opt_node}

    def walk(node_id):
        if node_id in seen:
            return
        seen.add(node_id)
        if graph.value_key(node_id):
            ordered.append(node_id)
            return
        for child in graph.children(node_id).values():
            walk(child)

    for _, node_id in layers:
        walk(node_id)
    return ordered if trainable is None else [n for n in ordered if n in trainable]


def _specs_for(bundle, graph, nodes, name_of, hint, origin):
    """VariableSpecs for variable nodes, or the user's `variables` hint (same count and shapes)."""
    found = []
    for node_id in nodes:
        key = graph.value_key(node_id)
        if key not in bundle:
            raise FormatError(origin, "the object graph names tensor %s, which the index does not hold" % key)
        found.append(VariableSpec(name_of(node_id), bundle.shapes[key], bundle.numpy_dtype(key).name))
    if hint is None:
        return found
    if len(hint) != len(found):
        raise MappingError("%s: variables= lists %d variables, the checkpoint's model has %d (%s)"
                           % (origin, len(hint), len(found), ", ".join(v.name for v in found)))
    for h, f in zip(hint, found):
        if tuple(h.shape) != tuple(f.shape):
            raise MappingError("%s: variables= gives %s shape %s, the checkpoint's %s has shape %s"
                               % (origin, h.name, tuple(h.shape), f.name, tuple(f.shape)))
    return list(hint)


# -- choosing the algorithm -------------------------------------------------------------------
def candidate_specs(generation, present, nonempty, children, tracked=False):
    """Algorithms whose state fits what the file shows.

    present: the generation's slot names found (or, when `tracked`, the slot-list names the
    optimizer object has, possibly empty); nonempty: those that actually hold tensors;
    children: names of the optimizer's other objects (hyperparameters, extras).
    """
    plain = {c.lstrip("_") for c in children}
    fits = []
    for spec in SPECS.values():
        table = spec.tracked.get(generation) if tracked else spec.names.get(generation)
        if table is None or (not tracked and generation not in spec.layouts and generation != "tf1"):
            continue
        to_canonical = table if tracked else {own: canonical for canonical, own in table.items()}
        if not set(present) <= set(to_canonical):
            continue
        required, possible = slot_sets(spec, generation)
        if not (required <= {to_canonical[o] for o in present} and {to_canonical[o] for o in nonempty} <= possible):
            continue
        own_extras = spec.extras.get(generation, {})
        if own_extras and not any(k.lstrip("_") in plain for k in own_extras):
            continue
        fits.append(spec)
    return fits


def pick_spec(fits, generation, observed, origin, hint=None, what="slots"):
    """(spec, candidates): the user's hint (checked), or the one algorithm among `fits`; where
    the file cannot tell several apart, the first of them and all their names (the state
    records them, see `OptimizerState.candidates`). A MappingError when nothing fits."""
    if hint:
        spec = get_spec(hint)
        if spec not in fits:
            raise MappingError(
                "%s: optimizer=%r does not fit the file: its %s state keeps %s %s; algorithms that fit: %s"
                % (origin, hint, generation, what, sorted(observed) or "none", _names(fits) or "none"))
        return spec, []
    fits = [s for s in fits if s.extras.get(generation)] or fits  # an extra they keep decides
    if not fits:
        raise MappingError("%s: no known %s optimizer keeps the %s %s; pass optimizer=... (CLI --optimizer) "
                           "if it is a registered algorithm" % (origin, generation, what, sorted(observed)))
    return fits[0], [s.name for s in fits] if len(fits) > 1 else []


def _cannot_tell(fits, generation, observed, origin, what, why):
    return MappingError(
        "%s: the file cannot tell %s apart (%s state with %s %s) and %s; pass optimizer=<one of them> "
        "(CLI --optimizer)" % (origin, _names(fits), generation, what, sorted(observed) or "none", why))


def _names(specs):
    return ", ".join(s.name for s in specs)


def stored_optimizer_form(state):
    """What a TF checkpoint of `state` stores for the optimizer, as labelled data (nothing is written).

    Derived from the data the writer lays the optimizer out by: the generation's slot names
    (v2 / TF1 slot edges) or its positional build order and per-slot list names (2.11+, Keras 3),
    the hyperparameter variables OptimizerV2 keeps, the keys of the non-slot variables, and for
    each position the tensor that fills it (`candidates.tensor_token`). A TF checkpoint stores no
    optimizer class and no other config. The variables' `full_name` attributes, which carry the
    class name, are left out: restoring matches the object graph, never reads them.
    """
    from ..candidates import tensor_token
    spec, gen = get_spec(state.optimizer), state.generation
    form = {"generation": gen, "iterations": state.iterations}
    if gen in ("v2", "tf1"):
        names = spec.names.get(gen, {})
        form["slot edges"] = sorted((var, names.get(slot, slot), tensor_token(t))
                                    for var, per in state.slots.items() for slot, t in per.items())
        if gen == "v2":
            hypers = _v2_hypers(spec, state.config)
            if isinstance(state.config.get("learning_rate"), dict):
                hypers.pop("learning_rate", None)
            form["hyperparameter variables"] = sorted(hypers.items())
    else:
        tracked = {c: attr for attr, c in dict(GENERIC_TRACKED, **spec.tracked.get(gen, {})).items()}
        items = []
        for e in positional_layout(spec, gen, state.config, [v.shape for v in state.variables],
                                   [v.dtype for v in state.variables]):
            if e.kind == "slot":
                value = state.slots.get(state.variables[e.var_index].name, {}).get(e.name)
                items.append(("%s[%d]" % (tracked.get(e.name, e.name), e.var_index), e.shape,
                              None if value is None else tensor_token(value)))
            else:
                items.append((e.name, e.shape, e.dtype))
        form["_variables"] = items
    form["non-slot variables"] = sorted((spec.extra_key(gen, k) or k, tensor_token(t)) for k, t in state.extra.items())
    return form


# -- slot edges: OptimizerV2 and TF1 ----------------------------------------------------------------
def _read_named(bundle, graph, origin, found, model_root, opt_node, name_of, hint, var_hint, config, trainable=None):
    gen, node = found.generation, found.node
    table = graph.slot_variables(node)
    children = graph.children(node)
    observed = {slot for _, slot, _ in table}
    spec, candidates = pick_spec(candidate_specs(gen, observed, observed, children), gen, observed, origin, hint)
    state = OptimizerState(optimizer=spec.name, generation=gen, config=config, candidates=candidates)
    keys = state.source.setdefault("keys", {})
    # Hyperparameter variables (OptimizerV2 only has them), `iter`, and non-slot extras.
    for name, child in children.items():
        key = graph.value_key(child)
        if name == "iter" and key and bundle.shapes.get(key) != ():
            raise FormatError(origin, "the optimizer's iteration counter %s should be a scalar, found shape %s"
                              % (key, bundle.shapes.get(key)))
        if not key or bundle.shapes.get(key) != ():
            continue
        canonical = spec.canonical_extra(gen, name)
        if name == "iter":
            state.iterations = bundle.counter(key)
            keys["iterations"] = key
        elif canonical:
            found.extras[canonical] = key
        elif gen == "v2":
            state.config[name] = bundle.scalar(key)
            keys["config/%s" % name] = key
    if found.step_key:
        state.iterations = bundle.counter(found.step_key)
        keys["iterations"] = found.step_key
    if gen == "tf1":
        tf1_iterations(state, bundle, found.extras.get("beta1_power"), origin)

    slotted = [orig for orig, _, _ in table]
    model_vars = _model_variables(graph, model_root, opt_node, trainable)
    if slotted:
        order = [n for n in model_vars if n in set(slotted)]
        order += [n for n in dict.fromkeys(slotted) if n not in set(order)]  # table (creation) order
    else:
        order = model_vars
    state.variables = _specs_for(bundle, graph, order, name_of, var_hint, origin)
    name_by_node = {n: v.name for n, v in zip(order, state.variables)}
    entries = []
    for orig, slot, slot_node in table:
        key = graph.value_key(slot_node)
        if key is None or key not in bundle:
            raise FormatError(origin, "slot %r of %s has no value in the checkpoint" % (slot, name_by_node[orig]))
        entries.append((name_by_node[orig], spec.canonical_slot(gen, slot), key, bundle.tensor(key)))
    attach_named(state, entries, origin)
    _check_slot_shapes(state, origin)
    return state


def iterations_from_beta_power(beta1_power, beta_1):
    """TF1 Adam keeps beta1_power = beta_1 ** (t + 1) after t steps."""
    return int(round(math.log(beta1_power) / math.log(beta_1))) - 1


def tf1_iterations(state, bundle, power_key, origin):
    """Derive or cross-check iterations from TF1 Adam's beta1_power when beta_1 is known."""
    beta_1 = state.config.get("beta_1", state.config.get("beta1"))
    if power_key is None:
        return
    power = float(bundle.scalar(power_key))
    if not 0 < power < 1:
        state.warnings.append("beta1_power = %r is not in (0, 1); iterations cannot be derived from it" % power)
        return
    if beta_1 is None or not 0 < float(beta_1) < 1:
        if state.iterations is None:
            state.warnings.append("iterations unknown: the checkpoint has no step counter; beta1_power gives it "
                                  "when beta_1 is known (pass config={'beta_1': ...})")
        return
    derived = iterations_from_beta_power(power, float(beta_1))
    if state.iterations is None:
        state.iterations = derived
        state.source.setdefault("keys", {})["iterations"] = power_key
        state.warnings.append("iterations = %d derived from beta1_power and beta_1 = %r" % (derived, beta_1))
    elif derived != state.iterations:
        state.warnings.append("global_step says %d steps but beta1_power with beta_1 = %r says %d"
                              % (state.iterations, beta_1, derived))


def _check_slot_shapes(state, origin):
    expected = {v.name: v for v in state.variables}
    spec = get_spec(state.optimizer)
    for var, per in state.slots.items():
        for slot, tensor in per.items():
            want = spec.shape_rule(slot, expected[var].shape, state.config, state.generation)
            if want is not None and tuple(tensor.shape) != tuple(want):
                raise FormatError(origin, "slot %s of %s has shape %s, the variable %s"
                                  % (slot, var, tuple(tensor.shape), tuple(expected[var].shape)))


# -- positional: the 2.11+ optimizer and Keras 3 ------------------------------------------------------
def _read_positional(bundle, graph, origin, found, model_root, opt_node, name_of, hint, var_hint, config,
                     trainable=None):
    gen, node = found.generation, found.node
    children = graph.children(node)
    if "_variables" not in children:
        raise FormatError(origin, "the %s optimizer object has no `_variables` list" % gen)
    # Keras 3 leaves some slot lists empty in the object graph (Adafactor, Muon): a list that is
    # present only says the algorithm has such a list; a non-empty one says it holds tensors.
    lists = {name: graph.list_items(nid) for name, nid in children.items() if _is_tracked_list(name, gen)}
    present = {name for name in lists if name not in GENERIC_TRACKED}
    nonempty = {name for name in present if lists[name]}

    if gen == "keras3":
        var_nodes = graph.list_items(children["_trainable_variables"])
    else:
        var_nodes = _model_variables(graph, model_root, opt_node, trainable)
    tensors, opt_items = [], graph.list_items(children["_variables"])
    for i, nid in enumerate(opt_items):
        key = graph.value_key(nid)
        if key is None or key not in bundle:
            raise FormatError(origin, "optimizer variable %d has no value in the checkpoint" % i)
        tensors.append((key, bundle.tensor(key)))

    base = _base_layout_config(config, lists, children)
    fits = candidate_specs(gen, present, nonempty, children, tracked=True)
    subset_note = None
    if gen == "experimental" and trainable is None and (var_hint is None or len(var_hint) != len(var_nodes)):
        var_nodes, subset_note = _trainable_subset(bundle, graph, var_nodes, opt_items, name_of, tensors, fits, base,
                                                   present, nonempty, gen, origin)
    variables = _specs_for(bundle, graph, var_nodes, name_of, var_hint, origin)
    layouts = {spec.name: _fitting_layouts(spec, gen, base, present, nonempty, variables, tensors)
               for spec in fits}
    fitting = [spec for spec in fits if layouts[spec.name]] or fits
    spec, candidates = pick_spec(fitting, gen, nonempty, origin, hint, what="slot lists")
    options = layouts.get(spec.name) or [base]
    if len(options) > 1:
        raise MappingError("%s: the %s %s state fits %d different layouts; pass config= with the values of %s"
                           % (origin, gen, spec.name, len(options), ", ".join(LAYOUT_FLAGS)))

    state = OptimizerState(optimizer=spec.name, generation=gen, config=options[0], variables=variables,
                           candidates=candidates)
    attach_positional(state, spec, gen, tensors, origin)
    if subset_note:
        state.source["trainable"] = subset_note
    _confirm_by_lists(state, spec, gen, graph, lists, origin)
    if candidates:
        _check_candidates_agree(state, [s for s in fitting if s.name in candidates], gen, layouts, tensors, origin,
                                nonempty)
    _order_proven_by_graph(state, gen, graph, var_nodes, opt_items)
    state.config = config
    if "_accumulated_gradients" in lists:
        _accumulation_iterations(state, config)

    for name, child in children.items():
        key = graph.value_key(child)
        extra = spec.canonical_extra(gen, name) or spec.canonical_extra(gen, name.lstrip("_"))
        if key and extra and extra not in state.extra:
            found.extras[extra] = key
    lr_key = graph.value_key(children["_learning_rate"]) if "_learning_rate" in children else None
    if lr_key and gen == "experimental":
        found.extras["learning_rate"] = lr_key
    if "_current_learning_rate" in children:
        found.extras["current_learning_rate"] = graph.value_key(children["_current_learning_rate"])
    lr_key = lr_key or state.source["keys"].get("extra/learning_rate")
    if lr_key and not isinstance(config.get("learning_rate"), dict):
        state.config["learning_rate"] = bundle.scalar(lr_key)
    return state


def _check_candidates_agree(state, specs, gen, layouts, tensors, origin, observed):
    """Every candidate's build order must put each tensor in the same slot list of the same variable
    as the first candidate's: then one state (relabelled per candidate) stands for all of them."""
    from ..candidates import shown_names
    first = shown_names(specs[0], gen)
    keys = state.source["keys"]
    mine = {(var, first.get(slot, slot)): key for var, per in state.slots.items() for slot in per
            for key in [keys["slots/%s/%s" % (var, slot)]]}
    for spec in specs[1:]:
        options = layouts.get(spec.name) or []
        if len(options) != 1:
            raise _cannot_tell(specs, gen, observed, origin, "slot lists",
                               "%s fits %d layouts of it" % (spec.name, len(options)))
        trial = OptimizerState(optimizer=spec.name, generation=gen, config=options[0], variables=state.variables)
        attach_positional(trial, spec, gen, tensors, origin)
        shown = shown_names(spec, gen)
        theirs = {(var, shown.get(slot, slot)): trial.source["keys"]["slots/%s/%s" % (var, slot)]
                  for var, per in trial.slots.items() for slot in per}
        if theirs != mine:
            raise _cannot_tell(specs, gen, observed, origin, "slot lists",
                               "their build orders attach the tensors differently (%s vs %s)"
                               % (specs[0].name, spec.name))


def _trainable_by_slot_names(graph, var_nodes, opt_items):
    """The model variables the 2.11+ optimizer's slots are named after (`Adam/m/bn/gamma` is bn/gamma's)."""
    slot_names = [_full_name(graph, nid) or "" for nid in opt_items]
    out = []
    for node_id in var_nodes:
        name = _full_name(graph, node_id)
        if name and any(s.endswith("/" + name) for s in slot_names):
            out.append(node_id)
    return out


def _trainable_subset(bundle, graph, var_nodes, opt_items, name_of, tensors, fits, base, present, nonempty, gen,
                      origin):
    """(the model variables the 2.11+ optimizer was built over, how that is known).

    The 2.11+ optimizer keeps state for the trainable variables only; a `save_weights` checkpoint
    lists every model variable (BatchNormalization's moving statistics too). When all of them do
    not fit the file's `_variables` count, the subset is proven by the slots' own names (tf_keras
    names each slot `<optimizer>/<slot>/<variable name>`), else by the attributes built-in layers
    keep non-trainable (`matching.KNOWN_NON_TRAINABLE`); the subset must then fit count and shapes.
    """
    def fits_any(nodes):
        variables = _specs_for(bundle, graph, nodes, name_of, None, origin)
        return any(_fitting_layouts(spec, gen, base, present, nonempty, variables, tensors) for spec in fits)

    if not fits or fits_any(var_nodes):
        return var_nodes, None
    by_names = _trainable_by_slot_names(graph, var_nodes, opt_items)
    if by_names and len(by_names) < len(var_nodes) and fits_any(by_names):
        return by_names, "the %d variables the optimizer's slots are named after (of %d model variables)" % (
            len(by_names), len(var_nodes))
    paths = [name_of(n) for n in var_nodes]
    frozen = set(matching.non_trainable_by_attribute(paths))
    by_attributes = [n for i, n in enumerate(var_nodes) if i not in frozen]
    if frozen and fits_any(by_attributes):
        return by_attributes, ("%d of %d model variables: %s are non-trainable weights of built-in layers"
                               % (len(by_attributes), len(var_nodes), ", ".join(paths[i] for i in sorted(frozen)[:4])))
    spec = fits[0]
    shapes = [bundle.shapes[graph.value_key(n)] for n in var_nodes]
    counts = [k for k in range(len(var_nodes) + 1)
              if len(positional_layout(spec, gen, base, shapes[:k], ["float32"] * k)) == len(tensors)]
    if counts:
        raise MappingError(
            "%s: %s %s over %d model variables should have %d optimizer variables, the file has %d: the optimizer "
            "was built over %d of them (the trainable ones), but neither the slots' names nor the layers' "
            "attributes prove which %d; pass variables=... (CLI --variables) with the model's trainable variables"
            % (origin, gen, spec.name, len(var_nodes), len(positional_layout(spec, gen, base, shapes,
                                                                                ["float32"] * len(shapes))),
               len(tensors), counts[0], counts[0]))
    return var_nodes, None


def _is_tracked_list(name, generation):
    return name in GENERIC_TRACKED or any(name in s.tracked.get(generation, {}) for s in SPECS.values())


def _base_layout_config(config, lists, children):
    """The generic layout switches (EMA, accumulation, schedule), read off the object graph."""
    layout = dict(config)
    layout["use_ema"] = bool(lists.get("_model_variables_moving_average"))
    layout["gradient_accumulation_steps"] = 2 if lists.get("_accumulated_gradients") else None
    if "_learning_rate" in children:
        layout["learning_rate"] = 0.0
    elif not isinstance(layout.get("learning_rate"), dict):
        layout["learning_rate"] = {"class_name": "a learning-rate schedule (not stored in the checkpoint)"}
    return layout


def _fitting_layouts(spec, gen, base, present, nonempty, variables, tensors):
    """Configs (one per distinct layout) whose replayed build order has the file's count and shapes."""
    table = spec.tracked[gen]
    low, high = {table[n] for n in nonempty}, {table[n] for n in present}
    fixed = {k: v for k, v in base.items() if k in LAYOUT_FLAGS}
    found = {}
    for flags in flag_configs(fixed):
        trial = dict(base, **flags)
        entries = positional_layout(spec, gen, trial, [v.shape for v in variables], [v.dtype for v in variables])
        slots = {e.name for e in entries if e.kind == "slot"} - set(GENERIC_TRACKED.values())
        if not low <= slots <= high or len(entries) != len(tensors):
            continue
        if all(tuple(e.shape) == tuple(t.shape) for e, (_, t) in zip(entries, tensors)):
            found.setdefault(tuple(entries), trial)
    return list(found.values())


def _accumulation_iterations(state, config):
    """Keras 3 gradient accumulation: the stored counter counts batches, `iterations` applied updates."""
    keys = state.source["keys"]
    counter = int(state.iterations)
    state.extra["gradient_accumulation_iterations"] = np.asarray(counter, dtype=np.int64)
    keys["extra/gradient_accumulation_iterations"] = keys.get("iterations")
    steps = config.get("gradient_accumulation_steps")
    if steps:
        state.iterations = counter // int(steps)
    else:
        state.iterations = None
        state.warnings.append(
            "the optimizer accumulates gradients over a number of steps the checkpoint does not record; "
            "iterations (applied updates) = the stored batch counter %d // steps: pass "
            "config={'gradient_accumulation_steps': N}" % counter)


def _order_proven_by_graph(state, gen, graph, var_nodes, opt_items):
    """Where the object graph itself proves the build order, drop attach_positional's shape warning.

    Keras 3 lists the variables its optimizer was built over (`_trainable_variables`, in build
    order); tf_keras 2.11+ names every slot after its variable (`Adam/m/hidden/kernel`).
    """
    mapping = state.source.get("mapping") or {}
    if mapping.get("proven_by_shapes", True):
        return
    if gen == "keras3":
        how = "the optimizer's _trainable_variables list"
    else:
        keys = state.source.get("keys", {})
        full = {graph.value_key(n): _full_name(graph, n) or "" for n in opt_items}
        names = [_full_name(graph, n) for n in var_nodes]
        for var, name in zip(state.variables, names):
            slot_keys = [k for k in (keys.get("slots/%s/%s" % (var.name, slot)) for slot in state.slots.get(var.name, {}))
                         if k]
            if not name or not slot_keys or not all(full.get(k, "").endswith("/" + name) for k in slot_keys):
                return
        how = "the slots' names (each names its variable)"
    mapping["proven_by"] = how
    state.warnings = [w for w in state.warnings if "build order; some model variables share a shape" not in w]


def _confirm_by_lists(state, spec, gen, graph, lists, origin):
    """Check the replayed order against the per-slot lists (`_momentums/i` is variable i's)."""
    table = dict(GENERIC_TRACKED, **spec.tracked.get(gen, {}))
    keys = state.source["keys"]
    checked = 0
    for name, items in lists.items():
        if name not in table or len(items) != len(state.variables):
            continue  # e.g. Muon's adam_velocities covers only some variables
        for var, nid in zip(state.variables, items):
            want = keys.get("slots/%s/%s" % (var.name, table[name]))
            if want is None:
                continue  # a placeholder the generation keeps outside its variables (Adafactor r/c)
            got = graph.value_key(nid)
            if got != want:
                raise MappingError("%s: the object graph lists %s as %s[%d] (%s of %s), but the build order puts "
                                   "%s there; the checkpoint's variable order is not the model's"
                                   % (origin, got, name, items.index(nid), table[name], var.name, want))
            checked += 1
    state.source["mapping"]["confirmed_by_object_graph"] = checked


FORMAT = TfCheckpointFormat()


# == writing ==========================================================================================
# The writer builds the TrackableObjectGraph itself (no Keras at runtime) and saves the bundle with
# `tf.raw_ops.SaveV2`. Each target generation's optimizer object is laid out as the real version lays
# it out (LAYOUTS §1.2, §2.2, §3.3, §5.2); the model's variables come from the source's `ModelPayload`.

SLOT_EDGE = ".OPTIMIZER_SLOT"
ROOTS = ("save_weights", "checkpoint")  # `model.save_weights` / `tf.train.Checkpoint(model=, optimizer=)`
LOSS_SCALE_KEYS = {v: k for k, v in LOSS_SCALE_CHILDREN.items()}  # canonical -> child of `loss_scale`


def _escape(name):
    """TF's escaping of one object name inside a checkpoint key (`.` -> `..`, `/` -> `.S`)."""
    return name.replace(".", "..").replace("/", ".S")


class GraphWriter:
    """A TrackableObjectGraph under construction, plus the tensor of every variable node.

    Nodes are created with `node()`, linked with `link(parent, name, child)`; `variable()` makes a
    node holding a value. `save(prefix)` names every value by its shortest object path (what TF
    itself does), names slot variables `<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot>`,
    and writes the bundle with the serialized graph under `_CHECKPOINTABLE_OBJECT_GRAPH`.
    """

    def __init__(self, proto=None, values=None):
        from tensorflow.core.protobuf import trackable_object_graph_pb2
        self.proto = proto if proto is not None else trackable_object_graph_pb2.TrackableObjectGraph()
        if proto is None:
            self.proto.nodes.add()  # the root
        self.values = dict(values or {})  # node id -> numpy array, or a callable returning one
        self.fixed = {}  # node id -> checkpoint key kept from a copied graph
        self.full_names = {}

    def node(self):
        self.proto.nodes.add()
        return len(self.proto.nodes) - 1

    def link(self, parent, name, child):
        ref = self.proto.nodes[parent].children.add()
        ref.node_id, ref.local_name = child, str(name)
        return child

    def variable(self, value, full_name, parent=None, name=None):
        node_id = self.node()
        self.values[node_id] = value
        self.full_names[node_id] = full_name
        if parent is not None:
            self.link(parent, name, node_id)
        return node_id

    def slot(self, optimizer, original, slot_name, value, full_name):
        node_id = self.variable(value, full_name)
        ref = self.proto.nodes[optimizer].slot_variables.add()
        ref.original_variable_node_id, ref.slot_name, ref.slot_variable_node_id = original, slot_name, node_id
        return node_id

    def list_node(self, parent, name, items):
        node_id = self.link(parent, name, self.node())
        for i, item in enumerate(items):
            self.link(node_id, str(i), item)
        return node_id

    def _paths(self):
        paths, frontier = {0: ""}, [0]
        while frontier:
            nxt = []
            for node_id in frontier:
                for c in self.proto.nodes[node_id].children:
                    if c.node_id not in paths:
                        prefix = paths[node_id]
                        paths[c.node_id] = prefix + "/" + _escape(c.local_name) if prefix else _escape(c.local_name)
                        nxt.append(c.node_id)
            frontier = nxt
        return paths

    def _keys(self):
        paths = self._paths()
        keys = dict(self.fixed)
        for node_id, node in enumerate(self.proto.nodes):
            for s in node.slot_variables:
                if s.original_variable_node_id not in paths or node_id not in paths:
                    raise FormatError(None, "slot %r hangs off an object the graph cannot reach" % s.slot_name)
                keys[s.slot_variable_node_id] = "%s/%s/%s/%s" % (paths[s.original_variable_node_id], SLOT_EDGE,
                                                                 paths[node_id], _escape(s.slot_name))
        for node_id in self.values:
            if node_id not in keys:
                if node_id not in paths:
                    raise FormatError(None, "variable node %d is unreachable from the root" % node_id)
                keys[node_id] = paths[node_id]
        return {n: k if k.endswith(VALUE_SUFFIX) else k + VALUE_SUFFIX for n, k in keys.items()}

    def save(self, prefix, progress=None):
        keys = self._keys()
        for node_id, key in keys.items():
            node = self.proto.nodes[node_id]
            if not node.attributes:
                attr = node.attributes.add()
                attr.name, attr.full_name, attr.checkpoint_key = "VARIABLE_VALUE", self.full_names.get(node_id, ""), key
        items = [(keys[node_id], self.values[node_id]) for node_id in self.values]
        items.append((GRAPH_KEY, self.proto.SerializeToString(deterministic=True)))
        write_bundle(prefix, items, progress)


# -- the model part ----------------------------------------------------------------------------------
def model_paths(model, where):
    """Each payload weight's object path under a Keras 2 model (`layer_with_weights-K/kernel`).

    Checkpoint and SavedModel payloads record their paths; otherwise the K-th layer that has
    weights (the payload's `layers` list, or the K-th distinct `<layer>/` prefix of the weight
    names, e.g. TF1 `variable_scope`s) becomes `layer_with_weights-K` and the last name part the
    attribute (`hidden/kernel:0` -> `kernel`), which is how Keras 2 layers name their variables.
    """
    extra = model.extra or {}
    if extra.get("paths"):
        return list(extra["paths"])
    names = [strip(n) for n, _, _ in model.weights]
    groups = []
    if extra.get("layers"):
        for layer in extra["layers"]:
            if layer.get("weights"):
                groups.append(len(layer["weights"]))
    else:
        prefixes = []
        for name in names:
            head = name.rpartition("/")[0]
            if not prefixes or prefixes[-1][0] != head:
                prefixes.append([head, 0])
            prefixes[-1][1] += 1
        groups = [n for _, n in prefixes]
    if sum(groups) != len(names):
        raise FormatError(where, "cannot lay out the model's %d weights by layer" % len(names))
    paths, i = [], 0
    for k, count in enumerate(groups):
        for _ in range(count):
            paths.append("layer_with_weights-%d/%s" % (k, names[i].rpartition("/")[2]))
            i += 1
    if len(set(paths)) != len(paths):
        raise FormatError(where, "two model weights would share the object path %s"
                          % sorted({p for p in paths if paths.count(p) > 1})[0])
    return paths


def strip(name):
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def trainable_nodes(model, state, where):
    """Indices of the payload's trainable weights, checked against the state's variables (count, shapes)."""
    trainable = [i for i, (_, _, flag) in enumerate(model.weights) if flag]
    got = [tuple(np.shape(model.weights[i][1])) for i in trainable]
    want = [tuple(v.shape) for v in state.variables]
    if got != want:
        raise FormatError(where, "the model's trainable weights %s do not match the optimizer state's variables %s"
                          % (got[:6], want[:6]))
    return trainable


def _keras3_layout(model, state, where):
    """(the Keras 3 model rebuilt from the source's Keras 2 config, the state's variables in its
    `trainable_variables` order), or (None, None) where the source has no such config and every
    weight is trainable (then the weights go under the optimizer only, see `_add_keras3_model`)."""
    from . import keras3_model as k3m
    from .keras_model import is_keras3_config
    frozen = [name for name, _, trainable in model.weights if not trainable]
    keras2 = isinstance(model.config, dict) and not is_keras3_config(model.config, model.keras_version)
    if keras2 or (frozen and isinstance(model.config, dict)):  # a Keras 3 model only where it has to be placed
        try:
            rebuilt = k3m.for_payload(model, where)
        except FormatError as e:
            if not frozen:
                return None, None  # the trainable weights need no Keras 3 model: they hang off the optimizer
            raise FormatError(where, "%s; the model's %d non-trainable weights (%s, ...) sit under its layers in a "
                                     "Keras 3 checkpoint, which only the rebuilt model can place; build the model in "
                                     "Keras 3 and restore only the optimizer state (restore_into)"
                              % (e.problem, len(frozen), strip(frozen[0]))) from e
        return rebuilt, k3m.order_state_variables(rebuilt, model, state, where)
    if frozen:
        raise FormatError(where, "a Keras 3 checkpoint keeps non-trainable weights (%s, ...) under the model's layers, "
                                 "which only a model config can place, and the source (%s) has none; convert "
                                 "from the full-model file (.h5, .keras, SavedModel) instead"
                          % (strip(frozen[0]), model.source_format))
    return None, None


def _add_keras3_model(writer, model_node, model, state, where):
    """The Keras 3 model's variables under `model_node`; returns (state in Keras 3's variable order, the
    nodes of its trainable variables in that order).

    As real Keras 3 `tf.train.Checkpoint(model=model, optimizer=optimizer)` checkpoints lay them out
    (its object graph read back): every variable at its trackable path under the model
    (`_operations/2/moving_mean`), the trainable ones listed again in the optimizer's
    `_trainable_variables`, which is their shortest path and so names their keys. A source without
    a Keras 2 model config (a checkpoint) has trainable weights only; they hang off the optimizer alone.
    """
    rebuilt, ordered = _keras3_layout(model, state, where)
    if rebuilt is None:
        trainable = trainable_nodes(model, state, where)
        return state, [writer.variable(model.weights[i][1], strip(model.weights[i][0])) for i in trainable]
    missing = [v.path for v in rebuilt.variables if not v.checkpoint_path]
    if missing:
        raise FormatError(where, "the Keras 3 model's object graph does not reach %s" % ", ".join(missing[:3]))
    nodes = _add_variables(writer, model_node, [(v.path, model.weights[v.source][1], v.checkpoint_path)
                                                for v in rebuilt.variables])
    return dataclasses.replace(state, variables=ordered), [nodes[i] for i in rebuilt.trainable]


def _add_model(writer, parent, model, paths):
    """Variable nodes for every payload weight at its path under `parent`; returns their node ids."""
    return _add_variables(writer, parent, [(name, value, path) for (name, value, _), path in zip(model.weights, paths)])


def _add_variables(writer, parent, items):
    """Variable nodes for (full name, value, object path under `parent`); returns their node ids."""
    layer_nodes, out = {}, []
    for name, value, path in items:
        head, _, attr = path.rpartition("/")
        owner = parent
        if head:
            if head not in layer_nodes:
                owner_parent = parent
                for part in head.split("/"):
                    existing = next((c.node_id for c in writer.proto.nodes[owner_parent].children
                                     if c.local_name == part), None)
                    owner_parent = existing if existing is not None else writer.link(owner_parent, part, writer.node())
                layer_nodes[head] = owner_parent
            owner = layer_nodes[head]
        out.append(writer.variable(value, strip(name), owner, attr))
    return out


# -- the optimizer part ------------------------------------------------------------------------------
def _scalar(value, dtype):
    return np.asarray(materialize(value) if value is not None else 0, dtype=dtype)


def _v2_hypers(spec, config):
    """{name: float} of the legacy optimizer's float hyperparameters (its `_hyper`), which
    OptimizerV2 checkpoints store as variables (LAYOUTS §1.2)."""
    from ..optimizers import _accepted_config, optimizer_class
    cls = optimizer_class(spec.name, "v2")
    opt = cls.from_config(_accepted_config(cls, config))
    out = {}
    for name, value in sorted(opt._hyper.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _class_prefix(spec, generation, config):
    name = config.get("name")
    if isinstance(name, str) and name:
        return name
    cls = (spec.class_names.get(generation) or (spec.name,))[0]
    return cls.split(">")[-1]


def _write_slot_edges(writer, opt, state, spec, var_nodes, var_names, generation):
    """OptimizerV2 / TF1: each slot hangs off its model variable by a `slot_variables` edge."""
    order = [s for s in spec.slots if s in spec.names.get(generation, {})]
    prefix = _class_prefix(spec, generation, state.config)
    tf1_suffix = spec.tf1_namebased_suffixes(state.config, prefix) if generation == "tf1" else {}
    present = set(state.slot_names())
    unknown = present - set(order)
    if unknown:
        raise FormatError(None, "the %s %s optimizer keeps no slot %s" % (generation, spec.name, sorted(unknown)))
    for slot in order:  # slot-major, in slot-creation order, as `_create_slots` makes them
        own = spec.names[generation][slot]
        for var, node_id, name in zip(state.variables, var_nodes, var_names):
            value = state.slots.get(var.name, {}).get(slot)
            if value is None:
                continue
            full = ("%s/%s" % (name, tf1_suffix.get(slot, own)) if generation == "tf1"
                    else "%s/%s/%s" % (prefix, name, own))
            writer.slot(opt, node_id, own, value, full)


def _write_v2(writer, opt, state, spec, var_nodes, var_names):
    prefix = _class_prefix(spec, "v2", state.config)
    extras = dict(state.extra)
    if any(k in extras for k in LOSS_SCALE_KEYS):  # legacy LossScaleOptimizer (LAYOUTS §1.6)
        scale = writer.link(opt, "loss_scale", writer.node())
        for canonical, child in LOSS_SCALE_KEYS.items():
            if canonical in extras:
                dtype = "int64" if child == "good_steps" else "float32"
                writer.variable(_scalar(extras.pop(canonical), dtype), child, scale, child)
        writer.link(opt, "base_optimizer", writer.node())
    writer.variable(np.asarray(state.iterations or 0, np.int64), "%s/iter" % prefix, opt, "iter")
    hypers = _v2_hypers(spec, state.config)
    if isinstance(state.config.get("learning_rate"), dict):
        hypers.pop("learning_rate", None)  # a schedule is config only; `iter` drives it
    for name, value in hypers.items():
        writer.variable(np.asarray(value, np.float32), "%s/%s" % (prefix, name), opt, name)
    for canonical in list(extras):
        key = spec.extra_key("v2", canonical)
        if key is None:
            raise FormatError(None, "a legacy %s checkpoint has no place for %r" % (spec.name, canonical))
        writer.variable(_scalar(extras.pop(canonical), "float32"), "%s/%s" % (prefix, key), opt, key)
    _write_slot_edges(writer, opt, state, spec, var_nodes, var_names, "v2")


def _write_tf1(writer, opt, state, spec, var_nodes, var_names):
    for canonical, value in state.extra.items():
        key = spec.extra_key("tf1", canonical)
        if key is None:
            raise FormatError(None, "a TF1 %s checkpoint has no place for %r" % (spec.name, canonical))
        writer.variable(_scalar(value, "float32"), key, opt, key)
    _write_slot_edges(writer, opt, state, spec, var_nodes, var_names, "tf1")


def _write_positional(writer, opt, state, spec, var_nodes, generation):
    """2.11+ and Keras 3: `_variables/N` in build order, the per-slot lists, `_iterations`, ...

    Keras 3 also lists the model's variables as `_trainable_variables/K`; that is where its
    checkpoints keep them (the shortest path), so `var_nodes` must hang there for Keras 3.
    """
    layout = positional_layout(spec, generation, state.config, [v.shape for v in state.variables],
                               [v.dtype for v in state.variables])
    prefix = _class_prefix(spec, generation, state.config)
    if generation == "keras3":
        from ..optimizers.registry import keras3_prefix
        prefix = keras3_prefix(prefix) if prefix[:1].isupper() else prefix
    extras = dict(state.extra)
    scale = {k: extras.pop(k) for k in list(extras) if k in LOSS_SCALE_KEYS}
    wrapper = None
    if scale and generation == "keras3":  # the inner optimizer's layout goes one level down
        own = {k: extras.pop(k) for k in list(extras) if k in KERAS3_LSO_OUTER.values()}
        wrapper, opt = opt, writer.link(opt, "inner_optimizer", writer.node())
    named_children = {"iterations": "_iterations", "learning_rate": "_learning_rate"}
    items, lists, missing = [], {}, []
    tracked = {canonical: attr for attr, canonical in dict(GENERIC_TRACKED, **spec.tracked.get(generation, {})).items()}
    for entry in layout:
        if entry.kind == "slot":
            var = state.variables[entry.var_index]
            value = state.slots.get(var.name, {}).get(entry.name)
            label = "%s of %s" % (entry.name, var.name)
            full = ("%s/%s_%s" % (prefix, var.name.replace("/", "_"), entry.name) if generation == "keras3"
                    else "%s/%s/%s" % (prefix, spec.names[generation].get(entry.name, entry.name), var.name))
        elif entry.name == "iterations":
            value = extras.pop("gradient_accumulation_iterations", None)
            value = np.asarray(state.iterations or 0 if value is None else materialize(value), np.int64)
            label, full = "iterations", "%s/iteration" % prefix if generation == "keras3" else "iteration"
        else:
            value = extras.pop(entry.name, None)
            label, full = entry.name, "%s/%s" % (prefix, entry.name)
        if value is None:
            missing.append(label)
            continue
        array_dtype = entry.dtype if entry.kind == "extra" else None
        if tuple(np.shape(value)) != tuple(entry.shape):
            raise FormatError(None, "%s has shape %s, the %s build order of %s expects %s"
                              % (label, tuple(np.shape(value)), generation, spec.name, tuple(entry.shape)))
        node_id = writer.variable(_scalar(value, array_dtype) if array_dtype else value, full)
        items.append(node_id)
        if entry.kind == "slot" and entry.name in tracked:
            lists.setdefault(tracked[entry.name], {})[entry.var_index] = node_id
        elif entry.kind == "extra":
            writer.link(opt, named_children.get(entry.name, "_" + entry.name), node_id)
    if missing:
        raise FormatError(None, "%d of %d %s %s optimizer variables are not in the state: %s"
                          % (len(missing), len(layout), generation, spec.name, ", ".join(missing[:5])))
    writer.list_node(opt, "_variables", items)
    if generation == "keras3":
        writer.list_node(opt, "_trainable_variables", var_nodes)
    for attr, by_var in lists.items():
        # per-slot lists are indexed by model variable; where the generation keeps no such slot for a
        # variable (Adafactor's r/c of a vector) the real optimizer lists an int32 placeholder there
        nodes = [by_var[i] if i in by_var else writer.variable(np.asarray(0, np.int32), "%s/%d" % (attr, i))
                 for i in range(len(var_nodes))]
        writer.list_node(opt, attr, nodes)
    for canonical, value in extras.items():
        key = spec.extra_key(generation, canonical)
        if canonical == "current_learning_rate":
            key = "_current_learning_rate"
        elif key is None and canonical == "learning_rate":
            key = "_learning_rate"
        if key is None:
            raise FormatError(None, "a %s %s checkpoint has no place for %r" % (generation, spec.name, canonical))
        writer.variable(_scalar(value, "float32"), "%s/%s" % (prefix, key.lstrip("_")), opt, key)
    if wrapper is not None:
        _write_keras3_loss_scale(writer, wrapper, dict(own, **scale), var_nodes)
    elif scale:
        node = writer.link(opt, "loss_scale", writer.node())
        for canonical, value in scale.items():
            child = LOSS_SCALE_KEYS[canonical]
            writer.variable(_scalar(value, "int64" if child == "good_steps" else "float32"), child, node, child)


# Keras 3 LossScaleOptimizer's own variables, in the order of its `_variables` list: child name ->
# (canonical extra, dtype, value when the state has none: the wrapper's unused iteration and learning rate).
KERAS3_LSO_OUTER = {"_iterations": "loss_scale_optimizer_iterations", "_learning_rate":
                    "loss_scale_optimizer_learning_rate", "step_counter": "loss_scale_good_steps",
                    "dynamic_scale": "loss_scale"}
_KERAS3_LSO_VARIABLES = {"_iterations": ("int64", 0, "iteration"), "_learning_rate": ("float32", 0.0, "learning_rate"),
                         "step_counter": ("int64", 0, "step_counter"), "dynamic_scale": ("float32", None, "dynamic_scale")}


def _write_keras3_loss_scale(writer, opt, values, var_nodes):
    """Keras 3's LossScaleOptimizer under `opt` (its inner optimizer already at `inner_optimizer`).

    As Keras 3.15 checkpoints it: the wrapper is an optimizer of its own with `_iterations` and
    `_learning_rate` (never updated: the inner optimizer counts the steps), `step_counter` and
    `dynamic_scale`, those four listed in its `_variables`, and the model's variables in its
    `_trainable_variables` like the inner optimizer's.
    """
    items = []
    for child, canonical in KERAS3_LSO_OUTER.items():
        dtype, default, short = _KERAS3_LSO_VARIABLES[child]
        value = values.get(canonical, default)
        if value is None:
            raise FormatError(None, "the Keras 3 LossScaleOptimizer's %s is not in the state" % canonical)
        items.append(writer.variable(_scalar(value, dtype), "loss_scale_optimizer/%s" % short, opt, child))
    writer.list_node(opt, "_variables", items)
    writer.list_node(opt, "_trainable_variables", var_nodes)


def add_optimizer(writer, opt, state, var_nodes, var_names):
    """Lay out `state` (already in its target generation) under the optimizer node `opt`."""
    spec = get_spec(state.optimizer)
    if state.generation == "v2":
        _write_v2(writer, opt, state, spec, var_nodes, var_names)
    elif state.generation == "tf1":
        _write_tf1(writer, opt, state, spec, var_nodes, var_names)
    elif state.generation in ("experimental", "keras3"):
        _write_positional(writer, opt, state, spec, var_nodes, state.generation)
    else:
        raise FormatError(None, "TF checkpoints hold no %s optimizer state (Keras v1 optimizers save none)"
                          % state.generation)
