"""The `.keras` archive and `.weights.h5` readers against every fixture, plus hostile archives."""

import io
import json
import zipfile

import numpy as np
import pytest

from corpus import assert_matches_truth, cases_with_file
from keras_opt_migrate import formats
from keras_opt_migrate.errors import FormatError
from keras_opt_migrate.formats import keras_archive
from keras_opt_migrate.schema import LazyTensor

ARCHIVES = cases_with_file("keras_v3") + cases_with_file("keras_zip")
WEIGHTS = cases_with_file("weights_h5")


def expected_generation(case):
    """The generation the file really holds.

    Some k212 `experimental/` fixtures recorded a legacy optimizer (truth `optimizer.module`
    `keras.optimizers.legacy.*`, names `SGD/iter:0`) although truth `generation` says
    `experimental`; the file is what the reader must follow.
    """
    module = case.truth["optimizer"].get("module") or ""
    return "v2" if ".legacy" in module and case.generation == "experimental" else case.generation


def _ids(pairs):
    return ["%s/%s" % (case.id, name) for case, name in pairs]


def _inner(case):
    opt = case.truth["optimizer"]
    return opt["config"].get("inner_optimizer", opt)


def _check_common(state, case):
    state.validate()
    assert state.generation == expected_generation(case)
    for per_var in state.slots.values():
        assert all(isinstance(t, LazyTensor) for t in per_var.values())
    for var, per_var in state.slots.items():
        for slot in per_var:
            assert "slots/%s/%s" % (var, slot) in state.source["keys"]
    for extra in state.extra:
        assert "extra/%s" % extra in state.source["keys"]
    names = [w["name"] for w in case.truth["optimizer_weights"]]
    if state.generation == "keras3" and "learning_rate" in state.extra:
        i = next(i for i, n in enumerate(names) if n.endswith("learning_rate") and not n.startswith("loss_scale_optimizer/learning"))
        assert np.array_equal(np.asarray(state.extra["learning_rate"]), case.opt_array(i))
    if state.generation == "experimental":  # Keras 2 new: no learning rate in .keras (LAYOUTS §2.4)
        assert "learning_rate" not in state.extra
    if state.optimizer == "nadam":
        if state.generation == "keras3":
            assert np.array_equal(np.asarray(state.extra["u_product"]), case.opt_array(names.index("nadam/variable")))
        else:  # LAYOUTS §2.1: Keras 2 new Nadam's _u_product is not in optimizer.variables
            assert "u_product" not in state.extra and "extra/u_product" in state.source["missing"]
            assert any("u_product" in w for w in state.warnings)
    if "lso" in case.truth["case"]:
        if state.generation == "keras3":
            assert float(np.asarray(state.extra["loss_scale"])) == 2048.0
            assert int(np.asarray(state.extra["loss_scale_good_steps"])) == 1
        else:
            assert "extra/loss_scale" in state.source["missing"]
    if case.truth["optimizer"]["config"].get("gradient_accumulation_steps"):
        assert int(np.asarray(state.extra["gradient_accumulation_iterations"])) == 3


@pytest.mark.parametrize("case,name", ARCHIVES, ids=_ids(ARCHIVES))
def test_reads_real_archive(case, name):
    path = str(case.file(name))
    assert formats.detect(path) is keras_archive.FORMAT
    state = keras_archive.FORMAT.read(path)
    assert state.source["keras_version"] == case.truth["versions"].get("keras")
    assert state.variable_names == [w["name"].split(":")[0] for w in case.truth["model_weights"]]
    if expected_generation(case) == "v2":  # LAYOUTS §1.4: Keras drops legacy optimizer state from .keras
        assert state.slots == {} and state.iterations is None
        assert state.warnings[0].startswith("the file holds no optimizer state: Keras dropped it on save")
        assert state.source["missing"] == ["optimizer"]
        return
    _check_common(state, case)
    assert_matches_truth(state, case)
    for key in ("beta_1", "momentum", "rho", "epsilon", "amsgrad", "centered"):
        if key in _inner(case)["config"]:
            assert state.config[key] == pytest.approx(_inner(case)["config"][key], rel=1e-6), key


