"""A loss-scale wrapper written into the Keras 3 TF checkpoint layout, checked against real Keras 3.15.

Keras 3 checkpoints its LossScaleOptimizer as an optimizer of its own (`_iterations`, `_learning_rate`,
`step_counter`, `dynamic_scale`, listed in `_variables`) with the inner optimizer under `inner_optimizer`.
The k315 `adam_lso` case has Keras 3's own `tf.train.Checkpoint` of that run to compare with.
"""

import sys
from pathlib import Path

import numpy as np

import keras_opt_migrate as kom
from corpus import all_cases
from keras_opt_migrate.formats.tf_bundle import Bundle
from keras_opt_migrate.schema import materialize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "migration"))
import real_targets as rt  # noqa: E402

CASE = {c.id: c for c in all_cases()}["k315/keras3/adam_lso"]
SETTINGS = {"initial_scale": 1024.0, "dynamic_growth_steps": 2}
TOLERANCE = 1e-5


def _optimizer_tensors(prefix):
    bundle = Bundle(str(prefix))
    return {k: np.asarray(bundle.read(k)) for k in bundle.shapes if k.startswith("optimizer/")}


def _restore_and_continue(prefix, state):
    def restore(model):
        opt = rt.wrap_loss_scale("keras3", rt.make_optimizer("keras3", state), SETTINGS)
        model.compile(optimizer=opt, loss="mse")
        opt.build(model.trainable_variables)
        rt.tf().train.Checkpoint(model=model, optimizer=opt).restore(str(prefix)).assert_existing_objects_matched()
        assert int(opt.iterations) == CASE.truth["iterations"]
        assert rt.loss_scale(opt) == (2048.0, 1)
    return rt.keras_resume("keras3", CASE, restore)


def test_keras3_lso_checkpoint_is_keras3s_and_resumes_exactly(tmp_path):
    out = tmp_path / "o.ckpt"
    report = kom.convert(CASE.file("m.keras"), out, "keras3", format="tf_checkpoint")
    assert report.continuation == "exact"
    assert not [i for i in report.items if i.action in ("dropped", "zero-initialised")], report.items
    real = CASE.file("ckpt") / "ckpt-1"
    ours, theirs = _optimizer_tensors(out), _optimizer_tensors(real)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key

    back = kom.load_state(out, optimizer="adam")
    assert back.source["wrapper"] == "LossScaleOptimizer"
    assert float(materialize(back.extra["loss_scale"])) == 2048.0
    assert int(materialize(back.extra["loss_scale_good_steps"])) == 1
    state = kom.load_state(CASE.file("m.keras"))  # the checkpoint keeps no hyperparameters but the learning rate
    got, model = _restore_and_continue(out, state)
    want, reference = _restore_and_continue(real, state)
    assert rt.loss_scale(model.optimizer) == rt.loss_scale(reference.optimizer) == (4096.0, 1)
    assert rt.max_delta(got, CASE) <= TOLERANCE
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
