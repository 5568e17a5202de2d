"""TF1 name-based checkpoints (`tf.compat.v1.train.Saver`): no object graph, names only.

Keys are variable names: model variables (`hidden/kernel`), their slots
`<var>/<OptimizerName>`, `<var>/<OptimizerName>_1`, ... in slot-creation order (the spec's
`tf1_namebased_suffixes`), non-slot state such as `beta1_power`, and `global_step` when
one was passed to `minimize`. The model's variable order is taken from the `trainable_variables`
collection of the `.meta` graph written beside the checkpoint (parsed as a protobuf; the graph is
never imported or run); without it, key order is used and the state says so.
"""

import os
import re

import numpy as np

from .._tensorflow import import_tensorflow
from ..errors import FormatError, MappingError, UnsupportedFormatError
from ..optimizers.registry import SPECS, get_spec
from ..optimizers.spec import flag_configs
from ..schema import OptimizerState, VariableSpec, materialize
from .base import Format, ModelPayload
from .mapping import attach_named, canonical_config, check_same_slots, strip_device_suffix
from .tf_bundle import CHECKSUM_KIND, GRAPH_KEY, Bundle, looks_object_based, resolve_prefix, write_bundle
from .tf_checkpoint import pick_spec, tf1_iterations

STEP_KEY = "global_step"
_NUMBERED = re.compile(r"^(.*?)(?:_(\d+))?$")


