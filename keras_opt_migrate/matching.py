"""One variable matcher: which of someone's variables each of a file's variables is.

Every path that pairs a state's (or a file's) variables with other variables uses `match`:
restore into real tf_keras / Keras 3 optimizers and into ours, `load_into`, `diff`. A pairing
is accepted only when something proves it, tried in this order:

  1. names, normalised across generations (`:0` suffixes, leading underscores of attributes,
     the attributes Keras 3 renamed, recorded per layer class in `RENAMED_ATTRIBUTES`), equal
     or equal after dropping leading scopes (Keras 3 Sequential's `sequential/dense/kernel`
     is a Keras 2 file's `dense/kernel`); each pairing must be one-to-one;
  2. structure: object paths a checkpoint records (`layer_with_weights-N/kernel` of Keras 2
     `save_weights`, Keras 3's `_operations/N/_kernel`, nested models) resolved against the
     target model's layers (`targets(..., model=model)`);
  3. build order, only when no name matched at all, the counts agree and no two variables
     share a shape (so a wrong order would show as a shape) or the caller confirmed the order.

What is left unproven raises one `MappingError` naming exactly the variables that could not
be told apart (and the candidates of each), never a sample of those that did match.
"""

import dataclasses
import re
from typing import Any, List, Tuple

from .errors import MappingError

# Attributes Keras 3 renamed, per layer class: {class: {Keras 2 attribute: Keras 3 attribute}}.
# Keras 3's DepthwiseConv (keras/src/layers/convolutional/base_depthwise_conv.py) names its
# weight `kernel`; Keras 2's is `depthwise_kernel`. SeparableConv keeps `depthwise_kernel`.
RENAMED_ATTRIBUTES = {
    "DepthwiseConv1D": {"depthwise_kernel": "kernel"},
    "DepthwiseConv2D": {"depthwise_kernel": "kernel"},
}
# The same renames without the layer's class (variables given without their model), both ways; used
# only for what is left unpaired, and only one-to-one.
ANY_RENAMED = {a: b for table in RENAMED_ATTRIBUTES.values() for old, new in table.items()
               for a, b in ((old, new), (new, old))}
# Sub-layers Keras 3 renamed, per layer class: tf_keras' MultiHeadAttention tracks its EinsumDense
# projections as `_query_dense`, ... (its `.keras` files store them as `<mha>/_query_dense/vars/0`),
# Keras 3's as `query`, ... (variable paths `<mha>/query/kernel`). `SUBLAYER_VARIABLES` names a
# renamed sub-layer's `vars/<i>` (EinsumDense creates kernel, then bias).
RENAMED_SUBLAYERS = {
    "MultiHeadAttention": {"query_dense": "query", "key_dense": "key", "value_dense": "value",
                           "output_dense": "attention_output"},
}
SUBLAYER_VARIABLES = ("kernel", "bias")
ANY_RENAMED_SUBLAYER = {old: new for table in RENAMED_SUBLAYERS.values() for old, new in table.items()}
# Weights built-in layers create non-trainable (the optimizer never sees them), by attribute.
NON_TRAINABLE_ATTRIBUTES = {
    "BatchNormalization": ("moving_mean", "moving_variance"),
    "SyncBatchNormalization": ("moving_mean", "moving_variance"),
    "Normalization": ("mean", "variance", "count"),
}
KNOWN_NON_TRAINABLE = frozenset(a for attrs in NON_TRAINABLE_ATTRIBUTES.values() for a in attrs
                                if a.startswith("moving_"))  # unambiguous without the layer's class

_LAYER_WITH_WEIGHTS = re.compile(r"^layer_with_weights-(\d+)$")
_ROOTS = ("model", "_functional")  # components before the model's own children in checkpoint paths


def strip_suffix(name):
    """`dense/kernel:0` -> `dense/kernel`."""
    name = str(name)
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def components(name):
    """A name as a tuple of path components, without `:0` and without attributes' leading `_`."""
    return tuple(part.lstrip("_") or part for part in strip_suffix(name).split("/") if part)


