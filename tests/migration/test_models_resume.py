"""Real architectures, end to end: every model-corpus file resumes in real Keras 3 (TF backend).

The corpus (fixtures/<label>/models/, written by Keras 2.12, 2.15 and tf_keras 2.21: MobileNetV2, a
small ResNet with BatchNormalization, a Transformer block with MultiHeadAttention, a model with a
nested Sequential, a shared and a frozen layer) is moved to Keras 3 two ways a user would:

* `upgrade SRC out.keras`, then `keras.models.load_model(out.keras)`: model, compile config and
  optimizer come from the file alone;
* `load_into(model, SRC)` into the same architecture built in Keras 3 code and compiled with the
  recorded optimizer: the model proves the pairing (also for a `save_weights` TF checkpoint).

Either way every model weight (trainable and not) must equal the recorded one bit for bit before the
first step, the optimizer's iteration count must be the recorded one, and the recorded 2-step
continuation must be reproduced within the tolerance calibrated against wrong answers
(fixtures/models_tolerance.json; fixtures/FORMAT.md "The model corpus": a fresh optimizer, permuted
slots or reset BatchNorm statistics fail it by more than 13x).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_opt_migrate as kom
from models_corpus import FIXTURES, assert_exact_start, assert_resumes, model_cases

keras = pytest.importorskip("keras")
if not keras.__version__.startswith("3."):  # pragma: no cover - the test extra pins keras 3
    pytest.skip("these tests need Keras 3 (found keras %s)" % keras.__version__, allow_module_level=True)

FULL_MODEL_FILES = ("m.h5", "m.keras", "sm")
ALL_FILES = FULL_MODEL_FILES + ("w.ckpt",)
CASES = model_cases()


def _params(files):
    return [pytest.param(case, name, id="%s:%s" % (case.id, name))
            for case in CASES for name in files if case.has(name)]


def _check_iterations(model, case):
    assert int(model.optimizer.iterations.numpy()) == case.truth["iterations"], (
        "%s: the optimizer resumes at iteration %s, the file was saved at %s"
        % (case.id, int(model.optimizer.iterations.numpy()), case.truth["iterations"]))


def _check_slots_exact(model, case):
    """Every slot the real version recorded sits, bit for bit, in the Keras 3 optimizer's slot variable
    of the same model variable (found through Keras 3's own per-slot lists and variable index)."""
    from calibrate_models import SLOT_LISTS  # truth slot name -> Keras 3 per-slot list, per class
    opt = model.optimizer
    table = SLOT_LISTS[case.truth["optimizer"]["class_name"]]
    checked = 0
    for i, o in enumerate(case.truth["optimizer_weights"]):
        if o["var_index"] is None:
            continue
        var = model.weights[o["var_index"]]
        got = np.asarray(getattr(opt, table[o["slot"]])[opt._get_variable_index(var)].numpy())
        want = case.opt_array(i)
        assert np.array_equal(got, want), "%s: slot %s of %s differs (max |d| %g)" % (
            case.id, o["slot"], var.path, float(np.max(np.abs(got.astype(np.float64) - want))))
        checked += 1
    assert checked == sum(1 for o in case.truth["optimizer_weights"] if o["var_index"] is not None) > 0


def test_the_corpus_is_there():
    labels = {case.label for case in CASES}
    assert {"k212", "k215", "k221"} <= labels, labels
    assert len(CASES) == 12 and len(_params(FULL_MODEL_FILES)) >= 20 and len(_params(("w.ckpt",))) >= 6


@pytest.mark.parametrize("case, name", _params(FULL_MODEL_FILES))
def test_upgrade_to_keras_resumes_in_keras3(case, name, tmp_path):
    out = tmp_path / "out.keras"
    report = kom.upgrade(str(case.file(name)), str(out))
    assert report.continuation in ("exact", "float-tolerance"), report.to_json()
    model = keras.models.load_model(str(out))
    assert_exact_start(model, case)
    _check_iterations(model, case)
    assert type(model.optimizer).__name__ == case.truth["optimizer"]["class_name"]
    _check_slots_exact(model, case)
    assert_resumes(model, case)


@pytest.mark.parametrize("case, name", _params(ALL_FILES))
def test_load_into_a_keras3_model_built_in_code_resumes(case, name):
    model = case.build_keras3(keras)
    model.compile(optimizer=case.keras3_optimizer(keras), loss="categorical_crossentropy")
    kom.load_into(model, str(case.file(name)))
    assert_exact_start(model, case)
    _check_iterations(model, case)
    _check_slots_exact(model, case)
    assert_resumes(model, case)


def test_a_fresh_optimizer_fails_the_tolerance_the_resumes_pass():
    """The check above can fail: the same model and weights with a fresh optimizer are rejected."""
    case = next(c for c in CASES if c.model == "resnet_small" and c.has("m.h5"))
    model = case.build_keras3(keras)
    model.compile(optimizer=case.keras3_optimizer(keras), loss="categorical_crossentropy")
    model.set_weights(case.before())
    with pytest.raises(AssertionError, match="outside the tolerance"):
        assert_resumes(model, case)


LARGE = os.environ.get("KOM_LARGE_MODELS", "efficientnetb0_adam_exp").split(",")


@pytest.mark.parametrize("case_name", [c for c in LARGE if c])
def test_a_large_application_written_now_by_tf_keras_upgrades_exactly(case_name, tmp_path):
    """A keras.applications model too large to commit (EfficientNetB0: 4M parameters, a 119 MB .h5 with
    Adam; KOM_LARGE_MODELS=densenet121_adam_exp,resnet50_adam_exp for more) is written by real tf_keras
    2.21 at test time with the corpus generator, upgraded to .keras and loaded by Keras 3: every weight
    (BatchNorm and Normalization statistics too), every Adam slot and the step counter exact.

    Its continuation is not judged: at 32x32 with batches of 4 (squeeze-excitation and BatchNorm over
    1x1 maps) two steps are chaotic. Measured on this case: the recorded slots installed by hand
    into Keras 3 Adam give max_trainable 2.1 / overall 0.80 at step 1, a fresh optimizer 3.9 / 1.9, so
    no tolerance tells them apart (fixtures/FORMAT.md: MobileNetV2 is judged on step 1 for the same
    reason). The exact slots are the proof here."""
    from models_corpus import ModelCase
    import json
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, str(FIXTURES / "generate" / "gen_models.py"), "--label", "k221",
                    "--case", case_name, "--out", str(tmp_path), "--formats", "m.h5"],
                   check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)
    path = Path(tmp_path) / case_name
    with open(path / "truth.json") as f:
        case = ModelCase(path, json.load(f))
    out = tmp_path / "out.keras"
    kom.upgrade(str(case.file("m.h5")), str(out))
    model = keras.models.load_model(str(out))
    assert_exact_start(model, case)
    _check_iterations(model, case)
    _check_slots_exact(model, case)


