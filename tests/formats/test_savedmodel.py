"""The Keras 2 SavedModel reader against every SavedModel a real version wrote, plus hostile input."""

import os
import shutil

import pytest

from corpus import cases_with_file
from keras_opt_migrate import api, formats
from keras_opt_migrate.errors import FormatError
from keras_opt_migrate.formats import savedmodel
from tf_support import check_against_truth, mislabelled, truth_algorithm

CASES = cases_with_file("savedmodel")


def _ids(pairs):
    return ["%s/%s" % (case.id, name) for case, name in pairs]


@pytest.mark.parametrize("case,name", CASES, ids=_ids(CASES))
def test_reads_real_savedmodel(case, name):
    path = str(case.file(name))
    assert formats.detect(path) is savedmodel.FORMAT
    state = api.load_state(path)  # keras_metadata.pb names the algorithm: no hint needed
    check_against_truth(state, case)
    if not mislabelled(case):
        assert state.variable_names == [w["name"].split(":")[0] for w in case.truth["model_weights"]]
        assert state.source["class_name"].split(">")[-1] == case.truth["optimizer"]["class_name"]
        assert state.source["keras_version"] == case.truth["versions"]["keras"]
        assert state.source["tensorflow_version"] == case.truth["versions"]["tensorflow"]


def _copy(tmp_path):
    for case, name in CASES:
        if not mislabelled(case) and truth_algorithm(case) == "adam":
            dst = tmp_path / "sm"
            shutil.copytree(case.file(name), dst)
            return case, dst
    pytest.skip("no SavedModel fixture yet")


def test_without_metadata_the_candidates_are_recorded(tmp_path):
    case, sm = _copy(tmp_path)
    os.unlink(sm / "keras_metadata.pb")
    unhinted = api.load_state(str(sm))  # the 2.11+ slot lists alone cannot tell Adam from AdamW
    assert unhinted.candidates == ["adam", "adamw"]
    state = api.load_state(str(sm), optimizer="adam")
    assert state.candidates == []
    assert state.variable_names[0] == "layer_with_weights-0/kernel" and state.warnings


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_malformed_metadata(tmp_path, damage):
    case, sm = _copy(tmp_path)
    meta = sm / "keras_metadata.pb"
    data = meta.read_bytes()
    meta.write_bytes(os.urandom(2048) if damage == "random" else data[: len(data) // 3])
    with pytest.raises(FormatError) as e:
        api.load_state(str(sm))
    assert "keras_metadata.pb" in str(e.value) and "\n" not in str(e.value)


def test_missing_variables_shard(tmp_path):
    case, sm = _copy(tmp_path)
    os.unlink(sm / "variables" / "variables.data-00000-of-00001")
    with pytest.raises(FormatError, match="missing data shard") as e:
        api.load_state(str(sm))
    assert str(sm) in str(e.value)


def test_corrupt_saved_model_pb(tmp_path):
    case, sm = _copy(tmp_path)
    pb = sm / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:1000])
    with pytest.raises(FormatError, match="saved_model.pb"):
        api.load_state(str(sm))