@pytest.mark.parametrize("case,name", WEIGHTS, ids=_ids(WEIGHTS))
def test_reads_real_weights_h5(case, name):
    path = str(case.file(name))
    assert formats.detect(path) is keras_archive.WEIGHTS_FORMAT
    with pytest.raises(FormatError, match="pass optimizer=") as e:
        keras_archive.WEIGHTS_FORMAT.read(path)
    assert path in str(e.value)
    inner = _inner(case)
    state = keras_archive.WEIGHTS_FORMAT.read(path, optimizer=inner["class_name"], config=inner["config"])
    _check_common(state, case)
    assert_matches_truth(state, case)
    assert any("no model config" in w for w in state.warnings)


# -- hostile and malformed input ---------------------------------------------------------

def _a_keras3_archive():
    for case, name in ARCHIVES:
        if case.generation == "keras3" and case.truth["case"] == "adam":
            return case.file(name)
    pytest.skip("no Keras 3 adam archive")


def _rewrite(src, dst, replace=None, add=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if replace and info.filename in replace:
                data = replace[info.filename]
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_dotdot_member_is_refused(tmp_path):
    bad = _rewrite(_a_keras3_archive(), tmp_path / "evil.keras", add={"../escape.txt": b"x"})
    with pytest.raises(FormatError, match="unsafe member") as e:
        keras_archive.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def test_absolute_member_is_refused(tmp_path):
    bad = _rewrite(_a_keras3_archive(), tmp_path / "evil.keras", add={"/etc/x": b"x"})
    with pytest.raises(FormatError, match="unsafe member"):
        keras_archive.FORMAT.read(str(bad))


def test_bad_config_json(tmp_path):
    bad = _rewrite(_a_keras3_archive(), tmp_path / "bad.keras", replace={"config.json": b"{oops"})
    with pytest.raises(FormatError, match="config.json") as e:
        keras_archive.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def test_truncated_archive(tmp_path):
    data = _a_keras3_archive().read_bytes()
    bad = tmp_path / "trunc.keras"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError) as e:
        keras_archive.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def test_truncated_inner_weights(tmp_path):
    src = _a_keras3_archive()
    with zipfile.ZipFile(src) as z:
        weights = z.read("model.weights.h5")
    bad = _rewrite(src, tmp_path / "inner.keras", replace={"model.weights.h5": weights[: len(weights) // 3]})
    with pytest.raises(FormatError) as e:
        keras_archive.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def test_optimizer_vars_must_be_numbered(tmp_path):
    import h5py
    src = _a_keras3_archive()
    with zipfile.ZipFile(src) as z:
        buf = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(buf, "r+") as f:
        f["optimizer/vars/x"] = np.zeros(3, np.float32)
    bad = _rewrite(src, tmp_path / "vars.keras", replace={"model.weights.h5": buf.getvalue()})
    with pytest.raises(FormatError, match="0.."):
        keras_archive.FORMAT.read(str(bad))


def test_shape_contradicting_layout(tmp_path):
    import h5py
    src = _a_keras3_archive()
    with zipfile.ZipFile(src) as z:
        buf = io.BytesIO(z.read("model.weights.h5"))
    with h5py.File(buf, "r+") as f:
        del f["optimizer/vars/3"]
        f["optimizer/vars/3"] = np.zeros((9, 9), np.float32)
    bad = _rewrite(src, tmp_path / "shape.keras", replace={"model.weights.h5": buf.getvalue()})
    with pytest.raises(FormatError, match="build order") as e:
        keras_archive.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def test_config_without_layers(tmp_path):
    bad = _rewrite(_a_keras3_archive(), tmp_path / "nolayers.keras",
                   replace={"config.json": json.dumps({"class_name": "Functional", "config": {}}).encode()})
    with pytest.raises(FormatError, match="layers"):
        keras_archive.FORMAT.read(str(bad))
