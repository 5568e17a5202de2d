"""`restore_into` with REAL optimizers: tf_keras legacy, tf_keras 2.11+, Keras 3; plus the named cases of
the Migration issue and the two SavedModel facts (LAYOUTS §7.2)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "formats"))

import keras_opt_migrate as kom  # noqa: E402
import real_targets as rt  # noqa: E402
from corpus import all_cases  # noqa: E402
from keras_opt_migrate.errors import MappingError  # noqa: E402
from keras_opt_migrate.restore_keras import optimizer_kind  # noqa: E402
from tf_support import truth_config  # noqa: E402

CASES = {c.id: c for c in all_cases()}
TF1_ADAM = CASES["k221/tf1_namebased/adam"]
LEGACY_ADAM = CASES["k221/v2/adam"]
SM_ADAM = CASES["k221/v2/adam_amsgrad"]


def _state(case, name="model.ckpt", optimizer=None):
    return kom.load_state(str(case.file(name)), optimizer=optimizer, config=truth_config(case))


def _weights(model):
    return [np.asarray(w) for w in model.trainable_weights]


def _model(lib, case):
    model = rt.build_model(lib, case.truth["model"])
    model.set_weights(case.model_weights())
    return model


def test_kinds_are_told_apart_without_importing_keras_at_import_time():
    import tf_keras
    import keras
    assert optimizer_kind(tf_keras.optimizers.legacy.Adam()) == "v2"
    assert optimizer_kind(tf_keras.optimizers.Adam()) == "experimental"
    assert optimizer_kind(keras.optimizers.Adam()) == "keras3"
    assert optimizer_kind(object()) is None
    source = Path(kom.__file__).with_name("restore_keras.py").read_text()
    assert "\nimport keras" not in source and "\nimport tf_keras" not in source


def test_keras3_compile_restore_into_fit_resumes_exactly():
    """The issue's sentence: model.compile(...); restore_into(model.optimizer, path); model.fit(...)."""
    import keras
    import tensorflow as tf
    state = _state(TF1_ADAM)
    model = _model(keras, TF1_ADAM)
    model.compile(optimizer=rt.make_optimizer("keras3", kom.migrate(state, "keras3")[0]), loss="mse")
    kom.restore_into(model.optimizer, state)
    assert not model.optimizer.built  # held until fit builds it
    x, y = TF1_ADAM.batches()
    model.fit(tf.data.Dataset.from_tensor_slices((x[3:5], y[3:5])), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 5
    assert rt.max_delta(_weights(model), TF1_ADAM) <= 1e-5


@pytest.mark.parametrize("generation", ["v2", "experimental"])
@pytest.mark.parametrize("when", ["built_by_var_list", "deferred"])
def test_tf_keras_restore_into_resumes(generation, when):
    import tf_keras
    state = _state(LEGACY_ADAM, "w.ckpt", optimizer="adam")
    model = _model(tf_keras, LEGACY_ADAM)
    opt = rt.make_optimizer(generation, kom.migrate(state, generation)[0])
    model.compile(optimizer=opt, loss="mse")
    # the checkpoint names its variables by object path; the model's are hidden/kernel...: build order + shapes
    kom.restore_into(opt, state, var_list=model.trainable_variables if when == "built_by_var_list" else None)
    x, y = LEGACY_ADAM.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert int(opt.iterations) == 5
    assert rt.max_delta(_weights(model), LEGACY_ADAM) <= 1e-5


def test_restore_takes_what_the_file_lacks_from_the_real_optimizer():
    """A new-Adam checkpoint written with a schedule keeps neither the schedule nor epsilon / betas; converting it
    alone is refused (the schedule is proven, its config unknown), but the optimizer restored into has them."""
    import tf_keras
    case = CASES["k221/experimental/adam_schedule"]
    state = kom.load_state(str(case.file("w.ckpt")), optimizer="adam")
    with pytest.raises(MappingError, match="schedule"):
        kom.migrate(state, "v2")
    model = _model(tf_keras, case)
    opt = rt.make_optimizer("v2", kom.OptimizerState("adam", "v2", dict(truth_config(case))))
    model.compile(optimizer=opt, loss="mse")
    assert not {"learning_rate", "beta_1", "beta_2", "epsilon"} & set(state.config)
    kom.restore_into(opt, state, var_list=model.trainable_variables)
    assert int(opt.iterations) == 3
    x, y = case.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert int(opt.iterations) == 5
    assert rt.max_delta(_weights(model), case) <= 1e-5


def test_keras3_restore_into_built_optimizer_matches_by_name():
    import keras
    state = _state(CASES["k315/keras3/adam"], "m.keras") if CASES["k315/keras3/adam"].has("m.keras") else None
    if state is None:
        pytest.skip("no k315 adam .keras fixture")
    model = _model(keras, TF1_ADAM)
    opt = keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
    opt.build(model.trainable_variables)
    kom.restore_into(opt, state)
    assert int(opt.iterations) == 3
    want = state.slots[state.variables[0].name]["momentum"]
    assert np.array_equal(np.asarray(opt._momentums[0]), np.asarray(want))


def test_ambiguous_mapping_is_refused_and_an_explicit_one_is_accepted():
    import keras
    state = kom.OptimizerState(optimizer="adam", generation="keras3", config={"learning_rate": 0.01}, iterations=2,
                               variables=[kom.VariableSpec("a", (3,)), kom.VariableSpec("b", (3,))],
                               slots={n: {"momentum": np.full(3, i + 1, np.float32),
                                          "velocity": np.full(3, i + 1, np.float32)} for i, n in enumerate("ab")},
                               extra={"learning_rate": np.asarray(0.01, np.float32)})
    x, y = keras.Variable(np.zeros(3, np.float32), name="x"), keras.Variable(np.zeros(3, np.float32), name="y")
    opt = keras.optimizers.Adam()
    with pytest.raises(MappingError, match="cannot be proven"):
        kom.restore_into(opt, state, var_list=[x, y])
    assert int(opt.iterations) == 0  # nothing half-applied
    kom.restore_into(opt, state, var_list={"a": y, "b": x})
    assert np.all(np.asarray(opt._momentums[opt._get_variable_index(y)]) == 1)
    assert np.all(np.asarray(opt._momentums[opt._get_variable_index(x)]) == 2)


# -- the named cases ------------------------------------------------------------------------------
def test_tf1_namebased_adam_resumes_exactly_in_keras3(tmp_path):
    import keras
    import tensorflow as tf
    out = str(tmp_path / "k3.ckpt")
    report = kom.convert(str(TF1_ADAM.file("model.ckpt")), out, "keras3", source_config=truth_config(TF1_ADAM))
    assert report.continuation in ("exact", "float-tolerance")
    target = kom.migrate(_state(TF1_ADAM), "keras3")[0]
    model = rt.build_model(keras, "dense")
    opt = rt.make_optimizer("keras3", target)
    model.compile(optimizer=opt, loss="mse")
    opt.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=opt).restore(out).assert_consumed()
    x, y = TF1_ADAM.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert rt.max_delta(_weights(model), TF1_ADAM) <= 1e-5