def variable_name(var):
    """A live variable's name: its Keras 3 path, else its TF name without `:0`."""
    return strip_suffix(getattr(var, "path", None) or getattr(var, "_shared_name", None) or var.name)


def _shape(x):
    return tuple(int(d) for d in x.shape)


@dataclasses.dataclass
class Candidate:
    """One variable to pair: its name, shape, aliases (component tuples) and structural keys."""

    name: str
    shape: Tuple[int, ...]
    aliases: tuple = ()
    structure: tuple = ()
    trainable: bool = True
    obj: Any = None

    @property
    def label(self):
        return "%s %s" % (self.name, self.shape)


def _aliases(name, layer_class=None):
    own = components(name)
    out = [own]
    renamed = RENAMED_ATTRIBUTES.get(layer_class or "", {})
    for old, new in renamed.items():
        for a, b in ((old, new), (new, old)):
            if own and own[-1] == a:
                out.append(own[:-1] + (b,))
    # `<layer>/_query_dense/vars/0` (tf_keras archive) -> `<layer>/query/kernel` (Keras 3 path)
    if len(own) >= 3 and own[-2] == "vars" and own[-3] in ANY_RENAMED_SUBLAYER and own[-1].isdigit() \
            and int(own[-1]) < len(SUBLAYER_VARIABLES):
        out.append(own[:-3] + (ANY_RENAMED_SUBLAYER[own[-3]], SUBLAYER_VARIABLES[int(own[-1])]))
    return tuple(dict.fromkeys(out))


def sources(items, paths=None):
    """Candidates for a file's variables: VariableSpecs, (name, shape) pairs or payload triples.

    paths: the object path of each (a checkpoint's `layer_with_weights-0/kernel`), for structure.
    """
    out = []
    for k, item in enumerate(items):
        if isinstance(item, (tuple, list)):
            name, shape = item[0], item[1]
            shape = tuple(int(d) for d in getattr(shape, "shape", shape))
            trainable = bool(item[2]) if len(item) > 2 and isinstance(item[2], bool) else True
        else:
            name, shape, trainable = item.name, tuple(item.shape), True
        path = paths[k] if paths else name
        out.append(Candidate(str(name), tuple(shape), _aliases(name),
                             _structure_of_name(path) or _structure_of_name(name), trainable))
    return out


def _structure_of_name(name):
    """The structural key of an object path (`layer_with_weights-3/kernel` -> ('w3', 'kernel')), or ()."""
    parts = [p for p in strip_suffix(name).split("/") if p]
    while parts and parts[0] in _ROOTS:
        parts = parts[1:]
    key, i, structural = [], 0, False
    while i < len(parts):
        m = _LAYER_WITH_WEIGHTS.match(parts[i])
        if m:
            key.append("w%s" % m.group(1))
            structural = True
        elif parts[i] in ("_operations", "_layers") and i + 1 < len(parts) and parts[i + 1].isdigit():
            key.append("o%s" % parts[i + 1])
            structural = True
            i += 1
        elif parts[i] == "_functional":
            pass
        else:
            key.append(parts[i].lstrip("_") or parts[i])
        i += 1
    if not structural and len(parts) >= 3 and parts[-2] == "vars" and parts[-1].isdigit():
        # a Keras 3 `.weights.h5` / `.keras` store: `<layer>/vars/<i>` is the layer's i-th own variable
        return (tuple(p for p in parts if p != "layers"),)
    return (tuple(key),) if structural else ()


def _layers_of(model):
    return list(getattr(model, "layers", None) or [])


def _operations_of(model):
    """Keras 3's `_operations` (InputLayer included) of a Functional model or a Sequential's `_functional`.

    A tf_keras model has none; its `layers` are the same list (a Functional model lists its
    InputLayers; a Sequential does not, so its implicit input takes index 0 as in Keras 3).
    """
    inner = getattr(model, "_functional", None)
    ops = getattr(inner if inner is not None else model, "_operations", None)
    if isinstance(ops, (list, tuple)):
        return list(ops)
    if not hasattr(model, "get_layer"):
        return None
    layers = _layers_of(model)
    if any(type(layer).__name__ == "InputLayer" for layer in layers):
        return layers
    return [None] + layers


