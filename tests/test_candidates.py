"""Files that cannot tell algorithms apart: read without hints, reported, audited per candidate."""

import json

import numpy as np
import pytest

import keras_opt_migrate as kom
from corpus import FIXTURES
from keras_opt_migrate.candidates import as_candidate
from keras_opt_migrate.cli import main
from keras_opt_migrate.errors import MappingError
from keras_opt_migrate.formats.tf_bundle import GRAPH_KEY, Bundle
from keras_opt_migrate.schema import materialize

LEGACY_ADAM = str(FIXTURES / "k221" / "v2" / "adam" / "w.ckpt")


def test_inspect_reports_the_candidates_and_exits_0(capsys):
    assert main(["inspect", LEGACY_ADAM]) == 0
    out = capsys.readouterr().out
    assert "optimizer:   adam, adamax or lazyadam: the file cannot tell them apart; pass --optimizer to choose" in out
    assert main(["inspect", LEGACY_ADAM, "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["optimizer"] == "adam" and desc["candidates"] == ["adam", "lazyadam", "adamax"]
    assert main(["inspect", LEGACY_ADAM, "--json", "--optimizer", "adamax"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["optimizer"] == "adamax" and desc["candidates"] == [] and desc["candidates_note"] is None


def test_audit_without_hint_exits_0_and_names_the_candidates(capsys):
    assert main(["audit", LEGACY_ADAM]) == 0
    out = capsys.readouterr().out
    assert "v2 adam, adamax or lazyadam state" in out and "ran for each of them" in out
    assert main(["audit", LEGACY_ADAM, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"] == ["adam", "lazyadam", "adamax"]
    assert report["candidates_note"].startswith("adam, adamax or lazyadam: the file cannot tell them apart")
    assert [f["code"] for f in report["findings"]] == ["legacy_into_new"]  # not algorithm-specific: once
    assert report["findings"][0]["candidates"] is None


def test_algorithm_dependent_checks_run_for_every_candidate():
    state = kom.load_state(LEGACY_ADAM)
    var = state.variable_names[0]
    shape = state.variable(var).shape
    state.slots[var]["velocity"] = -np.ones(shape, np.float32)  # Adam's v, Adamax's norm: never negative
    state.slots[var]["momentum"] = np.full(shape, np.nan, np.float32)
    report = kom.audit(state)
    negative = [f for f in report.findings if f.code == "negative_second_moment"]
    assert sorted(tuple(f.candidates) for f in negative) == [("adam",), ("adamax",), ("lazyadam",)]
    assert {f.message.split(":")[0] for f in negative} == {"if adam", "if adamax", "if lazyadam"}
    assert {f.slot for f in negative} == {"velocity", "norm"}  # each candidate's own name for the tensor
    non_finite = [f for f in report.findings if f.code == "non_finite"]
    assert len(non_finite) == 1 and non_finite[0].candidates is None and non_finite[0].slot == "momentum"
    assert report.tensors_checked == sum(len(per) for per in state.slots.values()) + len(state.extra)


def test_a_candidate_view_holds_the_same_tensors():
    state = kom.load_state(LEGACY_ADAM)
    view = as_candidate(state, "adamax")
    assert view.optimizer == "adamax" and not view.ambiguous and state.ambiguous
    for var in state.variable_names:
        assert view.slots[var]["momentum"] is state.slots[var]["momentum"]
        assert view.slots[var]["norm"] is state.slots[var]["velocity"]
        assert view.key_of(var, "norm") == state.key_of(var, "velocity")


# -- conversions: refused only where the candidates would give different output ------------------
EXPERIMENTAL_ADAM = str(FIXTURES / "k221" / "experimental" / "adam" / "w.ckpt")
KERAS3_ADAM = str(FIXTURES / "k315" / "keras3" / "adam" / "ckpt" / "ckpt-1")


def _bundle(prefix):
    """{key: (shape, dtype, values)} of a written checkpoint and its object graph without the variables'
    full_name attributes (informational: restoring matches the graph and never reads them)."""
    bundle = Bundle(str(prefix), origin=str(prefix))
    tensors = {k: np.asarray(materialize(bundle.tensor(k))) for k in bundle.keys() if k != GRAPH_KEY}
    graph = bundle.object_graph().proto
    for node in graph.nodes:
        for attr in node.attributes:
            attr.full_name = ""
    return tensors, graph.SerializeToString(deterministic=True)


def test_legacy_adam_to_a_legacy_checkpoint_needs_no_hint(tmp_path, capsys):
    out = tmp_path / "plain.ckpt"
    assert main(["convert", LEGACY_ADAM, str(out), "--to", "v2"]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "source algorithm: the file did not tell adam, adamax or lazyadam apart; the tf_checkpoint output is the " \
           "same for every one of them" in text
    report = kom.convert(LEGACY_ADAM, str(tmp_path / "api.ckpt"), "v2")
    assert report.source_candidates == ["adam", "lazyadam", "adamax"]
    assert report.to_json()["source"]["candidates"] == ["adam", "lazyadam", "adamax"]
    back = kom.load_state(str(out))
    assert back.candidates == ["adam", "lazyadam", "adamax"] and back.iterations == 3
    # The claim checked the other way round: written as Adam and as Adamax, the files hold the
    # same keys, shapes and values and the same object graph (up to the informational full names).
    kom.convert(LEGACY_ADAM, str(tmp_path / "as_adam.ckpt"), "v2", source_optimizer="adam")
    kom.convert(LEGACY_ADAM, str(tmp_path / "as_adamax.ckpt"), "v2", source_optimizer="adamax")
    adam_tensors, adam_graph = _bundle(tmp_path / "as_adam.ckpt")
    adamax_tensors, adamax_graph = _bundle(tmp_path / "as_adamax.ckpt")
    assert sorted(adam_tensors) == sorted(adamax_tensors)
    for key, value in adam_tensors.items():
        assert value.dtype == adamax_tensors[key].dtype and np.array_equal(value, adamax_tensors[key]), key
    assert adam_graph == adamax_graph
    plain_tensors, _ = _bundle(out)
    assert sorted(plain_tensors) == sorted(adam_tensors)


def test_legacy_adam_to_keras3_is_refused_naming_what_differs(tmp_path, capsys):
    out = tmp_path / "k3.ckpt"
    assert main(["upgrade", LEGACY_ADAM, str(out)]) == 2
    err = capsys.readouterr().err
    assert "the file cannot tell adam, adamax or lazyadam apart" in err and "differs between them" in err, err
    assert "_momentums[0]" in err and "_m[0]" in err and "--optimizer" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    assert main(["upgrade", LEGACY_ADAM, str(out), "--optimizer", "adam"]) == 0, capsys.readouterr().err
    assert kom.load_state(str(out)).optimizer == "adam"


def test_formats_that_store_the_class_are_refused(tmp_path):
    with pytest.raises(MappingError, match="stored optimizer class would be adam for adam, lazyadam for lazyadam"):
        kom.convert(LEGACY_ADAM, str(tmp_path / "m.h5"), "v2")
    assert list(tmp_path.iterdir()) == []


def test_a_candidate_without_the_target_generation_is_named():
    with pytest.raises(MappingError, match="only adam or adamw convert to experimental: as lamb: the experimental "
                                           "generation has no lamb optimizer"):
        kom.convert(KERAS3_ADAM, "unused.ckpt", "experimental", dry_run=True)


def test_experimental_adam_or_adamw_to_keras3_needs_no_hint(tmp_path):
    report = kom.convert(EXPERIMENTAL_ADAM, str(tmp_path / "k3.ckpt"), "keras3")
    assert report.source_candidates == ["adam", "adamw"] and "same for every one of them" in report.candidates_note
    assert "adam or adamw" in report.format_text()
    back = kom.load_state(str(tmp_path / "k3.ckpt"))
    assert back.generation == "keras3" and "adam" in back.candidates and "adamw" in back.candidates


def test_migrate_in_memory_refuses_an_ambiguous_state_and_a_candidate_view_converts():
    state = kom.load_state(LEGACY_ADAM)
    with pytest.raises(MappingError, match="the converted state differs between them: its algorithm would be adam "
                                           "for adam, lazyadam for lazyadam; read it as one of them"):
        kom.migrate(state, "v2")
    target, report = kom.migrate(as_candidate(state, "adamax"), "keras3")
    assert target.optimizer == "adamax" and set(target.slot_names()) == {"momentum", "norm"}
    assert report.source_candidates == []


def test_diff_compares_an_ambiguous_file_as_the_algorithm_of_the_other():
    """tf_keras' legacy Adamax wrote both files: the checkpoint cannot tell adam, adamax or lazyadam apart, the
    .h5 names Adamax, so the checkpoint compares as Adamax (norm, not velocity) and they are equal."""
    case = FIXTURES / "k221" / "v2" / "adamax"
    result = kom.diff(str(case / "w.ckpt"), str(case / "m.h5"))
    assert result.equal and result.compared == 8, result.format_text()
    # the same checkpoint against an .h5 of a candidate-less algorithm still differs in algorithm
    nadam = case.parent / "nadam" / "m.h5"
    entries = kom.diff(str(case / "w.ckpt"), str(nadam)).entries
    assert any(e.kind == "optimizer" for e in entries)


def test_legacy_adam_checkpoint_restores_into_a_real_legacy_adam_without_hint():
    """The issue's last sentence: restore_into(tf_keras.optimizers.legacy.Adam(...), "w.ckpt") with no hint, and the
    run continues on the recorded trajectory (the state reads as Adam, the first candidate, which the target is)."""
    import sys
    tf_keras = pytest.importorskip("tf_keras")
    sys.path.insert(0, str(FIXTURES.parent / "tests" / "migration"))
    import real_targets as rt
    from corpus import all_cases
    case = next(c for c in all_cases() if c.id == "k221/v2/adam")
    config = case.truth["optimizer"]["config"]
    model = rt.build_model(tf_keras, case.truth["model"])
    model.set_weights(case.model_weights())
    opt = tf_keras.optimizers.legacy.Adam(**{k: config[k] for k in ("learning_rate", "beta_1", "beta_2", "epsilon")})
    model.compile(optimizer=opt, loss="mse")
    kom.restore_into(opt, LEGACY_ADAM, var_list=model.trainable_variables)
    assert int(opt.iterations) == 3
    x, y = case.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert rt.max_delta([np.asarray(w) for w in model.trainable_weights], case) <= 1e-5


def test_tf1_name_based_output_keys_carry_the_class_name(tmp_path):
    """TF1 Saver keys name a slot `<var>/<Name>`: GradientDescent and ProximalGradientDescent keep no slot, so
    their name-based checkpoints are the same; Adagrad's `<var>/Adagrad` is not ProximalAdagrad's."""
    gd = str(FIXTURES / "k221" / "tf1_objectbased" / "gradient_descent" / "ckpt" / "ckpt-1")
    report = kom.convert(gd, str(tmp_path / "gd"), "tf1", format="tf1_checkpoint")
    assert report.source_candidates == ["sgd", "proximal_gradient_descent"]
    adagrad = str(FIXTURES / "k221" / "tf1_objectbased" / "adagrad" / "ckpt" / "ckpt-1")
    with pytest.raises(MappingError, match="adagrad or proximal_adagrad apart, and the tf1_checkpoint output "
                                           "differs between them: its slot keys entry 0 would be .*/Adagrad a tensor "
                                           "for adagrad, .*/ProximalAdagrad a tensor for proximal_adagrad"):
        kom.convert(adagrad, str(tmp_path / "ada"), "tf1", format="tf1_checkpoint")
    assert kom.convert(adagrad, str(tmp_path / "ada.ckpt"), "tf1").source_candidates  # object-based: alike