def test_legacy_adam_checkpoint_resumes_exactly_in_tf_keras_new_adam(tmp_path):
    """Real tf_keras refuses this load (LAYOUTS §7.1 `tfk_legacyckpt_into_new`); converted, it resumes."""
    import tf_keras
    src = str(LEGACY_ADAM.file("w.ckpt"))
    out = str(tmp_path / "new.ckpt")
    kom.convert(src, out, "experimental", source_optimizer="adam", source_config=truth_config(LEGACY_ADAM))
    target = kom.migrate(_state(LEGACY_ADAM, "w.ckpt", "adam"), "experimental")[0]
    refused = rt.build_model(tf_keras, "dense")
    refused.compile(optimizer=rt.make_optimizer("experimental", target), loss="mse")
    with pytest.raises(ValueError, match="legacy TF-Keras optimizer"):
        refused.load_weights(src)
        refused.train_on_batch(*[b[3] for b in LEGACY_ADAM.batches()])
    model = rt.build_model(tf_keras, "dense")
    model.compile(optimizer=rt.make_optimizer("experimental", target), loss="mse")
    model.load_weights(out)
    x, y = LEGACY_ADAM.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert int(model.optimizer.iterations) == 5
    assert rt.max_delta(_weights(model), LEGACY_ADAM) <= 1e-5


def test_savedmodel_optimizer_state_is_no_longer_lost(tmp_path):
    """Fact 1: tf_keras load_model hands back a fresh optimizer even for our rewritten SavedModel.
    Fact 2: the documented workaround (load_weights of sm/variables/variables) restores it, and a TF
    checkpoint written from the SavedModel resumes in another generation."""
    import tf_keras
    src = str(SM_ADAM.file("sm"))
    out = str(tmp_path / "sm")
    report = kom.convert(src, out, "v2", source_optimizer="adam", source_config=truth_config(SM_ADAM))
    assert report.target_format == "savedmodel" and report.continuation == "exact"
    loaded = tf_keras.models.load_model(out)
    assert int(loaded.optimizer.iterations) == 0  # LAYOUTS §7.2: load_model ignores the state
    target = kom.migrate(_state(SM_ADAM, "sm", "adam"), "v2")[0]
    model = rt.build_model(tf_keras, "dense")
    model.compile(optimizer=rt.make_optimizer("v2", target), loss="mse")
    model.load_weights(os.path.join(out, "variables", "variables"))
    x, y = SM_ADAM.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    assert int(model.optimizer.iterations) == 5
    assert rt.max_delta(_weights(model), SM_ADAM) <= 1e-5
    with pytest.raises(kom.FormatError, match="write a tf_keras .keras archive .* or a TF checkpoint"):
        kom.convert(src, str(tmp_path / "sm_new"), "experimental", source_optimizer="adam")