_SKIPPED_ATTRIBUTES = ("_inbound_nodes", "_outbound_nodes", "_tracker", "_layers", "_parent_path")


def _attribute_paths(layer, depth=3):
    """{id(variable): attribute path inside `layer`} by walking its attributes (sublayers too)."""
    out = {}

    def walk(obj, prefix, level):
        try:
            items = list(vars(obj).items())
        except TypeError:
            return
        # plain attributes first (`kernel`, `_query_dense`): they are the objects' own names; lists
        # (`_trainable_variables`, `_self_tracked_trackables`) only repeat them
        items.sort(key=lambda kv: isinstance(kv[1], (list, tuple)))
        for attr, value in items:
            if attr.startswith("__") or attr in _SKIPPED_ATTRIBUTES or isinstance(value, (list, tuple)) and (
                    "variables" in attr or "weights" in attr or "trackables" in attr):
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for k, v in enumerate(values):
                part = attr if not isinstance(value, (list, tuple)) else "%s/%d" % (attr, k)
                if hasattr(v, "assign") and hasattr(v, "shape"):
                    out.setdefault(id(v), prefix + (part,))
                elif level < depth and hasattr(v, "weights") and hasattr(v, "built") and v is not layer:
                    walk(v, prefix + (part,), level + 1)

    walk(layer, (), 0)
    return out


def _model_structure(model):
    """{id(variable): (layer class, [structural keys])} for every weight of `model`.

    Keys: Keras 2 `layer_with_weights-K` chains (the K-th of `model.layers` that has weights,
    recursively into nested models) and Keras 3 `_operations/N` chains, each followed by the
    variable's attribute path inside its layer (leading `_` dropped, renamed attributes both ways).
    """
    out = {}

    def add(var_id, layer, key):
        out.setdefault(var_id, [type(layer).__name__, []])[1].append(key)

    def visit(owner, prefix):
        k = 0
        ops = _operations_of(owner)
        op_index = {id(op): n for n, op in enumerate(ops)} if ops else {}
        for layer in _layers_of(owner):
            try:
                weights = list(layer.weights)
            except ValueError:
                weights = []
            if not weights:
                continue
            heads = [prefix + ("w%d" % k,)]
            if id(layer) in op_index:
                heads.append(prefix + ("o%d" % op_index[id(layer)],))
            k += 1
            if hasattr(layer, "get_layer") and _layers_of(layer):  # a nested model: its own layers count
                for head in heads:
                    visit(layer, head)
                continue
            attrs = _attribute_paths(layer)
            for var in weights:
                path = attrs.get(id(var))
                if path is None:
                    continue
                for alias in _aliases("/".join(path), type(layer).__name__):
                    for head in heads:
                        add(id(var), layer, head + alias)

    visit(model, ())

    def own_stores(owner, chain):
        # `<layer name>/vars/<i>`: the layer's own variables, trainable then non-trainable (Keras 3's
        # `Layer.save_own_variables`; tf_keras keeps the same two lists as `_trainable_weights` / ...)
        for layer in _layers_of(owner):
            here = chain + (layer.name,)
            if hasattr(layer, "get_layer") and _layers_of(layer):
                own_stores(layer, here)
                continue
            own = (list(getattr(layer, "_trainable_variables", None) or getattr(layer, "_trainable_weights", None)
                        or []) +
                   list(getattr(layer, "_non_trainable_variables", None) or
                        getattr(layer, "_non_trainable_weights", None) or []))
            for i, var in enumerate(own):
                if hasattr(var, "shape"):
                    add(id(var), layer, here + ("vars", str(i)))

    own_stores(model, ())
    return {i: (cls, tuple(dict.fromkeys(keys))) for i, (cls, keys) in out.items()}


def _layer_classes(model):
    """{id(variable): class name of the layer owning it} for every weight (nested layers included)."""
    out = {}

    def visit(layer):
        for sub in _layers_of(layer):
            visit(sub)
        try:
            for var in layer.weights:
                out.setdefault(id(var), type(layer).__name__)
        except (ValueError, AttributeError):
            pass

    visit(model)
    return out


