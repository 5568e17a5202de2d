"""reshape_weights against the real optimizers' own weight lists (tf_keras 2.21, Keras 3.15)."""

import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import all_cases, canonical_slot
from keras_opt_migrate import reshape_weights

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
keras = pytest.importorskip("keras")

SHAPES = [(5, 4), (4,), (4, 2), (2,)]


def _train(opt, variables, steps=3, seed=0):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        opt.apply_gradients([(tf.constant(rng.randn(*v.shape).astype(np.float32)), v) for v in variables])


def _legacy(cls, **kw):
    variables = [tf.Variable(np.ones(s, np.float32)) for s in SHAPES]
    opt = getattr(tf_keras.optimizers.legacy, cls)(**kw)
    _train(opt, variables)
    return opt, variables


@pytest.mark.parametrize("cls,name,config", [
    ("Adam", "adam", {"amsgrad": True, "beta_1": 0.8}),
    ("RMSprop", "rmsprop", {"centered": True, "momentum": 0.5}),
    ("Adadelta", "adadelta", {"rho": 0.8}),
    ("Ftrl", "ftrl", {}),
    ("SGD", "sgd", {"momentum": 0.5}),
])
def test_legacy_list_into_tf_keras_new_and_back(cls, name, config):
    legacy, variables = _legacy(cls, **config)
    weights = legacy.get_weights()
    reshaped = reshape_weights(weights, optimizer=name, source="v2", target="experimental", var_shapes=SHAPES,
                               config=config)
    new = getattr(tf_keras.optimizers, cls)(**config)
    new.build(variables)
    new.set_weights(reshaped)  # raises on a wrong count or shape
    assert int(new.iterations.numpy()) == 3
    spec = kom.optimizers.registry.get_spec(name)
    lists = {canonical: getattr(new, attr) for attr, canonical in spec.tracked["experimental"].items()
             if getattr(new, attr, None)}
    for slot in legacy.get_slot_names():
        canonical = spec.canonical_slot("v2", slot)
        for i, var in enumerate(variables):
            np.testing.assert_array_equal(lists[canonical][i].numpy(), legacy.get_slot(var, slot).numpy())
    back = reshape_weights([v.numpy() for v in new.variables], optimizer=name, source="experimental", target="v2",
                           var_shapes=SHAPES, config=config)
    assert len(back) == len(weights)
    for a, b in zip(back, weights):
        np.testing.assert_array_equal(a, b)


def test_legacy_adam_list_into_keras3_set_weights():
    legacy, variables = _legacy("Adam", amsgrad=True, learning_rate=0.01)
    reshaped = reshape_weights(legacy.get_weights(), optimizer="adam", source="v2", target="keras3",
                               var_shapes=SHAPES, config={"amsgrad": True, "learning_rate": 0.01})
    k3_vars = [keras.Variable(np.ones(s, np.float32)) for s in SHAPES]
    k3 = keras.optimizers.Adam(learning_rate=0.01, amsgrad=True)
    k3.build(k3_vars)
    k3.set_weights(reshaped)
    assert int(k3.iterations.numpy()) == 3
    for i, var in enumerate(variables):
        np.testing.assert_array_equal(k3._momentums[i].numpy(), legacy.get_slot(var, "m").numpy())
        np.testing.assert_array_equal(k3._velocities[i].numpy(), legacy.get_slot(var, "v").numpy())
        np.testing.assert_array_equal(k3._velocity_hats[i].numpy(), legacy.get_slot(var, "vhat").numpy())


V1_CASES = [c for c in all_cases() if c.truth["group"] == "v1" and c.truth["case"] in ("adam", "adam_amsgrad", "nadam")
            and c.truth["label"] == "k221"]


@pytest.mark.parametrize("case", V1_CASES, ids=[c.id for c in V1_CASES])
def test_real_v1_list_into_tf_keras_legacy(case):
    """A list Keras v1 really wrote (the fixture's truth) set into a real OptimizerV2."""
    weights = [case.opt_array(i) for i in range(len(case.truth["optimizer_weights"]))]
    shapes = [tuple(m["shape"]) for m in case.truth["model_weights"]]
    config = {"amsgrad": case.truth["optimizer"]["config"].get("amsgrad", False)}
    name = case.spec().name
    reshaped = reshape_weights(weights, optimizer=name, source="v1", target="v2", var_shapes=shapes, config=config)
    variables = [tf.Variable(np.zeros(s, np.float32)) for s in shapes]
    opt = tf_keras.optimizers.legacy.Adam(amsgrad=config["amsgrad"]) if name == "adam" else \
        tf_keras.optimizers.legacy.Nadam()
    opt._create_all_weights(variables)
    opt.set_weights(reshaped)
    assert int(opt.iterations.numpy()) == case.truth["iterations"]
    spec = case.spec()
    for i, w in enumerate(case.truth["optimizer_weights"]):
        if w["var_index"] is None or (name == "adam" and not config["amsgrad"] and w["slot"] == "vhats"):
            continue
        slot = spec.slot_name("v2", canonical_slot(case, spec, w["slot"]))
        np.testing.assert_array_equal(opt.get_slot(variables[w["var_index"]], slot).numpy(), case.opt_array(i))


