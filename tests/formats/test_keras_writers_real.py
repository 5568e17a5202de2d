"""The Keras file writers against the real versions: every full-model fixture (`m.h5`, Keras 2.12's
HDF5 `m_default.keras`, `m.keras`) and every Keras 3 `m.weights.h5`, of every label and group
(Keras v1 and TFOptimizer files included), converted to every generation it can reach and resumed
there: `.h5` loaded by tf_keras 2.21 (legacy and new optimizers), `.keras` by Keras 3.15 and, for
the 2.11+ generation, by tf_keras; Keras 3 sources (whose model config tf_keras cannot load) reach
tf_keras as TF checkpoints; `.weights.h5` goes to a Keras 3 model compiled with the optimizer.

The loaded optimizer must hold as many variables as the file, the file's iterations and loss
scale; after the two recorded continuation steps the weights must equal the truth `after` within
1e-5 where the conversion report says `exact` or `float-tolerance`, and the report must say
`different` and why otherwise. Set KOM_RESULTS=<dir> to keep one JSON line per job (for reports).
See `tests/migration/resume_matrix.py` for the routes, the expected refusals and model reuse.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "migration"))

import resume_matrix as rm  # noqa: E402

JOBS = rm.jobs(rm.MODEL_KINDS + rm.WEIGHTS_KINDS)


@pytest.mark.parametrize("job", rm.params(JOBS))
def test_converted_file_resumes_in_the_real_version(job):
    rm.run_and_check(job)