def targets(variables, model=None):
    """Candidates for live variables (tf_keras / Keras 3 / TF), with structure when `model` is given."""
    variables = list(variables)
    structure = _model_structure(model) if model is not None else {}
    classes = _layer_classes(model) if model is not None else {}
    trainable_ids = {id(v) for v in getattr(model, "trainable_weights", [])} if model is not None else None
    out = []
    for var in variables:
        name = variable_name(var)
        cls, keys = structure.get(id(var), (classes.get(id(var)), ()))
        out.append(Candidate(name, _shape(var), _aliases(name, cls or classes.get(id(var))),
                             tuple(tuple(k) for k in keys),
                             True if trainable_ids is None else id(var) in trainable_ids, var))
    return out


@dataclasses.dataclass
class Matching:
    """pairs: [(source index, target index)] in source order; method: how it was proven."""

    pairs: List[Tuple[int, int]]
    method: str
    by: dict = dataclasses.field(default_factory=dict)  # source index -> "name" / "structure" / "order"


def _suffix_match(a, b):
    n = min(len(a), len(b))
    return n >= 2 and a[-n:] == b[-n:]


def _unique(source_ids, target_sets):
    """{source: target} for sources with exactly one candidate that no other source claims alone."""
    chosen = {s: next(iter(target_sets[s])) for s in source_ids if len(target_sets[s]) == 1}
    claimed = {}
    for s, t in chosen.items():
        claimed.setdefault(t, []).append(s)
    return {s: t for s, t in chosen.items() if len(claimed[t]) == 1}


