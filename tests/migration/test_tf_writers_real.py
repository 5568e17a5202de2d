"""TF checkpoint, TF1 and SavedModel sources against the REAL versions (tf 2.21, tf_keras 2.21, Keras 3.15).

Every `w.ckpt`, `ckpt/ckpt-1`, `sm` and `model.ckpt` fixture of every label and group (Keras v1
checkpoints included: they hold no optimizer, and convert must say so) is converted to every
generation it can reach: tf_keras legacy (v2) and new (experimental) and Keras 3 as a TF
checkpoint, TF1 as a name-based checkpoint (from `model.ckpt`) or an object-based one, a
SavedModel also as a SavedModel of its own generation and as a Keras 3 `.keras` (`upgrade`).
The real target restores the file and trains the 2 recorded continuation steps; the weights must
equal the truth `after` within 1e-5 where the report says `exact` or `float-tolerance`, and the
report must say `different` (with a reason) otherwise. See `resume_matrix` for the routes, the
refusals that are expected, and how compiled models are reused to keep this fast.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "formats"))

import resume_matrix as rm  # noqa: E402

JOBS = rm.jobs(rm.TF_KINDS)


@pytest.mark.parametrize("job", rm.params(JOBS))
def test_resume_in_real_target(job):
    rm.run_and_check(job)
