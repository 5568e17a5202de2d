"""Hyperparameters a file does not store: the defaults table against the real classes, the
`assumed-default` report items (API, --dry-run text and JSON, the CLI's --config hint), flags
the slots prove, refusals where a default is known to be wrong, and a real tf_keras resume that
shows why the flags matter.
"""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "formats"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "migration"))

import keras_opt_migrate as kom  # noqa: E402
from corpus import FIXTURES, all_cases  # noqa: E402
from keras_opt_migrate.migrate import (ABSENT, ASSUMED, GENERATION_DEFAULTS, HYPERPARAMETER_DEFAULTS,  # noqa: E402
                                       REQUIRED, hyperparameter_defaults, migrate)
from keras_opt_migrate.optimizers.registry import SPECS  # noqa: E402

TF1_ADAM = str(FIXTURES / "k221" / "tf1_namebased" / "adam" / "model.ckpt")
RMSPROP_CENTERED = str(FIXTURES / "k221" / "experimental" / "rmsprop_centered" / "w.ckpt")
ADAM_SCHEDULE = str(FIXTURES / "k221" / "experimental" / "adam_schedule" / "w.ckpt")
CASES = {c.id: c for c in all_cases()}

# Constructor arguments that are not algorithm hyperparameters, or that no file ever holds.
NOT_HYPERPARAMETERS = {
    "self", "name", "kwargs", "use_locking", "mesh", "jit_compile", "weight_decay", "clipnorm", "clipvalue",
    "global_clipnorm", "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
    "gradient_accumulation_steps",
    "decay",  # Keras v1 / v2 learning-rate decay: a base key migrate converts on its own (InverseTimeDecay)
    "adaptive_epsilon",  # tf_keras 2.21 Adam: not in get_config(), so no file holds it
    "use_own_namescope_for_non_slot_vars", "accum_name", "linear_name",  # TF1 variable naming only
}
TF1_SPELLINGS = {"beta1": "beta_1", "beta2": "beta_2", "use_nesterov": "nesterov"}


def _real_class(algorithm, generation):
    spec = SPECS[algorithm]
    name = spec.class_names[generation][0].split(">")[-1]
    if generation == "tf1":
        import tensorflow as tf
        return getattr(tf.compat.v1.train, name, None)
    if generation == "v1":
        from tf_keras.src.optimizers import optimizer_v1
        return getattr(optimizer_v1, name, None)
    if generation == "keras3":
        import keras
        return getattr(keras.optimizers, name, None)
    import tf_keras
    return getattr(tf_keras.optimizers.legacy if generation == "v2" else tf_keras.optimizers, name, None)


REAL = [(a, g) for a, spec in SPECS.items() for g in spec.generations if a not in ("lazyadam", "clippyadagrad")]


@pytest.mark.parametrize("algorithm,generation", REAL, ids=["%s-%s" % p for p in REAL])
def test_defaults_table_matches_the_real_class(algorithm, generation):
    """Every hyperparameter the real constructor takes is in the table with the real default, and nothing else."""
    cls = _real_class(algorithm, generation)
    assert cls is not None, "no real %s class for %s" % (generation, algorithm)
    real = {}
    for key, p in inspect.signature(cls.__init__).parameters.items():
        if generation == "tf1" and algorithm == "rmsprop" and key == "decay":
            key = "rho"  # TF1 RMSPropOptimizer's decay is Keras' rho
        if algorithm == "adamw" and key == "weight_decay":
            pass  # AdamW's own hyperparameter (a base-class key elsewhere)
        elif key in NOT_HYPERPARAMETERS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        key = TF1_SPELLINGS.get(key, key) if generation == "tf1" else ("learning_rate" if key == "lr" else key)
        real[key] = REQUIRED if p.default is p.empty else p.default
    if generation == "tf1" and algorithm == "ftrl" and real.get("beta") is None:
        real["beta"] = 0.0  # TF1 FtrlOptimizer's beta=None means 0.0
    assert hyperparameter_defaults(algorithm, generation) == real


def test_tables_name_only_known_algorithms():
    assert set(HYPERPARAMETER_DEFAULTS) == set(SPECS)
    assert {a for _, a in GENERATION_DEFAULTS} <= set(SPECS)
    assert all(g in SPECS[a].generations for g, a in GENERATION_DEFAULTS)
    assert "epsilon" not in hyperparameter_defaults("adagrad", "tf1")  # ABSENT: TF1 Adagrad has no epsilon
    assert ABSENT not in hyperparameter_defaults("rmsprop", "v1").values()


def test_tf1_checkpoint_defaults_are_reported_and_a_hint_removes_them():
    state = kom.load_state(TF1_ADAM)
    target, report = migrate(state, "keras3")
    assumed = report.assumed_defaults()
    # the TF1 AdamOptimizer's own defaults (epsilon 1e-8, not Keras' 1e-7): what the run used if it set nothing
    assert assumed == {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}
    assert {k: target.config[k] for k in assumed} == assumed
    assert report.counts()[ASSUMED] == 4
    assert "assumed-default  config     epsilon" in report.format_text()
    assert "defaults assumed for beta_1, beta_2, epsilon, learning_rate" in report.continuation_reason
    hinted = kom.load_state(TF1_ADAM, config={"learning_rate": 0.01, "beta_1": 0.8})
    _, report = migrate(hinted, "keras3")
    assert sorted(report.assumed_defaults()) == ["beta_2", "epsilon"]