@pytest.mark.parametrize("case", [c for c in CASES if c.has("w.ckpt")], ids=lambda c: c.id)
def test_every_corpus_checkpoint_is_inspected_and_audited_without_a_hint(case, capsys):
    """No --optimizer: where the checkpoint cannot tell the algorithm, the candidates are reported
    and the recorded algorithm is one of them."""
    import json
    from keras_opt_migrate.cli import main
    path = str(case.file("w.ckpt"))
    assert main(["inspect", path, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    algorithm = case.truth["optimizer"]["class_name"].lower()
    named = [shown.get("optimizer")] + list(shown.get("candidates") or [])
    assert algorithm in named, (algorithm, named)
    assert main(["audit", path]) == 0, capsys.readouterr()


def test_the_corpus_legacy_adam_checkpoint_restores_into_a_real_tf_keras_legacy_adam_without_a_hint():
    """tf_keras' own model (nested Sequential, shared and frozen layers, BatchNormalization) built in
    code: weights set as saved, the optimizer state restored from the ambiguous legacy checkpoint
    (adam / adamax / lazyadam) with the model proving the pairing, then tf_keras' own train_on_batch
    continues on the recorded trajectory."""
    tf_keras = pytest.importorskip("tf_keras")
    from models_corpus import continuation_error, within
    case = next(c for c in CASES if c.label == "k221" and c.model == "nested" and c.generation == "v2")
    assert case.truth["optimizer"]["class_name"] == "Adam" and case.has("w.ckpt")
    assert kom.load_state(str(case.file("w.ckpt"))).ambiguous
    model = case.build_keras3(tf_keras)  # the builders take the Keras module: here tf_keras
    config = case.truth["optimizer"]["config"]
    opt = tf_keras.optimizers.legacy.Adam(**{k: config[k] for k in ("learning_rate", "beta_1", "beta_2",
                                                                    "epsilon", "amsgrad")})
    model.compile(optimizer=opt, loss="categorical_crossentropy")
    model.set_weights(case.before())
    kom.restore_into(opt, str(case.file("w.ckpt")), model=model)
    assert int(opt.iterations.numpy()) == case.truth["iterations"]
    steps = []
    for step in case.continuation_steps():
        x, y = case.step_data(step)
        model.train_on_batch(x, y)
        steps.append([w.numpy() for w in model.weights])
    errors = continuation_error(case, steps)
    assert within(case, errors), errors
    assert errors["step2"]["overall"] < 1e-4, errors["step2"]["overall"]  # the same library: rounding only