def test_a_list_that_does_not_fit_is_refused():
    legacy, _ = _legacy("Adam")
    with pytest.raises(kom.MappingError, match="should have 9 weights, the file has 8"):
        reshape_weights(legacy.get_weights()[:-1], optimizer="adam", source="v2", target="keras3", var_shapes=SHAPES)
    with pytest.raises(kom.MappingError, match="should have 13 weights, the file has 9"):
        reshape_weights(legacy.get_weights(), optimizer="adam", source="v2", target="keras3", var_shapes=SHAPES,
                        config={"amsgrad": True})


# -- the layout the list itself proves ---------------------------------------------------------
@pytest.mark.parametrize("cls,name,config,inferred", [
    ("Adam", "adam", {"amsgrad": True}, {"amsgrad": True}),  # 13 entries over 4 variables: only amsgrad's
    ("Adam", "adam", {}, {"amsgrad": False}),  # 9 entries: only the plain layout
    ("SGD", "sgd", {"momentum": 0.5, "nesterov": True}, {"momentum": 0.5}),  # 5: the momentum slots exist
    ("RMSprop", "rmsprop", {"centered": True, "momentum": 0.5}, {"centered": True, "momentum": 0.5}),  # 13
])
@pytest.mark.parametrize("target", ["experimental", "keras3"])
def test_layout_inferred_from_the_list_sets_into_the_real_optimizer(cls, name, config, inferred, target):
    """No layout switch given: the real legacy optimizer's own list decides it, and the result is what
    the real 2.11+ / Keras 3 optimizer built with the run's config accepts, slot by slot."""
    legacy, variables = _legacy(cls, **config)
    reshaped, report = reshape_weights(legacy.get_weights(), optimizer=name, source="v2", target=target,
                                       var_shapes=SHAPES, return_report=True)
    derived = {i.name: i.detail for i in report.items if i.action == "derived" and i.kind == "config"}
    for flag, value in inferred.items():
        assert flag in derived and "only the" in derived[flag], (flag, derived)
        if flag == "momentum":  # the list proves momentum > 0, never its value
            assert "not its value" in derived[flag] and "is not output" in derived[flag]
        else:
            assert derived[flag].startswith(repr(value))
    if target == "experimental":
        new = getattr(tf_keras.optimizers, cls)(**config)
        new.build(variables)
    else:
        new = getattr(keras.optimizers, cls)(**config)
        new.build([keras.Variable(np.ones(s, np.float32)) for s in SHAPES])
    new.set_weights(reshaped)  # raises on a wrong count or shape
    assert int(new.iterations.numpy()) == 3
    spec = kom.optimizers.registry.get_spec(name)
    lists = {canonical: getattr(new, attr) for attr, canonical in spec.tracked[target].items()
             if getattr(new, attr, None)}
    for slot in legacy.get_slot_names():
        canonical = spec.canonical_slot("v2", slot)
        for i, var in enumerate(variables):
            np.testing.assert_array_equal(lists[canonical][i].numpy(), legacy.get_slot(var, slot).numpy())


def test_several_fitting_layouts_are_refused_naming_them():
    """9 entries of legacy RMSprop over 4 variables: centered without momentum, or momentum uncentered."""
    legacy, _ = _legacy("RMSprop", centered=True)
    with pytest.raises(kom.MappingError, match=r"2 layouts of the v2 rmsprop list .*centered=True, momentum=0 "
                                               r"\(velocity, average_gradient\).*centered=False, momentum>0 "
                                               r"\(velocity, momentum\).*pass config="):
        reshape_weights(legacy.get_weights(), optimizer="rmsprop", source="v2", target="experimental",
                        var_shapes=SHAPES)
    reshaped = reshape_weights(legacy.get_weights(), optimizer="rmsprop", source="v2", target="experimental",
                               var_shapes=SHAPES, config={"centered": True})
    assert len(reshaped) == 9
