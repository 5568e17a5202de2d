"""The Keras HDF5 reader against every `.h5` fixture written by a real version, plus hostile input."""

import h5py
import numpy as np
import pytest

from corpus import assert_matches_truth, cases_with_file
from keras_opt_migrate import formats
from keras_opt_migrate.errors import FormatError, UnsupportedFormatError
from keras_opt_migrate.formats import hdf5
from keras_opt_migrate.schema import LazyTensor

H5_CASES = cases_with_file("h5")


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


def _no_optimizer_state(case):
    """TFOptimizer-wrapped TF1 optimizers: Keras writes neither optimizer_weights nor training_config."""
    return case.truth["group"] == "tfoptimizer"


@pytest.mark.parametrize("case,name", H5_CASES, ids=_ids(H5_CASES))
def test_reads_real_h5(case, name):
    path = case.file(name)
    assert formats.detect(str(path)) is hdf5.FORMAT
    if _no_optimizer_state(case):
        with pytest.raises(UnsupportedFormatError, match="no optimizer state"):
            hdf5.FORMAT.read(str(path))
        return
    state = hdf5.FORMAT.read(str(path))
    state.validate()
    assert state.generation == expected_generation(case)
    if expected_generation(case) != case.generation:
        _assert_matches_truth_by_name(state, case)  # truth's var_index/slot are empty for these
        return
    assert_matches_truth(state, case)
    # lazy, and every slot and extra has its dataset recorded
    for per_var in state.slots.values():
        assert all(isinstance(t, LazyTensor) for t in per_var.values())
    keys = state.source["keys"]
    for var, per_var in state.slots.items():
        for slot in per_var:
            assert keys["slots/%s/%s" % (var, slot)].startswith("optimizer_weights/")
    for extra in state.extra:
        assert "extra/%s" % extra in keys
    assert state.source["keras_version"] == case.truth["versions"].get("keras", state.source["keras_version"])
    # config: hyperparameters of the (inner) optimizer under Keras names
    truth_config = case.truth["optimizer"]["config"]
    truth_config = truth_config.get("inner_optimizer", {}).get("config", truth_config)
    for key in ("beta_1", "momentum", "rho", "epsilon", "amsgrad", "centered"):
        if key in truth_config:
            assert state.config[key] == pytest.approx(truth_config[key], rel=1e-6), key
    assert "learning_rate" in state.config and "lr" not in state.config
    _check_extras(state, case)


def _assert_matches_truth_by_name(state, case):
    """Every weight truth recorded, found through the key the reader reports, bit-exact."""
    from keras_opt_migrate.schema import materialize
    by_key = {key: name for name, key in state.source["keys"].items()}
    for i, w in enumerate(case.truth["optimizer_weights"]):
        key = "optimizer_weights/" + w["name"]
        assert key in by_key, "%s: %s not read (keys %s)" % (case.id, w["name"], sorted(by_key))
        what = by_key[key]
        if what == "iterations":
            assert state.iterations == int(case.opt_array(i))
            continue
        kind, _, rest = what.partition("/")
        var, _, slot = rest.rpartition("/")
        got = state.slots[var][slot] if kind == "slots" else state.extra[rest]
        assert np.array_equal(materialize(got), case.opt_array(i)), w["name"]
    assert len(by_key) == len(case.truth["optimizer_weights"])