def test_a_file_with_a_full_config_assumes_nothing():
    state = kom.load_state(FIXTURES / "k221" / "experimental" / "adam" / "m.h5")
    for to in ("v2", "keras3"):
        _, report = migrate(state, to)
        assert report.assumed_defaults() == {} and ASSUMED not in report.format_text()


def test_flags_proven_by_slots_are_derived_and_an_unknown_momentum_is_refused():
    state = kom.load_state(RMSPROP_CENTERED)
    with pytest.raises(kom.MappingError) as e:
        migrate(state, "keras3")
    message = str(e.value)
    assert "momentum > 0" in message and "--config '{\"momentum\": ...}'" in message
    state = kom.load_state(RMSPROP_CENTERED, config={"momentum": 0.5})
    target, report = migrate(state, "keras3")
    derived = {i.name: i.detail for i in report.items if i.action == "derived" and i.kind == "config"}
    assert target.config["centered"] is True and "average_gradient" in derived["centered"]
    assert sorted(report.assumed_defaults()) == ["epsilon", "rho"]
    assert all(set(per) == {"velocity", "momentum", "average_gradient"} for per in target.slots.values())


def test_a_schedule_the_checkpoint_proves_is_refused_without_its_config():
    state = kom.load_state(ADAM_SCHEDULE, optimizer="adam")
    with pytest.raises(kom.MappingError) as e:
        migrate(state, "keras3")
    assert "learning-rate schedule" in str(e.value) and "0.005" in str(e.value)
    _, report = migrate(state, "keras3", partial=True)
    assert report.continuation == "different" and "learning_rate unknown" in report.continuation_reason
    schedule = {"class_name": "ExponentialDecay",
                "config": {"initial_learning_rate": 0.01, "decay_steps": 2, "decay_rate": 0.5}}
    state = kom.load_state(ADAM_SCHEDULE, optimizer="adam", config={"learning_rate": schedule})
    target, report = migrate(state, "keras3")
    assert target.config["learning_rate"] == schedule and "learning_rate" not in report.assumed_defaults()


def test_a_hyperparameter_without_any_default_stands_in_and_the_verdict_is_different():
    state = kom.load_state(FIXTURES / "k221" / "tf1_namebased" / "gradient_descent" / "model.ckpt", optimizer="sgd")
    target, report = migrate(state, "keras3")
    item = next(i for i in report.items if i.name == "learning_rate" and i.kind == "config")
    assert item.action == ASSUMED and "without a default" in item.detail and item.value == 0.01
    assert report.continuation == "different" and "learning_rate unknown" in report.continuation_reason


def test_cli_dry_run_text_json_and_the_config_hint(tmp_path):
    out = str(tmp_path / "x.kom.h5")
    cli = [sys.executable, "-m", "keras_opt_migrate", "convert", TF1_ADAM, out, "--to", "keras3", "--dry-run"]
    text = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "4 assumed-default" in text.stdout and "assumed-default  config     learning_rate" in text.stdout
    hint = [line for line in text.stderr.splitlines() if "--config" in line]
    assert len(hint) == 1 and "epsilon=1e-08" in hint[0]
    assert '--config \'{"beta_1": ..., "beta_2": ..., "epsilon": ..., "learning_rate": ...}\'' in hint[0]
    done = subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert report["assumed_defaults"] == {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "learning_rate": 0.001}
    assert report["counts"][ASSUMED] == 4
    assert {i["name"] for i in report["items"] if i["action"] == ASSUMED} == set(report["assumed_defaults"])
    quiet = subprocess.run(cli + ["--config", json.dumps(report["assumed_defaults"])], capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and "--config" not in quiet.stderr and ASSUMED not in quiet.stdout


def test_flagged_defaults_are_what_a_real_resume_depends_on(tmp_path):
    """k221 new-Adam w.ckpt keeps no beta_1 / beta_2 / epsilon. Converted without hints, the defaults the report
    names are written and tf_keras continues off the recorded trajectory; passing exactly those keys from the run's
    config puts it back on (within 1e-5)."""
    import real_targets as rt
    case = CASES["k221/experimental/adam"]
    truth = case.truth["optimizer"]["config"]
    src = str(case.file("w.ckpt"))

    def resume(source_config):
        out = str(tmp_path / ("hinted" if source_config else "plain") / "o.ckpt")
        Path(out).parent.mkdir()
        report = kom.convert(src, out, "experimental", source_optimizer="adam", source_config=source_config)
        target = migrate(kom.load_state(src, optimizer="adam", config=source_config), "experimental")[0]

        def restore(model):
            model.compile(optimizer=rt.make_optimizer("experimental", target), loss="mse")
            model.load_weights(out)
        return report, rt.max_delta(rt.keras_resume("experimental", case, restore)[0], case)

    report, delta = resume(None)
    assert set(report.assumed_defaults()) == {"beta_1", "beta_2", "epsilon"}
    assert delta > 1e-4  # 0.9 / 0.999 / 1e-7 instead of the run's 0.8 / 0.95 / 1e-6
    report, delta = resume({k: truth[k] for k in report.assumed_defaults()})
    assert report.assumed_defaults() == {} and delta <= 1e-5
