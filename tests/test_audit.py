"""audit() on synthetic states: every check can fire, and a healthy state passes clean."""

import numpy as np

import keras_opt_migrate as kom
from keras_opt_migrate.audit import audit

VARS = [kom.VariableSpec("hidden/kernel", (5, 4)), kom.VariableSpec("hidden/bias", (4,))]


def _adam(**overrides):
    slots = {v.name: {"momentum": np.full(v.shape, 0.1, np.float32), "velocity": np.full(v.shape, 0.2, np.float32)}
             for v in VARS}
    state = kom.OptimizerState("adam", "v2", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.95}, 3,
                               list(VARS), slots, {}, {"format": "native"})
    for k, v in overrides.items():
        setattr(state, k, v)
    return state


def codes(report):
    return sorted(f.code for f in report.findings)


def test_healthy_state_has_no_findings():
    report = audit(_adam())
    assert report.ok and report.tensors_checked == 4


def test_nan_and_inf_are_found():
    state = _adam()
    state.slots["hidden/kernel"]["momentum"][0, 0] = np.nan
    state.slots["hidden/bias"]["velocity"][1] = np.inf
    report = audit(state)
    assert codes(report) == ["non_finite", "non_finite"]
    assert {(f.variable, f.slot) for f in report.findings} == {("hidden/kernel", "momentum"), ("hidden/bias", "velocity")}


def test_negative_second_moment():
    state = _adam()
    state.slots["hidden/kernel"]["velocity"][2, 1] = -1e-3
    state.slots["hidden/kernel"]["momentum"][2, 1] = -5.0  # a first moment may be negative
    report = audit(state)
    assert codes(report) == ["negative_second_moment"]
    assert report.findings[0].slot == "velocity"


def test_missing_orphan_and_misshapen_slots():
    state = _adam()
    del state.slots["hidden/bias"]["velocity"]
    state.slots["hidden/kernel"]["vhat_typo"] = np.zeros((5, 4), np.float32)
    state.slots["hidden/kernel"]["velocity"] = np.zeros((4, 5), np.float32)
    assert codes(audit(state)) == ["missing_slot", "shape_mismatch", "unknown_slot"]


def test_amsgrad_slot_without_amsgrad_is_unexpected():
    state = _adam()
    state.slots["hidden/bias"]["velocity_hat"] = np.zeros(4, np.float32)
    assert codes(audit(state)) == ["unexpected_slot"]


def test_tf1_beta_powers_against_global_step():
    state = _adam(generation="tf1", extra={"beta1_power": np.float32(0.8 ** 4), "beta2_power": np.float32(0.95 ** 4)})
    assert audit(state).ok
    state.iterations = 10
    report = audit(state)
    assert codes(report) == ["iteration_mismatch", "iteration_mismatch"]
    assert "implies 3.00 steps" in report.findings[0].message


def test_missing_iterations_with_decay():
    state = _adam(generation="v1", iterations=None, config={"learning_rate": 0.01, "decay": 0.1})
    assert "missing_iterations" in codes(audit(state))


def test_load_risk_rules_fire_on_their_formats():
    state = _adam(source={"format": "savedmodel"})
    assert "savedmodel" in codes(audit(state))
    nadam = _adam(optimizer="nadam")
    assert "nadam_u_product" in codes(audit(nadam))
    nadam.extra["u_product"] = np.float32(0.5)
    assert "nadam_u_product" not in codes(audit(nadam))


def test_audit_of_a_path_reads_the_file(tmp_path):
    state = _adam()
    state.slots["hidden/kernel"]["velocity"][0, 0] = -1
    kom.save_state(state, tmp_path / "s.h5")
    assert codes(audit(str(tmp_path / "s.h5"))) == ["negative_second_moment"]


def test_unknown_optimizer_is_reported_not_fatal():
    state = kom.OptimizerState("shampoo", "keras3", {}, 1, list(VARS), {}, {}, {})
    assert "unknown_optimizer" in codes(audit(state))