def _check_extras(state, case):
    arrays = case.arrays
    names = [w["name"] for w in case.truth["optimizer_weights"]]
    gen, opt = state.generation, state.optimizer
    if gen == "keras3" and "learning_rate" in state.extra:
        i = next(i for i, n in enumerate(names) if n.endswith("/learning_rate") and not n.startswith("loss_scale_optimizer/learning"))
        assert np.array_equal(np.asarray(state.extra["learning_rate"]), arrays["opt/%d" % i])
    if opt == "nadam":
        if gen in ("v2", "keras3"):
            assert np.asarray(state.extra["u_product"]).shape == ()
            want = next(i for i, n in enumerate(names) if "momentum_cache" in n or n.endswith("/variable"))
            assert np.array_equal(np.asarray(state.extra["u_product"]), arrays["opt/%d" % want])
        elif gen == "experimental":  # LAYOUTS §2.1: not in optimizer.variables, so not in h5
            assert "u_product" not in state.extra
            assert "extra/u_product" in state.source["missing"]
            assert any("u_product" in w for w in state.warnings)
    if case.truth["iterations"] is None:  # v1 Adagrad/Adadelta/RMSprop keep no counter
        assert state.iterations is None
        assert any("no iteration count" in w for w in state.warnings)
    if "lso" in case.truth["case"]:
        if gen == "keras3":
            assert float(np.asarray(state.extra["loss_scale"])) == 2048.0
        else:
            assert "loss_scale" not in state.extra and "extra/loss_scale" in state.source["missing"]


def test_tfoptimizer_h5_with_hint_reads_empty():
    cases = [(c, n) for c, n in H5_CASES if _no_optimizer_state(c)]
    if not cases:
        pytest.skip("no TFOptimizer h5 fixture generated yet")
    case, name = cases[0]
    state = hdf5.FORMAT.read(str(case.file(name)), optimizer="adam")
    assert state.slots == {} and state.iterations is None
    assert any("no optimizer state" in w for w in state.warnings)


# -- hostile and malformed input ---------------------------------------------------------

def _fixture(kind_case):
    for case, name in H5_CASES:
        if case.truth["case"] == kind_case and case.generation == "v2":
            return case.file(name)
    pytest.skip("no v2 %s h5 fixture yet" % kind_case)


def test_truncated_h5_names_the_file(tmp_path):
    src = _fixture("adam").read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(FormatError) as e:
        hdf5.FORMAT.read(str(bad))
    assert str(bad) in str(e.value)


def _copy(tmp_path, name="m.h5"):
    dst = tmp_path / name
    dst.write_bytes(_fixture("adam").read_bytes())
    return dst


def test_soft_link_is_refused(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["optimizer_weights"].attrs["weight_names"]]
        target = "optimizer_weights/" + names[1]
        data = f[target][()]
        del f[target]
        f["elsewhere"] = data
        f[target] = h5py.SoftLink("/elsewhere")
    with pytest.raises(FormatError, match="SoftLink"):
        hdf5.FORMAT.read(str(path))


def test_missing_dataset(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["optimizer_weights"].attrs["weight_names"]]
        del f["optimizer_weights/" + names[2]]
    with pytest.raises(FormatError, match="missing") as e:
        hdf5.FORMAT.read(str(path))
    assert str(path) in str(e.value)


def test_shape_contradicting_layout(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["optimizer_weights"].attrs["weight_names"]]
        target = "optimizer_weights/" + names[1]
        del f[target]
        f[target] = np.zeros((7, 7), np.float32)
    with pytest.raises(FormatError) as e:
        hdf5.FORMAT.read(str(path))
    assert str(path) in str(e.value)


def test_bad_training_config_json(tmp_path):
    path = _copy(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["training_config"] = "{not json"
    with pytest.raises(FormatError, match="training_config"):
        hdf5.FORMAT.read(str(path))


def test_weight_order_comes_from_the_attribute_not_h5py():
    """h5py lists datasets alphabetically; the v2 list is iter, all m, all v."""
    path = _fixture("adam")
    state = hdf5.FORMAT.read(str(path))
    keys = state.source["keys"]
    assert keys["slots/hidden/kernel/momentum"].endswith("Adam/hidden/kernel/m:0")
    assert keys["slots/out/bias/velocity"].endswith("Adam/out/bias/v:0")
    assert state.source["mapping"]["method"] == "by_name"
    assert state.source["mapping"]["build_order_agrees"] is True