def match(src, dst, *, confirmed=False, what=("the file", "the model"), require_all_targets=False,
          allow_unmatched_sources=False):
    """Pair `src` candidates with `dst` candidates (see the module docstring). Returns a `Matching`.

    confirmed: the caller vouches that `dst` is in `src`'s build order (equal shapes allowed).
    require_all_targets: every target must receive a source (restoring a whole model).
    allow_unmatched_sources: sources with no counterpart may be left out (a state's variables the
    optimizer does not update); otherwise they are an error.
    """
    a, b = what
    pairs, by = {}, {}
    free_t = set(range(len(dst)))
    ambiguous = set()  # sources whose name fits several targets: names are no proof, and no order either

    def settle(found, how):
        for s, t in found.items():
            if s not in pairs and t in free_t:
                pairs[s] = t
                by[s] = how
                free_t.discard(t)

    # 1. names: exact aliases, then equal after leading scopes, then with a renamed attribute of any class
    #    (a target known without its model: only what is left, and only one-to-one)
    for level in ("exact", "suffix", "renamed"):
        open_s = [s for s in range(len(src)) if s not in pairs]
        sets = {}
        for s in open_s:
            want = src[s].aliases
            if level == "renamed":
                want = tuple(a[:-1] + (ANY_RENAMED[a[-1]],) for a in want if a and a[-1] in ANY_RENAMED)
                sets[s] = {t for t in free_t if any(_suffix_match(x, y) or x == y for x in want
                                                    for y in dst[t].aliases)}
            elif level == "exact":
                sets[s] = {t for t in free_t if set(want) & set(dst[t].aliases)}
            else:
                sets[s] = {t for t in free_t if any(_suffix_match(x, y) for x in want for y in dst[t].aliases)}
        settle(_unique(open_s, sets), "name")
        ambiguous.update(s for s in open_s if s not in pairs and len(sets[s]) > 1)
    # 2. structure: object paths against the model's layers
    open_s = [s for s in range(len(src)) if s not in pairs and src[s].structure]
    if open_s:
        sets = {s: {t for t in free_t if set(src[s].structure) & set(dst[t].structure)} for s in open_s}
        settle(_unique(open_s, sets), "structure")
    # 3. build order: nothing matched by name or structure (or the caller vouches for the order)
    complete = len(pairs) == len(src) and (not require_all_targets or not free_t)
    if (not pairs and not ambiguous or confirmed and not complete) and src:
        if len(src) != len(dst):
            if not pairs:
                raise MappingError("the names of %s's %d variables (%s) and %s's %d (%s) do not match and the counts "
                                   "differ, so they cannot be paired by build order either; pass the variables in "
                                   "the file's build order" % (a, len(src), ", ".join(c.name for c in src[:4]), b,
                                                                len(dst), ", ".join(c.name for c in dst[:4])))
        else:
            shapes_agree = all(x.shape == y.shape for x, y in zip(src, dst))
            distinct = len({x.shape for x in src}) == len(src)
            if shapes_agree and (distinct or confirmed):
                return Matching([(i, i) for i in range(len(src))], "build order",
                                {i: "order" for i in range(len(src))})
            if not pairs and not shapes_agree:
                bad = ["position %d: %s vs %s" % (i, x.label, y.label) for i, (x, y) in enumerate(zip(src, dst))
                       if x.shape != y.shape]
                raise MappingError("the names of %s and %s differ and their variables cannot be paired by build "
                                   "order either (%d of %d shapes differ: %s); pass a mapping {file variable name: "
                                   "variable}" % (a, b, len(bad), len(src), "; ".join(bad[:4])))
            if not pairs:
                same = _shared_shapes(src)
                raise MappingError(
                    "ambiguous mapping: the names of %s and %s differ (%s vs %s) and %d variables share shapes (%s), "
                    "so the build order is not proven (it cannot be proven by shapes alone); pass the model (model=...) "
                    "so its structure proves it, or a mapping {file variable name: variable}"
                    % (a, b, src[0].name, dst[0].name, sum(len(v) for v in same.values()),
                       "; ".join("%s: %s" % (shape, ", ".join(n)) for shape, n in list(same.items())[:3])))
    # shapes of what names / structure paired
    bad = ["%s vs %s" % (src[s].label, dst[t].label) for s, t in sorted(pairs.items()) if src[s].shape != dst[t].shape]
    if bad:
        raise MappingError("%d of %s's variables pair with %s's by name or structure but not by shape: %s"
                           % (len(bad), a, b, "; ".join(bad[:4])))
    left_s = [s for s in range(len(src)) if s not in pairs]
    left_t = sorted(free_t)
    if left_s and not allow_unmatched_sources or require_all_targets and left_t:
        raise MappingError(_unproven(src, dst, left_s, left_t, a, b, len(pairs)))
    method = "/".join(sorted({by[s] for s in pairs})) or "name"
    return Matching(sorted(pairs.items()), method, by)


def _shared_shapes(cands):
    by_shape = {}
    for c in cands:
        by_shape.setdefault(c.shape, []).append(c.name)
    return {s: n for s, n in by_shape.items() if len(n) > 1}


def _unproven(src, dst, left_s, left_t, a, b, matched):
    """The one-line error naming exactly the variables left unpaired and what each could be."""
    parts = []
    for s in left_s[:4]:
        same = [dst[t].name for t in left_t if dst[t].shape == src[s].shape]
        parts.append("%s could be %s" % (src[s].label, " or ".join(same[:3]) if same else "none of them (no "
                                         "unpaired variable of %s has its shape)" % b))
    more = " (and %d more)" % (len(left_s) - 4) if len(left_s) > 4 else ""
    if not left_s:
        parts = ["%s gets nothing from %s" % (dst[t].label, a) for t in left_t[:4]]
        more = " (and %d more)" % (len(left_t) - 4) if len(left_t) > 4 else ""
    return ("ambiguous mapping: %d of %s's %d variables paired with %s's by name or structure; these could not be "
            "told apart: %s%s; "
            "pass the model (model=...) or a mapping {file variable name: variable}"
            % (matched, a, len(src), b, "; ".join(parts), more))


def non_trainable_by_attribute(names):
    """Indices of `names` whose last component is a weight built-in layers keep non-trainable
    (BatchNormalization's `moving_mean` / `moving_variance`)."""
    return [i for i, n in enumerate(names) if components(n) and components(n)[-1] in KNOWN_NON_TRAINABLE]
