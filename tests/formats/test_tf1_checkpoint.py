"""The TF1 name-based (Saver) checkpoint reader against every real Saver checkpoint, plus hostile input."""

import os
import shutil

import numpy as np
import pytest

from corpus import cases_with_file
from keras_opt_migrate import api, formats
from keras_opt_migrate.errors import FormatError, MappingError
from keras_opt_migrate.formats import tf1_checkpoint
from tf_support import check_against_truth, load

CASES = cases_with_file("tf1_saver")


def _ids(pairs):
    return ["%s/%s" % (case.id, name) for case, name in pairs]


def _case(name):
    for case, file_name in CASES:
        if case.truth["case"] == name:
            return case, str(case.file(file_name))
    pytest.skip("fixture tf1_namebased/%s not generated yet" % name)


@pytest.mark.parametrize("case,name", CASES, ids=_ids(CASES))
def test_reads_real_saver_checkpoint(case, name):
    path = str(case.file(name))
    assert formats.detect(path) is tf1_checkpoint.FORMAT
    state, _ = load(case, path)
    check_against_truth(state, case)
    assert state.variable_names == [w["name"].split(":")[0] for w in case.truth["model_weights"]]
    assert not state.warnings


@pytest.mark.parametrize("case,name", [c for c in CASES if c[0].truth["case"].startswith("adam")],
                         ids=_ids([c for c in CASES if c[0].truth["case"].startswith("adam")]))
def test_beta_powers_equal_truth_and_agree_with_global_step(case, name):
    path = str(case.file(name))
    beta_1 = case.truth["optimizer"]["config"]["beta1"]
    state = api.load_state(path, config={"beta_1": beta_1})
    names = [w["name"] for w in case.truth["optimizer_weights"]]
    for extra in ("beta1_power", "beta2_power"):
        assert np.array_equal(np.asarray(state.extra[extra]), case.opt_array(names.index(extra + ":0")))
        assert state.key_of(None, extra) == extra
    assert state.iterations == 3 and not state.warnings
    state = api.load_state(path, config={"beta_1": 0.5})
    assert state.iterations == 3 and any("global_step says 3" in w for w in state.warnings)


def test_directory_with_checkpoint_file():
    case, path = _case("rmsprop")
    state = api.load_state(os.path.dirname(path))
    assert state.optimizer == "rmsprop" and set(state.slot_names()) == {"velocity", "average_gradient", "momentum"}


def test_gradient_descent_vs_proximal_records_both():
    case, path = _case("gradient_descent")
    state = api.load_state(path)  # no slots, no extras: the keys cannot tell the two apart
    assert state.candidates == ["sgd", "proximal_gradient_descent"] and state.optimizer == "sgd"
    hinted = api.load_state(path, optimizer="proximal_gradient_descent")
    assert hinted.slots == {} and hinted.candidates == []


def test_hint_must_fit():
    case, path = _case("adam")
    with pytest.raises(MappingError, match="does not fit"):
        api.load_state(path, optimizer="ftrl")


def test_without_meta_the_order_is_flagged(tmp_path):
    case, path = _case("adam")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(path + suffix, str(tmp_path / "model.ckpt") + suffix)
    state = api.load_state(str(tmp_path / "model.ckpt"))
    assert any("alphabetical" in w for w in state.warnings)
    hint = [(w["name"].split(":")[0], w["shape"]) for w in case.truth["model_weights"]]
    state = api.load_state(str(tmp_path / "model.ckpt"), variables=hint)
    assert not state.warnings and state.variable_names == [n for n, _ in hint]


def test_missing_data_shard(tmp_path):
    case, path = _case("adam")
    shutil.copy(path + ".index", str(tmp_path / "model.ckpt.index"))
    with pytest.raises(FormatError, match="missing data shard") as e:
        api.load_state(str(tmp_path / "model.ckpt"), format="tf1_checkpoint")
    assert str(tmp_path / "model.ckpt") in str(e.value)


def test_corrupt_meta_is_an_error(tmp_path):
    case, path = _case("adam")
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        shutil.copy(path + suffix, str(tmp_path / "model.ckpt") + suffix)
    meta = tmp_path / "model.ckpt.meta"
    meta.write_bytes(meta.read_bytes()[:5000])
    with pytest.raises(FormatError, match="MetaGraphDef") as e:
        api.load_state(str(tmp_path / "model.ckpt"))
    assert "model.ckpt.meta" in str(e.value)
