"""The algorithm registry: canonical names, aliases and class-name lookup."""

from ..errors import UnknownOptimizerError
from . import adadelta, adafactor, adagrad, adam, adamax, ftrl, lion, momentum, muon, nadam, rmsprop, sgd

SPECS = {s.name: s for s in (
    sgd.SPEC, adam.SPEC, adam.ADAMW_SPEC, adam.LAZYADAM_SPEC, adam.LAMB_SPEC, nadam.SPEC, adamax.SPEC,
    adagrad.SPEC, adagrad.PROXIMAL_ADAGRAD_SPEC, adagrad.CLIPPYADAGRAD_SPEC, adadelta.SPEC, rmsprop.SPEC,
    ftrl.SPEC, lion.SPEC, adafactor.SPEC, muon.SPEC, momentum.SPEC, momentum.PROXIMAL_GRADIENT_DESCENT_SPEC,
)}

# Spellings users and files use for the same algorithm.
ALIASES = {
    "adam_w": "adamw", "rm_sprop": "rmsprop", "lazy_adam": "lazyadam", "clippy_adagrad": "clippyadagrad",
    "gradient_descent": "sgd", "gradientdescent": "sgd", "momentumoptimizer": "momentum",
    "proximaladagrad": "proximal_adagrad", "proximalgradientdescent": "proximal_gradient_descent",
}


def get_spec(name):
    """The `AlgorithmSpec` for a canonical name or alias (case-insensitive)."""
    key = str(name).split(">")[-1].lower()  # registered-object prefixes: `Custom>Adam`, `Addons>LazyAdam`
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise UnknownOptimizerError(
            "unknown optimizer %r; expected one of: %s" % (name, ", ".join(sorted(SPECS))))
    return SPECS[key]


def spec_for_class(class_name, generation):
    """The spec whose `class_names[generation]` contains `class_name`, or None.

    Registered-object prefixes (`Custom>`, `Addons>`) are accepted as written and stripped.
    """
    bare = class_name.split(">")[-1]
    for spec in SPECS.values():
        names = spec.class_names.get(generation, ())
        if class_name in names or bare in names:
            return spec
    return None


def keras3_prefix(class_name):
    """Keras 3's snake_case variable-path prefix for an optimizer class (`AdamW` -> `adam_w`)."""
    out = []
    for i, ch in enumerate(class_name):
        if ch.isupper() and i and (class_name[i - 1].islower()
                                   or (i + 1 < len(class_name) and class_name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