class Tf1CheckpointFormat(Format):
    """TF1 name-based checkpoints, read and written.

    The writer keys every tensor by variable name, as `tf.compat.v1.train.Saver` does: the
    model's weights under the names the source gives them (`hidden/kernel`; checkpoint and
    SavedModel sources give the variables' own names, not object paths), each slot as
    `<var>/<Name>`, `<var>/<Name>_1`, ... with the TF1 optimizer's default name (`Adam`), the
    non-slot variables (`beta1_power`, ...) and `global_step` = iterations. Beside it goes
    `<prefix>.meta`, a MetaGraphDef declaring those variables (trainable ones in the model's
    order) with a Saver, as the Saver itself writes one: it records the variable order and
    lets `tf.compat.v1.train.import_meta_graph` rebuild the variables.
    """

    name = "tf1_checkpoint"
    checksums = CHECKSUM_KIND
    description = "TF1 name-based checkpoint (tf.compat.v1.train.Saver)"
    can_write = True
    needs_model = True
    generations = ("tf1",)
    extensions = ()

    def read_model(self, path):
        prefix = resolve_prefix(path)
        if prefix is None:
            raise FormatError(path, "not a TensorFlow checkpoint (no .index file and no `checkpoint` file)")
        bundle = Bundle(prefix, origin=path)
        slots, others = _split_keys(bundle.keys())
        slotted = {var for var, _, _ in slots}
        candidates = [k for k in others if k != STEP_KEY and bundle.shapes[k] != () and k != GRAPH_KEY]
        model_keys = _ordered([k for k in candidates if not slotted or k in slotted], prefix)
        rest = [k for k in candidates if k not in set(model_keys)]
        weights = [(k, bundle.tensor(k), True) for k in model_keys]
        weights += [(k, bundle.tensor(k), False) for k in rest if slotted]
        if not weights:
            raise FormatError(path, "the checkpoint holds no model variables")
        return ModelPayload(weights, source_format=self.name, source_path=str(path))

    def stored_form(self, state):
        """What the Saver checkpoint of `state` stores for the optimizer (see `Format.stored_form`): the slot
        keys `<var>/<Name>[_k]` with the TF1 class's default name, the non-slot keys and `global_step`;
        no class and no config."""
        from ..candidates import tensor_token
        spec = get_spec(state.optimizer)
        suffixes = spec.tf1_namebased_suffixes(state.config, _default_name(spec))
        return {"generation": state.generation, "global_step": state.iterations,
                "slot keys": sorted(("%s/%s" % (var, suffixes.get(slot, slot)), tensor_token(t))
                                    for var, per in state.slots.items() for slot, t in per.items()),
                "non-slot keys": sorted((spec.extra_key("tf1", k) or k, tensor_token(t)) for k, t in state.extra.items())}

    def write(self, state, path, model=None, progress=None, **options):
        """Write `state` (generation tf1) and the model's weights as Saver checkpoint `path` (+ `.meta`)."""
        path = str(path)
        if state.generation != "tf1":
            raise FormatError(path, "a TF1 name-based checkpoint holds tf1 optimizer state, not %s; convert with "
                                    "to='tf1'" % state.generation)
        if model is None:
            raise FormatError(path, "writing a TF1 checkpoint needs the source model's weights; the source holds none")
        spec = get_spec(state.optimizer)
        trainable = [i for i, (_, _, flag) in enumerate(model.weights) if flag]
        if [tuple(np.shape(model.weights[i][1])) for i in trainable] != [tuple(v.shape) for v in state.variables]:
            raise FormatError(path, "the model's trainable weights do not match the optimizer state's variables %s"
                              % [tuple(v.shape) for v in state.variables][:6])
        names = [_strip(n) for n, _, _ in model.weights]
        suffixes = spec.tf1_namebased_suffixes(state.config, _default_name(spec))
        tensors = [(name, value, i in set(trainable)) for i, (name, (_, value, _)) in enumerate(zip(names, model.weights))]
        for slot in suffixes:
            for i, var in zip(trainable, state.variables):
                value = state.slots.get(var.name, {}).get(slot)
                if value is not None:
                    tensors.append(("%s/%s" % (names[i], suffixes[slot]), value, False))
        unknown = {s for per in state.slots.values() for s in per} - set(suffixes)
        if unknown:
            raise FormatError(path, "the TF1 %s optimizer keeps no slot %s" % (spec.name, sorted(unknown)))
        for canonical, value in state.extra.items():
            key = spec.extra_key("tf1", canonical)
            if key is None:
                raise FormatError(path, "a TF1 %s checkpoint has no place for %r" % (spec.name, canonical))
            tensors.append((key, np.asarray(materialize(value), np.float32), False))
        if state.iterations is not None:
            tensors.append((STEP_KEY, np.asarray(state.iterations, np.int64), False))
        keys = [k for k, _, _ in tensors]
        if len(set(keys)) != len(keys):
            raise FormatError(path, "two tensors would share the key %s" % sorted({k for k in keys if keys.count(k) > 1})[0])
        save_bundle(path, [(k, v) for k, v, _ in tensors], progress)
        write_meta_graph(path + ".meta", [(k, tuple(np.shape(v)), np.asarray(v).dtype if not hasattr(v, "dtype")
                                           else np.dtype(v.dtype), flag) for k, v, flag in tensors])

    def validate(self, path):
        prefix = resolve_prefix(path)
        return prefix is not None and not looks_object_based(prefix)

    def read(self, path, optimizer=None, variables=None, config=None, **options):
        prefix = resolve_prefix(path)
        if prefix is None:
            raise FormatError(path, "not a TensorFlow checkpoint (no .index file and no `checkpoint` file)")
        bundle = Bundle(prefix, origin=path)
        if GRAPH_KEY in bundle:
            raise UnsupportedFormatError(path, "an object-based checkpoint; read it with format='tf_checkpoint'")
        config = canonical_config(config)
        origin = str(path)
        slots, others = _split_keys(bundle.keys())
        opt_name, spec, suffix_to_slot, candidates = _identify(slots, others, optimizer, config, origin)
        state = OptimizerState(optimizer=spec.name, generation="tf1", config=config, candidates=candidates)
        state.source.update(format=self.name, path=origin, prefix=prefix, optimizer_name=opt_name)
        keys = state.source.setdefault("keys", {})

        extras = spec.extras.get("tf1", {})
        power_key = None
        for key in others:
            if key in extras:
                state.extra[extras[key]] = bundle.tensor(key)
                keys["extra/%s" % extras[key]] = key
                power_key = key if extras[key] == "beta1_power" else power_key
        if STEP_KEY in bundle:
            state.iterations = bundle.counter(STEP_KEY)
            keys["iterations"] = STEP_KEY
        tf1_iterations(state, bundle, power_key, origin)

        model_keys = [k for k in others if k not in extras and k != STEP_KEY]
        if slots:
            model_keys = [k for k in model_keys if k in {var for var, _, _ in slots}]
        state.variables = _variables(bundle, model_keys, prefix, variables, origin, state.warnings)
        order = {v: spec_v.name for v, spec_v in zip(_ordered(model_keys, prefix, variables), state.variables)}
        entries = [(order[var], suffix_to_slot[suffix], key, bundle.tensor(key)) for var, suffix, key in slots]
        attach_named(state, entries, origin)
        check_same_slots(state, origin)
        for var, per in state.slots.items():
            for slot, tensor in per.items():
                if tuple(tensor.shape) != tuple(state.variable(var).shape):
                    raise FormatError(origin, "slot %s of %s has shape %s, the variable %s"
                                      % (slot, var, tuple(tensor.shape), tuple(state.variable(var).shape)))
        return state


def _split_keys(keys):
    """([(variable key, suffix, slot key)], other keys): a slot key is `<another key>/<suffix>`."""
    present = set(keys)
    slots, others = [], []
    for key in keys:
        head, sep, tail = key.rpartition("/")
        if sep and head in present:
            slots.append((head, tail, key))
        else:
            others.append(key)
    return slots, others


def _default_name(spec):
    """The TF1 optimizer's default `name=` (`AdamOptimizer` -> `Adam`)."""
    cls = spec.class_names["tf1"][0]
    return cls[: -len("Optimizer")] if cls.endswith("Optimizer") else cls


