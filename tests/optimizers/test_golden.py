"""LazyAdam (tensorflow-addons) and ClippyAdagrad (tensorflow-recommenders) against golden
trajectories written once by the real packages (tests/golden/make_golden.py, TF 2.15)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_opt_migrate.optimizers import experimental as ex
from keras_opt_migrate.optimizers import v2

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
META = json.loads((GOLDEN / "golden.json").read_text())


def _replay(golden, case, optimizer, weights_of, tol):
    kernel = tf.Variable(golden["init/kernel"], name="kernel")
    emb = tf.Variable(golden["init/emb"], name="emb")
    indices = tf.constant(golden["emb_indices"])
    worst = 0.0
    for t in range(META["steps"]):
        grads = [tf.constant(golden["grad/%d/kernel" % t]),
                 tf.IndexedSlices(tf.constant(golden["grad/%d/emb_values" % t]), indices, tf.constant([12, 3]))]
        optimizer.apply_gradients(zip(grads, [kernel, emb]))
        got = [kernel.numpy(), emb.numpy()] + weights_of(optimizer)
        want = [golden["%s/step/%d/kernel" % (case, t)], golden["%s/step/%d/emb" % (case, t)]]
        want += [golden["%s/step/%d/opt/%d" % (case, t, i)] for i in range(len(got) - 2)]
        assert "%s/step/%d/opt/%d" % (case, t, len(got) - 2) not in golden, "fewer optimizer weights than golden"
        for g, w in zip(got, want):
            assert g.shape == w.shape
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w))) if g.size else 0.0)
    assert worst <= tol, "%s: max |diff| %g > %g" % (case, worst, tol)
    return kernel, emb


@pytest.mark.parametrize("case", ["lazyadam", "lazyadam_decay"])
def test_lazyadam_matches_tensorflow_addons(case):
    golden = dict(np.load(GOLDEN / "lazyadam.npz"))
    optimizer = v2.LazyAdam(**META["cases"][case])
    _, emb = _replay(golden, case, optimizer, lambda o: o.get_weights(), tol=1e-6)
    # rows 8..11 never receive a gradient: LazyAdam leaves their m, v and values alone
    np.testing.assert_array_equal(emb.numpy()[8:], golden["init/emb"][8:])
    np.testing.assert_array_equal(optimizer.get_slot(emb, "m").numpy()[8:], 0.0)


def test_lazyadam_refuses_amsgrad():
    with pytest.raises(ValueError, match="amsgrad"):
        v2.LazyAdam(amsgrad=True)


@pytest.mark.parametrize("case", ["clippy_export", "clippy_clip_accumulator", "clippy_standard"])
def test_clippyadagrad_matches_tensorflow_recommenders(case):
    golden = dict(np.load(GOLDEN / "clippyadagrad.npz"))
    optimizer = ex.ClippyAdagrad(**META["cases"][case])
    _replay(golden, case, optimizer, lambda o: [v.numpy() for v in o.variables], tol=1e-6)
    if optimizer.export_clipping_factors:
        assert len(optimizer.clipping_factors) == 2 and all(f.shape == () for f in optimizer.clipping_factors)
    else:
        assert optimizer.clipping_factors == []


def test_clippyadagrad_refuses_both_accumulator_modes():
    with pytest.raises(ValueError, match="cannot both be set"):
        ex.ClippyAdagrad(clip_accumulator_update=True, use_standard_accumulator_update=True)
