"""migrate(): generation-to-generation conversion through the schema, on synthetic states.

These check the bookkeeping (what is renamed, derived, dropped, refused); the tests that
load converted files into the real tf_keras / Keras 3 optimizers and resume training live
with the writers.
"""

import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.migrate import migrate, _u_product, _beta_power
from keras_opt_migrate.schema import materialize

VARS = [kom.VariableSpec("hidden/kernel", (5, 4)), kom.VariableSpec("hidden/bias", (4,))]


def _state(optimizer, generation, slots, config=None, iterations=3, extra=None):
    return kom.OptimizerState(optimizer, generation, dict(config or {}), iterations, list(VARS),
                              {v.name: {s: np.full(v.shape, 0.25, np.float32) for s in slots} for v in VARS},
                              dict(extra or {}), {"format": "native"})


def actions(report, kind=None):
    return sorted((i.action, i.kind, i.name) for i in report.items if kind in (None, i.kind))


def test_adam_v2_to_keras3_renames_and_keeps_values():
    state = _state("adam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01, "beta_1": 0.8})
    target, report = migrate(state, "keras3")
    assert target.generation == "keras3" and target.iterations == 3
    assert {(i.source, i.target) for i in report.items if i.kind == "slot"} == {("m", "momentum"), ("v", "velocity")}
    assert np.array_equal(target.slots["hidden/kernel"]["velocity"], state.slots["hidden/kernel"]["velocity"])
    assert float(target.extra["learning_rate"]) == pytest.approx(0.01)
    assert report.continuation == "float-tolerance"


def test_tf1_beta_powers_become_iterations_and_back():
    state = _state("adam", "tf1", ["momentum", "velocity"], {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.95},
                   iterations=None, extra={"beta1_power": _beta_power(0.8, 3), "beta2_power": _beta_power(0.95, 3)})
    target, report = migrate(state, "experimental")
    assert target.iterations == 3 and "beta1_power" not in target.extra
    assert ("derived", "iterations", "iterations") in actions(report)
    back, _ = migrate(target, "tf1")
    assert np.array_equal(back.extra["beta1_power"], state.extra["beta1_power"])
    assert np.array_equal(back.extra["beta2_power"], state.extra["beta2_power"])
    # The recorded TF1 value after 3 steps (shared/LAYOUTS.md §5.1).
    assert float(_beta_power(0.8, 3)) == pytest.approx(0.4096, abs=1e-7)


def test_legacy_decay_becomes_inverse_time_decay_and_back():
    state = _state("sgd", "v2", ["momentum"], {"learning_rate": 0.1, "momentum": 0.5, "decay": 0.05})
    target, report = migrate(state, "keras3")
    lr = target.config["learning_rate"]
    assert lr["class_name"] == "InverseTimeDecay" and lr["config"]["decay_rate"] == 0.05
    assert "decay" not in target.config
    back, _ = migrate(target, "v1")
    assert back.config["learning_rate"] == 0.1 and back.config["decay"] == 0.05


def test_nadam_u_product_recomputed_for_the_target_schedule():
    state = _state("nadam", "keras3", ["momentum", "velocity"], {"learning_rate": 0.01, "beta_1": 0.8})
    legacy, report = migrate(state, "v2")
    assert legacy.extra["u_product"] == _u_product("schedule-0.004", 0.8, 3)
    assert report.continuation == "different" and "0.96 ** (0.004 * t)" in report.continuation_reason
    # Keras 3's product follows the formula, so a state that lost it gets it back exactly.
    back, report = migrate(legacy, "keras3")
    assert back.extra["u_product"] == _u_product("schedule-0.96", 0.8, 3)
    # tf_keras 2.11+ advances its product per variable: never the same trajectory as Keras 3,
    # and a file without its real product cannot be continued exactly anywhere.
    experimental = _state("nadam", "experimental", ["momentum", "velocity"], {"learning_rate": 0.01, "beta_1": 0.8})
    _, report = migrate(experimental, "keras3")
    assert report.continuation == "different" and "per variable" in report.continuation_reason
    assert "cannot be recomputed" in report.continuation_reason


def test_v1_adam_placeholders_dropped_and_recreated():
    v1 = _state("adam", "v1", ["momentum", "velocity"], {"learning_rate": 0.01, "amsgrad": False})
    for v in VARS:
        v1.slots[v.name]["velocity_hat"] = np.zeros((1,), np.float32)
    target, report = migrate(v1, "v2")
    assert all("velocity_hat" not in per for per in target.slots.values())
    assert [i.detail for i in report.items if i.action == "dropped"] == ["placeholder without information"] * 2
    back, report = migrate(target, "v1")
    assert all(back.slots[v.name]["velocity_hat"].shape == (1,) for v in VARS)


def test_reference_ops_of_our_2_11_optimizers_is_dropped_and_reported_for_other_generations():
    state = _state("adam", "experimental", ["momentum", "velocity"], {"learning_rate": 0.01, "reference_ops": True})
    for to in ("keras3", "v2"):
        target, report = migrate(state, to)
        assert "reference_ops" not in target.config
        assert [(i.action, i.kind) for i in report.items if i.name == "reference_ops"] == [("dropped", "config")]
    same, report = migrate(state, "experimental")
    assert same.config["reference_ops"] is True and not [i for i in report.items if i.name == "reference_ops"]


def test_converted_configs_build_the_real_classes_which_refuse_reference_ops():
    """The drop matters: real Keras 3 and tf_keras legacy Adam refuse `reference_ops`, and take the converted config."""
    import keras
    import tf_keras
    state = _state("adam", "experimental", ["momentum", "velocity"], {"learning_rate": 0.01, "reference_ops": True})
    for to, cls in (("keras3", keras.optimizers.Adam), ("v2", tf_keras.optimizers.legacy.Adam)):
        config = migrate(state, to)[0].config
        assert float(cls(**config).get_config()["learning_rate"]) == pytest.approx(0.01)
        with pytest.raises((TypeError, ValueError)):
            cls(**dict(config, reference_ops=True))


def test_strict_conversion_refuses_uncertain_state_and_partial_reports_it():
    state = _state("adam", "keras3", ["momentum", "velocity", "average"], {"learning_rate": 0.01, "use_ema": True})
    with pytest.raises(kom.MappingError, match="EMA") as e:
        migrate(state, "v2")
    assert "partial=True" in str(e.value)
    target, report = migrate(state, "v2", partial=True)
    assert [i.action for i in report.items if i.name == "average"] == ["dropped", "dropped"]
    assert any("partial conversion" in w for w in target.warnings)


def test_missing_amsgrad_slot_needs_partial():
    state = _state("adam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01})
    with pytest.raises(kom.MappingError, match="velocity_hat"):
        migrate(state, "keras3", config={"amsgrad": True})
    target, report = migrate(state, "keras3", config={"amsgrad": True}, partial=True)
    assert report.continuation == "different"
    assert ("zero-initialised", "slot", "velocity_hat") in actions(report)


def test_substitutes_lazyadam_and_tf1_momentum():
    lazy = _state("lazyadam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01})
    target, report = migrate(lazy, "keras3")
    assert target.optimizer == "adam" and "sparse" in report.continuation_reason
    mom = _state("momentum", "tf1", ["momentum"], {"learning_rate": 0.1, "momentum": 0.9}, iterations=None)
    target, report = migrate(mom, "keras3")
    assert target.optimizer == "sgd"
    assert np.allclose(target.slots["hidden/bias"]["momentum"], -0.1 * 0.25)


def test_adamw_from_adam_with_weight_decay():
    state = _state("adam", "experimental", ["momentum", "velocity"], {"learning_rate": 0.01})
    target, report = migrate(state, "keras3", optimizer="adamw", config={"weight_decay": 0.004})
    assert target.optimizer == "adamw" and target.config["weight_decay"] == 0.004
    assert report.continuation == "different"


def test_unknown_target_generation_or_algorithm():
    state = _state("adamw", "keras3", ["momentum", "velocity"], {"learning_rate": 0.01})
    with pytest.raises(kom.UnknownOptimizerError, match="has no adamw"):
        migrate(state, "v2")
    with pytest.raises(kom.UnknownOptimizerError, match="generation"):
        migrate(state, "v7")


def test_tf1_rmsprop_decay_is_rho():
    state = _state("rmsprop", "tf1", ["velocity", "momentum"], {"learning_rate": 0.01, "decay": 0.8, "momentum": 0.5},
                   iterations=3)
    target, report = migrate(state, "keras3")
    assert target.config["rho"] == 0.8 and not isinstance(target.config["learning_rate"], dict)
    assert ("renamed", "config", "rho") in actions(report)


def test_rmsprop_without_momentum_to_tf1_fills_the_momentum_slot_exactly():
    """TF1 RMSProp always keeps `momentum`; at momentum 0 it is overwritten before it is read, so a zero
    fill is exact (no refusal). Epsilon's place differs from v2's plain RMSprop: the verdict says so."""
    state = _state("rmsprop", "v2", ["velocity"], {"learning_rate": 0.01, "rho": 0.9, "momentum": 0.0,
                                                   "epsilon": 1e-7, "centered": False})
    target, report = migrate(state, "tf1")
    assert set(target.slots["hidden/kernel"]) == {"velocity", "momentum"}
    assert not np.any(np.asarray(materialize(target.slots["hidden/kernel"]["momentum"])))
    fills = [i for i in report.items if i.action == "zero-initialised" and i.kind == "slot"]
    assert len(fills) == 2 and all("0 is exact" in i.detail for i in fills)
    assert report.continuation == "different" and "epsilon" in report.continuation_reason
    with pytest.raises(kom.MappingError, match="momentum"):  # with momentum > 0 the slot's value matters
        migrate(_state("rmsprop", "v2", ["velocity"], {"learning_rate": 0.01, "momentum": 0.5}), "tf1")


def test_lazyadam_to_adam_has_the_substitute_verdict_whether_or_not_adam_is_named():
    state = _state("lazyadam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01})
    for named in (None, "adam"):
        _, report = migrate(state, "v2" if named else "experimental", optimizer=named)
        assert report.target_optimizer == "adam"
        assert report.continuation == "float-tolerance" and "LazyAdam's state is Adam's" in report.continuation_reason
    _, report = migrate(state, "experimental", optimizer="adamw", config={"weight_decay": 0.004})
    assert report.continuation == "different" and "different algorithm" in report.continuation_reason


def test_keras3_sparse_caveat_in_the_verdict():
    state = _state("adam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01})
    _, report = migrate(state, "keras3")
    assert report.continuation == "float-tolerance" and "sparse gradients" in report.continuation_reason
    _, report = migrate(state, "experimental")
    assert "sparse" not in report.continuation_reason
    sgd = _state("sgd", "v2", ["momentum"], {"learning_rate": 0.01, "momentum": 0.5})
    assert "sparse" not in migrate(sgd, "keras3")[1].continuation_reason


def _lso_state(generation, wrapper, extra):
    state = _state("adam", generation, ["momentum", "velocity"], {"learning_rate": 0.01, "epsilon": 1e-7,
                                                                  "beta_1": 0.9, "beta_2": 0.999, "amsgrad": False},
                   extra=extra)
    state.source["wrapper"] = wrapper
    return state


def test_loss_scale_wrapper_is_carried_with_its_config_and_state():
    scale = {"loss_scale": np.asarray(2048.0, np.float32), "loss_scale_good_steps": np.asarray(1, np.int64)}
    # a TF checkpoint records only the wrapper's name: its config takes the defaults, reported
    v3 = _lso_state("experimental", "LossScaleOptimizer", scale)
    target, report = migrate(v3, "keras3")
    assert target.source["wrapper"] == {"class_name": "LossScaleOptimizer",
                                        "config": {"initial_scale": 2.0 ** 15, "dynamic_growth_steps": 2000}}
    assert report.assumed_defaults() == {"LossScaleOptimizer.initial_scale": 2.0 ** 15,
                                         "LossScaleOptimizer.dynamic_growth_steps": 2000}
    assert float(target.extra["loss_scale"]) == 2048.0 and int(target.extra["loss_scale_good_steps"]) == 1
    own = {k: target.extra[k] for k in ("loss_scale_optimizer_iterations", "loss_scale_optimizer_learning_rate")}
    assert own["loss_scale_optimizer_iterations"].dtype == np.int64 and float(own["loss_scale_optimizer_learning_rate"]) == 0
    # back to Keras 2: the wrapper's class is the generation's, Keras 3's own unused variables are dropped
    back, report = migrate(target, "experimental")
    assert back.source["wrapper"]["class_name"] == "LossScaleOptimizerV3" and report.assumed_defaults() == {}
    assert set(back.extra) >= {"loss_scale", "loss_scale_good_steps"}
    assert not {"loss_scale_optimizer_iterations", "loss_scale_optimizer_learning_rate"} & set(back.extra)
    assert [i.action for i in report.items if i.name.startswith("loss_scale_optimizer_")] == ["dropped", "dropped"]


def test_a_loss_scale_the_source_did_not_store_restarts_and_the_report_says_so():
    h5 = _lso_state("experimental", {"class_name": "LossScaleOptimizerV3",
                                     "config": {"initial_scale": 1024.0, "dynamic_growth_steps": 2}}, {})
    target, report = migrate(h5, "keras3")
    assert float(target.extra["loss_scale"]) == 1024.0 and int(target.extra["loss_scale_good_steps"]) == 0
    assert {(i.action, i.name) for i in report.items} >= {("zero-initialised", "loss_scale"),
                                                           ("zero-initialised", "loss_scale_good_steps")}
    assert "loss scale restarts at initial_scale" in report.continuation_reason
    v1, report = migrate(h5, "v1")
    assert "wrapper" not in v1.source and ("dropped", "wrapper") in {(i.action, i.kind) for i in report.items}


def test_a_substitute_across_the_keras3_boundary_keeps_the_sparse_caveat():
    lazy = _state("lazyadam", "v2", ["momentum", "velocity"], {"learning_rate": 0.01})
    _, report = migrate(lazy, "keras3")
    assert "LazyAdam's state is Adam's" in report.continuation_reason
    assert "Keras 3 applies an IndexedSlices gradient without summing repeated ids" in report.continuation_reason
    _, report = migrate(lazy, "experimental")
    assert "IndexedSlices" not in report.continuation_reason


def test_a_format_that_cannot_hold_the_generation_names_the_ones_that_can(tmp_path):
    from corpus import FIXTURES
    with pytest.raises(kom.FormatError) as e:
        kom.convert(FIXTURES / "k221" / "v2" / "adam" / "m.h5", tmp_path / "o.keras", "v2")
    message = str(e.value)
    assert "cannot hold v2" in message and "*.h5" in message and "*.ckpt" in message and "\n" not in message
    assert "SavedModel" not in message  # written only from a SavedModel of the same generation
    assert not any(tmp_path.iterdir())