def _identify(slots, others, hint, config, origin):
    """(optimizer name in the keys, spec, {suffix: canonical slot}, candidates) from the key suffixes
    (candidates: the algorithms the keys cannot tell apart, see `pick_spec`)."""
    suffixes = {suffix for _, suffix, _ in slots}
    bases = {_NUMBERED.match(s).group(1) for s in suffixes}
    if len(bases) > 1:
        raise MappingError("%s: slot keys of more than one optimizer (%s); this reader expects one"
                           % (origin, ", ".join(sorted(bases))))
    base = next(iter(bases), None)
    fits, tables = [], {}
    named_by = {_default_name(s) for s in SPECS.values() if "tf1" in s.names and s.names["tf1"]}
    for spec in SPECS.values():
        if "tf1" not in spec.names or (hint and spec is not get_spec(hint)):
            continue
        if hint and base in named_by and base != _default_name(spec):
            continue  # the keys carry another optimizer's default name
        name = base if (hint or base is None) else _default_name(spec)
        if base is not None and name != base:
            continue
        for flags in flag_configs({k: v for k, v in config.items()}):
            table = spec.tf1_namebased_suffixes(flags, name)
            if set(table.values()) == suffixes:
                tables[spec.name] = {suffix: slot for slot, suffix in table.items()}
                fits.append(spec)
                break
    extras = [s for s in fits if s.extras.get("tf1") and not set(s.extras["tf1"]) <= set(others)]
    fits = [s for s in fits if s not in extras]
    if not fits and base is not None and not hint:
        raise MappingError("%s: slot keys `<var>/%s...` do not match the default name of any TF1 optimizer; "
                           "pass optimizer=... (CLI --optimizer)" % (origin, base))
    spec, candidates = pick_spec(fits, "tf1", sorted(suffixes), origin, hint, what="slot key suffixes")
    return base or _default_name(spec), spec, tables.get(spec.name, {}), candidates


def _ordered(model_keys, prefix, hint=None):
    """Model variable keys in creation order: the `variables` hint when it names the keys, else
    the `.meta` trainable_variables collection, else key order."""
    if hint is not None and sorted(v.name for v in hint) == sorted(model_keys):
        return [v.name for v in hint]
    order = _meta_order(prefix)
    if order is None:
        return list(model_keys)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(model_keys, key=lambda k: (rank.get(k, len(rank)), k))


def _meta_order(prefix):
    """Variable names of the `.meta` graph's trainable_variables collection (None without a .meta).

    A `.meta` that is present but unreadable is corrupt input, not a missing order.
    """
    path = prefix + ".meta"
    if not os.path.isfile(path):
        return None
    import_tensorflow()  # quietly, before its protobuf modules import it
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        with open(path, "rb") as f:
            meta.ParseFromString(f.read())
        out = []
        for raw in meta.collection_def["trainable_variables"].bytes_list.value:
            var = variable_pb2.VariableDef()
            var.ParseFromString(raw)
            out.append(strip_device_suffix(var.variable_name))
    except Exception as e:  # google.protobuf DecodeError, OSError
        raise FormatError(path, "not a readable MetaGraphDef (%s); remove it and pass variables=... "
                                "for the model's variable order" % (str(e).splitlines() or [type(e).__name__])[0]) from e
    return out or None


def _variables(bundle, model_keys, prefix, hint, origin, warnings):
    ordered = _ordered(model_keys, prefix, hint)
    found = [VariableSpec(k, bundle.shapes[k], bundle.numpy_dtype(k).name) for k in ordered]
    if hint is not None:
        if [tuple(v.shape) for v in hint] != [tuple(v.shape) for v in found]:
            raise MappingError("%s: variables= gives shapes %s, the checkpoint's variables (%s) have %s"
                               % (origin, [tuple(v.shape) for v in hint], ", ".join(ordered),
                                  [tuple(v.shape) for v in found]))
        return list(hint)
    if _meta_order(prefix) is None and len(found) > 1:
        warnings.append("no readable %s.meta: model variables are in key (alphabetical) order, which need not "
                        "be the model's; pass variables=... for the real order" % os.path.basename(prefix))
    return found


def _strip(name):
    return strip_device_suffix(name)


def save_bundle(prefix, tensors, progress=None):
    """Write (key, array or LazyTensor) pairs as a tensor bundle (no object graph), a batch at a time."""
    write_bundle(prefix, tensors, progress)


def write_meta_graph(path, variables):
    """A MetaGraphDef declaring `variables` ((name, shape, dtype, trainable), in order) and a Saver.

    Variables are zero-initialised graph variables, so the file stays small whatever their size;
    `global_step` joins the GLOBAL_STEP collection.
    """
    import tensorflow as tf
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        made = []
        for name, shape, dtype, trainable in variables:
            collections = [v1.GraphKeys.GLOBAL_VARIABLES]
            if name == STEP_KEY:
                collections.append(v1.GraphKeys.GLOBAL_STEP)
            made.append(v1.get_variable(name, shape, tf.as_dtype(dtype), initializer=v1.zeros_initializer(),
                                        trainable=trainable, use_resource=False, collections=collections))
            if trainable:
                graph.add_to_collection(v1.GraphKeys.TRAINABLE_VARIABLES, made[-1])
        saver = v1.train.Saver(made, sharded=False)
        saver.export_meta_graph(path, clear_devices=True, strip_default_attrs=True)


FORMAT = Tf1CheckpointFormat()
