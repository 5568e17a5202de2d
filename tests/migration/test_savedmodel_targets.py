"""Where a Keras 2 SavedModel's optimizer state can go, checked against real TensorFlow / tf_keras / Keras 3.

A SavedModel is rewritten only with its own generation's optimizer: its `saved_model.pb` pins the
optimizer's objects, and the real loaders refuse anything else (shown here by writing the other
generation anyway). Every other generation is reached through a `.keras` archive (the model
config comes from `keras_metadata.pb`) or a TF checkpoint, and `upgrade` picks between the two.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras_opt_migrate as kom  # noqa: E402
import real_targets as rt  # noqa: E402
from corpus import all_cases  # noqa: E402
from keras_opt_migrate.formats import savedmodel  # noqa: E402

CASES = {c.id: c for c in all_cases()}
LEGACY = CASES["k221/v2/adam_amsgrad"]
NEW = CASES["k221/experimental/adam"]
TOLERANCE = 1e-5


def _resume(model, case):
    x, y = case.batches()
    for i in rt.CONTINUE:
        model.train_on_batch(x[i], y[i])
    return rt.max_delta([np.asarray(w) for w in model.trainable_weights], case)


def test_another_generation_inside_a_savedmodel_is_what_the_real_loaders_refuse(tmp_path, monkeypatch):
    """Written anyway (our generation check bypassed), the 2.11+ state in a legacy SavedModel reads back fine,
    but tf.saved_model.load and tf_keras load_model both refuse it; so the writer refuses and names the routes."""
    import tensorflow as tf
    import tf_keras
    src = str(LEGACY.file("sm"))
    with pytest.raises(kom.FormatError) as e:
        kom.convert(src, tmp_path / "sm_new", "experimental")
    message = str(e.value)
    assert "holds a v2 optimizer" in message and ".keras archive" in message and "TF checkpoint" in message
    assert "\n" not in message and os.listdir(tmp_path) == []

    class Pretend:
        generation = "experimental"
    monkeypatch.setattr(savedmodel, "_locate", lambda graph, bundle, node: Pretend())
    kom.convert(src, tmp_path / "forced", "experimental")
    assert kom.load_state(tmp_path / "forced").generation == "experimental"
    for load in (tf.saved_model.load, tf_keras.models.load_model):
        with pytest.raises(AssertionError, match="not bound to checkpointed values"):
            load(str(tmp_path / "forced"))


def test_dry_run_reports_the_other_generation_refusal(tmp_path, capsys):
    """The refusal depends on the source's graph, not only on the target: --dry-run says it too (exit 2, one
    line, nothing written), and a same-generation dry run passes."""
    from keras_opt_migrate.cli import main
    src = str(LEGACY.file("sm"))
    assert main(["convert", src, str(tmp_path / "sm_new"), "--to", "experimental", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a v2 optimizer" in err and "Traceback" not in err
    assert main(["convert", src, str(tmp_path / "sm_same"), "--to", "v2", "--dry-run"]) == 0
    assert os.listdir(tmp_path) == []


def test_legacy_savedmodel_to_a_tf_keras_keras_with_a_new_optimizer_resumes(tmp_path):
    """The route the refusal names: tf_keras load_model restores the 2.11+ optimizer's state from the .keras (a
    SavedModel's own load_model never restores optimizer state, LAYOUTS §7.2)."""
    import tf_keras
    report = kom.convert(LEGACY.file("sm"), tmp_path / "m.keras", "experimental")
    assert report.target_format == "keras_archive" and report.continuation == "float-tolerance"
    model = tf_keras.models.load_model(tmp_path / "m.keras")
    assert type(model.optimizer).__module__.startswith("tf_keras.src.optimizers.adam")
    assert int(model.optimizer.iterations) == 3 and model.optimizer.amsgrad
    assert _resume(model, LEGACY) <= TOLERANCE


def test_upgrade_savedmodel_to_keras3_keras(tmp_path):
    import keras
    report = kom.upgrade(NEW.file("sm"), tmp_path / "m.keras")
    assert report.target_format == "keras_archive"
    model = keras.models.load_model(tmp_path / "m.keras")
    assert int(model.optimizer.iterations) == 3
    assert _resume(model, NEW) <= TOLERANCE


def test_upgrade_savedmodel_to_a_checkpoint_by_name_on_the_command_line(tmp_path):
    """Any output not named *.keras gets the Keras 3 TF checkpoint layout; Keras 3 restores it."""
    import keras
    out = str(tmp_path / "k3.ckpt")
    done = subprocess.run([sys.executable, "-m", "keras_opt_migrate", "upgrade", str(LEGACY.file("sm")), out],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(tf_checkpoint)" in done.stdout
    target = kom.migrate(kom.load_state(LEGACY.file("sm")), "keras3")[0]

    def restore(model):
        opt = rt.make_optimizer("keras3", target)
        model.compile(optimizer=opt, loss="mse")
        opt.build(model.trainable_variables)
        rt.tf().train.Checkpoint(model=model, optimizer=opt).restore(out).assert_existing_objects_matched()
        assert int(opt.iterations) == 3

    got, _ = rt.keras_resume("keras3", LEGACY, restore)
    assert rt.max_delta(got, LEGACY) <= TOLERANCE
    assert keras.__version__.startswith("3.")


def test_upgrade_of_a_model_without_a_keras3_form_says_what_to_do(tmp_path):
    import tf_keras
    layers = tf_keras.layers
    inp = layers.Input((3,))
    # a Lambda's function is code stored in the file: never run, so Keras 3 cannot rebuild the model
    out = layers.Dense(2, name="out")(layers.Lambda(lambda t: t * 2.0, name="twice")(inp))
    model = tf_keras.Model(inp, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    model.train_on_batch(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))
    model.save(tmp_path / "sm", save_format="tf")
    (tmp_path / "up").mkdir()
    with pytest.raises(kom.FormatError) as e:
        kom.upgrade(tmp_path / "sm", tmp_path / "up" / "m.keras")
    message = str(e.value)
    assert "'twice'" in message and "Lambda" in message and "m.ckpt" in message and "\n" not in message
    assert os.listdir(tmp_path / "up") == []
    report = kom.upgrade(tmp_path / "sm", tmp_path / "up" / "m.ckpt")
    assert report.target_format == "tf_checkpoint"
    assert kom.load_state(tmp_path / "up" / "m.ckpt", optimizer="adam").iterations == 1
