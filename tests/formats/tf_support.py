"""Shared checks for the TensorFlow checkpoint / SavedModel reader tests."""

import numpy as np

from corpus import assert_matches_truth, mislabelled  # noqa: F401 (mislabelled: re-exported)
from keras_opt_migrate import api
from keras_opt_migrate.candidates import as_candidate
from keras_opt_migrate.optimizers.registry import get_spec, spec_for_class
from keras_opt_migrate.schema import LazyTensor, materialize

# Truth names of non-slot state -> the schema's canonical extra names.
TRUTH_EXTRAS = {
    "loss_scale/current_loss_scale": "loss_scale", "loss_scale/good_steps": "loss_scale_good_steps",
    "dynamic_scale": "loss_scale", "step_counter": "loss_scale_good_steps",
    "_u_product": "u_product", "beta1_power": "beta1_power", "beta2_power": "beta2_power",
}


def truth_algorithm(case):
    opt = case.truth["optimizer"]
    cls, config = opt["class_name"], opt.get("config") or {}
    if "inner_optimizer" in config:
        cls = config["inner_optimizer"]["class_name"]
    spec = spec_for_class(cls, case.generation)
    return spec.name if spec else None


def truth_config(case):
    config = case.truth["optimizer"].get("config") or {}
    return config.get("inner_optimizer", {}).get("config", config)


def load(case, path, **kwargs):
    """Read without hints. Where the file cannot tell the algorithm, the state must name the
    truth's algorithm among its candidates, and reading it as that candidate must give what
    the hint gives: the same tensors under the same (variable, slot) names."""
    config = {}
    steps = truth_config(case).get("gradient_accumulation_steps")
    if steps:
        config["gradient_accumulation_steps"] = steps  # not recorded in a TF checkpoint
    state = api.load_state(path, config=config or None, **kwargs)
    if not state.ambiguous:
        return state, None
    algo = truth_algorithm(case)
    if mislabelled(case):  # a legacy optimizer under an `experimental` label: the truth class is not v2's
        return state, None
    assert algo is not None and algo in state.candidates, "%s not among the candidates %s" % (algo, state.candidates)
    view = as_candidate(state, algo)
    hinted = api.load_state(path, optimizer=algo, config=config or None, **kwargs)
    assert view.optimizer == hinted.optimizer and not hinted.candidates
    assert {v: sorted(per) for v, per in view.slots.items()} == {v: sorted(per) for v, per in hinted.slots.items()}
    assert {k: v for k, v in view.source["keys"].items()} == hinted.source["keys"]
    assert sorted(view.extra) == sorted(hinted.extra)
    return view, algo


def check_against_truth(state, case):
    """Slots bit-exact on the right variables, iterations, extras, hyperparameters, laziness."""
    if mislabelled(case):
        assert state.generation == "v2"
        n = sum(1 for w in case.truth["optimizer_weights"] if w["shape"] and w["name"].count("/") >= 2)
        assert sum(len(per) for per in state.slots.values()) == n
        return
    assert state.generation == case.generation
    assert state.optimizer == get_spec(truth_algorithm(case)).name
    assert_matches_truth(state, case)
    for per in state.slots.values():
        assert all(isinstance(t, LazyTensor) for t in per.values())
    check_extras(state, case)
    check_config(state, case)


def check_extras(state, case):
    """Non-slot state the truth recorded (beta powers, u_product, loss scale, learning rate) is in `extra`."""
    spec = get_spec(state.optimizer)
    required = {"u_product", "beta1_power", "beta2_power", "loss_scale", "loss_scale_good_steps"}
    for i, w in enumerate(case.truth["optimizer_weights"]):
        if w["var_index"] is not None:
            continue
        own = w["name"].split(":")[0].rsplit("/", 1)[-1]
        if w["name"].startswith("loss_scale_optimizer/") and own not in TRUTH_EXTRAS:
            continue  # the Keras 3 wrapper's own iteration / learning_rate copies
        canonical = spec.canonical_extra(case.generation, own) or TRUTH_EXTRAS.get(own) or (
            own if own == "learning_rate" else None)
        if canonical in required:
            assert canonical in state.extra, "%s: %s (%s) missing; extra has %s" % (
                case.id, canonical, w["name"], sorted(state.extra))
        if canonical in state.extra:
            got = materialize(state.extra[canonical])
            assert np.array_equal(got, case.opt_array(i)), (case.id, w["name"], got, case.opt_array(i))
    for key in case.arrays:
        name = key[len("extra/"):]
        if not key.startswith("extra/"):
            continue
        if name == "global_step":
            assert state.iterations == int(case.arrays[key])
        elif name in TRUTH_EXTRAS:
            got = materialize(state.extra[TRUTH_EXTRAS[name]])
            assert np.array_equal(got, case.arrays[key]), (case.id, name, got, case.arrays[key])


def check_config(state, case):
    """Hyperparameter variables (OptimizerV2 TF checkpoints) equal the constructor's values in float32."""
    truth = truth_config(case)
    for key, value in state.config.items():
        want = truth.get(key)
        if isinstance(value, float) and isinstance(want, (int, float)) and not isinstance(want, bool):
            assert np.float32(value) == np.float32(want), (case.id, key, value, want)
