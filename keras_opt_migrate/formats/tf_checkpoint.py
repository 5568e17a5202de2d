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
Where the file cannot tell algorithms apart, a `MappingError` lists the candidates.
"""

import dataclasses
import math
import re

import numpy as np

from ..errors import FormatError, MappingError, UnsupportedFormatError
from ..optimizers.registry import SPECS, get_spec
from ..optimizers.spec import GENERIC_TRACKED, LAYOUT_FLAGS, flag_configs, positional_layout, slot_sets
from ..schema import OptimizerState, VariableSpec
from .base import Format
from .mapping import attach_named, attach_positional, canonical_config
from .tf_bundle import Bundle, key_path, looks_object_based, resolve_prefix

# Loss-scale state of the wrappers, under the schema's canonical extra names.
LOSS_SCALE_CHILDREN = {"current_loss_scale": "loss_scale", "good_steps": "loss_scale_good_steps"}  # legacy, V3
KERAS3_LOSS_SCALE = {"dynamic_scale": "loss_scale", "step_counter": "loss_scale_good_steps"}
_LAYER = re.compile(r"^layer_with_weights-(\d+)$")


@dataclasses.dataclass
class _Optimizer:
    """Where the optimizer's own state sits in the object graph, and what wraps it."""

    generation: str
    node: int
    wrapper: str = None
    step_key: str = None  # TFOptimizer's global_step
    extras: dict = dataclasses.field(default_factory=dict)  # canonical -> checkpoint key


class TfCheckpointFormat(Format):
    name = "tf_checkpoint"
    description = "TensorFlow object-based checkpoint (save_weights TF format, tf.train.Checkpoint)"

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


def read_object_graph(bundle, graph, origin, *, optimizer=None, variables=None, config=None, rename=None,
                      file_config=None):
    """The `OptimizerState` of an object-based checkpoint (also used for SavedModel variables).

    optimizer: algorithm hint (user or file metadata); variables: model variables hint;
    config: user config hint; file_config: the optimizer config a file's metadata holds;
    rename: function object path -> model variable name (SavedModel layer names).
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
                                 optimizer, variables, config)
    else:
        state = _read_named(bundle, graph, origin, found, model_root, opt_node, name_of,
                            optimizer, variables, config)
    keys = state.source.setdefault("keys", {})
    for canonical, key in found.extras.items():
        state.extra[canonical] = bundle.tensor(key)
        keys["extra/%s" % canonical] = key
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
def _namer(graph, paths, rename):
    def name_of(node_id):
        path = paths.get(node_id) or key_path(graph.value_key(node_id) or "node_%d" % node_id)
        return rename(path) if rename else path
    return name_of


def _model_variables(graph, model_root, opt_node):
    """Variable nodes of the model in trainable build order: `layer_with_weights-K` in K order,
    then each layer's variables in the order the layer tracked them."""
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
    return ordered


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
    """The one algorithm among `fits`, the user's hint (checked), or a MappingError naming the candidates."""
    if hint:
        spec = get_spec(hint)
        if spec not in fits:
            raise MappingError(
                "%s: optimizer=%r does not fit the file: its %s state keeps %s %s; algorithms that fit: %s"
                % (origin, hint, generation, what, sorted(observed) or "none", _names(fits) or "none"))
        return spec
    fits = [s for s in fits if s.extras.get(generation)] or fits  # an extra they keep decides
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise MappingError("%s: no known %s optimizer keeps the %s %s; pass optimizer=... (CLI --optimizer) "
                           "if it is a registered algorithm" % (origin, generation, what, sorted(observed)))
    raise MappingError(
        "%s: the file cannot tell %s apart (%s state with %s %s and nothing else to distinguish them); "
        "pass optimizer=<one of them> (CLI --optimizer)"
        % (origin, _names(fits), generation, what, sorted(observed) or "none"))


def _names(specs):
    return ", ".join(s.name for s in specs)


# -- slot edges: OptimizerV2 and TF1 ----------------------------------------------------------------
def _read_named(bundle, graph, origin, found, model_root, opt_node, name_of, hint, var_hint, config):
    gen, node = found.generation, found.node
    table = graph.slot_variables(node)
    children = graph.children(node)
    observed = {slot for _, slot, _ in table}
    spec = pick_spec(candidate_specs(gen, observed, observed, children), gen, observed, origin, hint)
    state = OptimizerState(optimizer=spec.name, generation=gen, config=config)
    keys = state.source.setdefault("keys", {})
    # Hyperparameter variables (OptimizerV2 only has them), `iter`, and non-slot extras.
    for name, child in children.items():
        key = graph.value_key(child)
        if not key or bundle.shapes.get(key) != ():
            continue
        canonical = spec.canonical_extra(gen, name)
        if name == "iter":
            state.iterations = int(bundle.scalar(key))
            keys["iterations"] = key
        elif canonical:
            found.extras[canonical] = key
        elif gen == "v2":
            state.config[name] = bundle.scalar(key)
            keys["config/%s" % name] = key
    if found.step_key:
        state.iterations = int(bundle.scalar(found.step_key))
        keys["iterations"] = found.step_key
    if gen == "tf1":
        tf1_iterations(state, bundle, found.extras.get("beta1_power"), origin)

    slotted = [orig for orig, _, _ in table]
    model_vars = _model_variables(graph, model_root, opt_node)
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
    if beta_1 is None or not 0 < float(beta_1) < 1:
        if state.iterations is None:
            state.warnings.append("iterations unknown: the checkpoint has no step counter; beta1_power gives it "
                                  "when beta_1 is known (pass config={'beta_1': ...})")
        return
    power = float(bundle.scalar(power_key))
    if not 0 < power < 1:
        state.warnings.append("beta1_power = %r is not in (0, 1); iterations cannot be derived from it" % power)
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
def _read_positional(bundle, graph, origin, found, model_root, opt_node, name_of, hint, var_hint, config):
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
        var_nodes = _model_variables(graph, model_root, opt_node)
    variables = _specs_for(bundle, graph, var_nodes, name_of, var_hint, origin)
    tensors = []
    for i, nid in enumerate(graph.list_items(children["_variables"])):
        key = graph.value_key(nid)
        if key is None or key not in bundle:
            raise FormatError(origin, "optimizer variable %d has no value in the checkpoint" % i)
        tensors.append((key, bundle.tensor(key)))

    base = _base_layout_config(config, lists, children)
    fits = candidate_specs(gen, present, nonempty, children, tracked=True)
    layouts = {spec.name: _fitting_layouts(spec, gen, base, present, nonempty, variables, tensors)
               for spec in fits}
    fitting = [spec for spec in fits if layouts[spec.name]] or fits
    spec = pick_spec(fitting, gen, nonempty, origin, hint, what="slot lists")
    options = layouts.get(spec.name) or [base]
    if len(options) > 1:
        raise MappingError("%s: the %s %s state fits %d different layouts; pass config= with the values of %s"
                           % (origin, gen, spec.name, len(options), ", ".join(LAYOUT_FLAGS)))

    state = OptimizerState(optimizer=spec.name, generation=gen, config=options[0], variables=variables)
    attach_positional(state, spec, gen, tensors, origin)
    _confirm_by_lists(state, spec, gen, graph, lists, origin)
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
