"""The object-based TF checkpoint reader against every checkpoint a real version wrote, plus hostile input."""

import os
import shutil

import numpy as np
import pytest

from corpus import FIXTURES, cases_with_file
from keras_opt_migrate import api, formats
from keras_opt_migrate.candidates import as_candidate
from keras_opt_migrate.errors import FormatError, MappingError, UnsupportedFormatError
from keras_opt_migrate.formats import tf_checkpoint
from tf_support import check_against_truth, load, mislabelled

CASES = cases_with_file("tf_checkpoint") + cases_with_file("save_weights_tf")


def _ids(pairs):
    return ["%s/%s" % (case.id, name) for case, name in pairs]


@pytest.mark.parametrize("case,name", CASES, ids=_ids(CASES))
def test_reads_real_checkpoint(case, name):
    path = str(case.file(name))
    assert formats.detect(path) is tf_checkpoint.FORMAT
    if case.generation == "v1":
        # Keras v1 optimizers run in graph mode; save_weights writes the model only (LAYOUTS 4).
        with pytest.raises(UnsupportedFormatError, match="no optimizer"):
            api.load_state(path)
        return
    state, _ = load(case, path)
    check_against_truth(state, case)
    assert state.source["format"] == "tf_checkpoint"
    for name_, key in state.source["keys"].items():
        if name_.startswith(("slots/", "extra/")) and key:
            assert key.endswith("/.ATTRIBUTES/VARIABLE_VALUE"), key


def _first(group, case_name, file_name="w.ckpt"):
    for case, name in CASES:
        if (case.truth["group"] == group and case.truth["case"] == case_name and name == file_name
                and not mislabelled(case)):
            return case, str(case.file(name))
    pytest.skip("fixture %s/%s/%s not generated yet" % (group, case_name, file_name))


def test_model_variables_named_by_object_path_in_build_order():
    case, path = _first("v2", "adam_amsgrad")
    state = api.load_state(path)
    assert state.variable_names == ["layer_with_weights-0/kernel", "layer_with_weights-0/bias",
                                    "layer_with_weights-1/kernel", "layer_with_weights-1/bias"]
    assert state.key_of("layer_with_weights-0/kernel", "velocity_hat") == (
        "layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/vhat/.ATTRIBUTES/VARIABLE_VALUE")
    assert state.config["beta_1"] == pytest.approx(0.8)


def test_directory_and_index_path_are_accepted():
    case, _ = _first("v2", "rmsprop", "ckpt/ckpt-1")
    directory = str(case.file("ckpt"))
    for path in (directory, directory + "/ckpt-1.index", directory + "/ckpt-1"):
        assert formats.detect(path) is tf_checkpoint.FORMAT
        assert api.load_state(path).optimizer == "rmsprop"


def test_legacy_adam_vs_adamax_records_the_candidates():
    case, path = _first("v2", "adam")
    state = api.load_state(path)  # slot edges m, v and beta_1 / beta_2 variables: Adam's, Adamax's and LazyAdam's
    assert state.candidates == ["adam", "lazyadam", "adamax"] and state.optimizer == "adam"
    assert set(state.slot_names()) == {"momentum", "velocity"}
    as_adamax = as_candidate(state, "adamax")
    hinted = api.load_state(path, optimizer="adamax")  # identical state: the hint decides
    assert hinted.optimizer == as_adamax.optimizer == "adamax" and hinted.candidates == []
    assert set(hinted.slot_names()) == set(as_adamax.slot_names()) == {"momentum", "norm"}
    assert hinted.source["keys"] == as_adamax.source["keys"]
    for var in state.variable_names:  # the same tensors, renamed
        assert as_adamax.slots[var]["norm"] is state.slots[var]["velocity"]
    with pytest.raises(MappingError, match="does not fit"):
        api.load_state(path, optimizer="rmsprop")
    with pytest.raises(MappingError, match="not one of them"):
        as_candidate(state, "rmsprop")


def test_new_sgd_vs_lion_records_the_candidates():
    case, path = _first("experimental", "sgd_momentum")
    state = api.load_state(path)
    assert state.candidates == ["sgd", "lion"]
    assert api.load_state(path, optimizer="lion").optimizer == "lion"
    assert set(as_candidate(state, "lion").slot_names()) == {"momentum"}


def test_tf1_adam_iterations_from_beta1_power_when_beta_1_known():
    case, path = _first("tf1_objectbased", "adam", "ckpt/ckpt-1")
    state = api.load_state(path)
    assert state.iterations is None and any("beta_1" in w for w in state.warnings)
    state = api.load_state(path, config={"beta_1": case.truth["optimizer"]["config"]["beta1"]})
    assert state.iterations == 3
    assert np.array_equal(np.asarray(state.extra["beta1_power"]), np.float32(0.8) ** 4)


def test_tfoptimizer_global_step_and_beta_powers():
    case, path = _first("tfoptimizer", "adam")
    state = api.load_state(path, config={"beta_1": 0.8})
    assert state.iterations == 3 and state.source["wrapper"] == "TFOptimizer"
    assert not any("says" in w for w in state.warnings)  # global_step and beta1_power agree
    state = api.load_state(path, config={"beta_1": 0.9})
    assert any("global_step says 3" in w for w in state.warnings)


def test_legacy_loss_scale():
    case, path = _first("v2", "adam_lso")
    state = api.load_state(path, optimizer="adam")
    assert float(np.asarray(state.extra["loss_scale"])) == 2048.0
    assert int(np.asarray(state.extra["loss_scale_good_steps"])) == 1
    assert state.source["wrapper"] == "LossScaleOptimizer"


def test_variables_hint_renames_and_is_checked():
    case, path = _first("experimental", "nadam")
    names = [("hidden/kernel", (5, 4)), ("hidden/bias", (4,)), ("out/kernel", (4, 2)), ("out/bias", (2,))]
    state = api.load_state(path, variables=names)
    assert state.variable_names == [n for n, _ in names]
    assert state.slots["out/bias"]["velocity"].shape == (2,)
    with pytest.raises(MappingError, match="variables="):
        api.load_state(path, variables=names[::-1])


# -- hostile input ------------------------------------------------------------------------------
@pytest.fixture
def ckpt_copy(tmp_path):
    src = os.path.join(FIXTURES, "k215", "v2", "sgd_momentum")
    if not os.path.exists(os.path.join(src, "w.ckpt.index")):
        pytest.skip("fixture not generated yet")
    for f in ("w.ckpt.index", "w.ckpt.data-00000-of-00001"):
        shutil.copy(os.path.join(src, f), tmp_path / f)
    return tmp_path / "w.ckpt"


def _assert_format_error(path, match):
    with pytest.raises(FormatError, match=match) as e:
        api.load_state(str(path), format="tf_checkpoint")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_index(ckpt_copy):
    index = str(ckpt_copy) + ".index"
    data = open(index, "rb").read()
    open(index, "wb").write(data[: len(data) // 2])
    assert formats.detect(str(ckpt_copy)) is tf_checkpoint.FORMAT
    _assert_format_error(ckpt_copy, "truncated")


def test_missing_data_shard(ckpt_copy):
    os.unlink(str(ckpt_copy) + ".data-00000-of-00001")
    _assert_format_error(ckpt_copy, "missing data shard")


def test_truncated_data_shard(ckpt_copy):
    shard = str(ckpt_copy) + ".data-00000-of-00001"
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:40])
    _assert_format_error(ckpt_copy, "truncated data")


def test_random_bytes(tmp_path):
    path = tmp_path / "junk"
    (tmp_path / "junk.index").write_bytes(os.urandom(4096))
    (tmp_path / "junk.data-00000-of-00001").write_bytes(os.urandom(4096))
    _assert_format_error(path, "index")


def test_garbage_object_graph(tmp_path):
    import tensorflow as tf
    prefix = str(tmp_path / "g")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["_CHECKPOINTABLE_OBJECT_GRAPH", "x"], shape_and_slices=["", ""],
                      tensors=[tf.constant(b"\xff\xfe garbage \x00\x01"), tf.constant([1.0, 2.0])])
    _assert_format_error(prefix, "object graph")


def test_object_graph_pointing_nowhere(tmp_path):
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    root = graph.nodes.add()
    root.children.add(node_id=7, local_name="optimizer")
    prefix = str(tmp_path / "g")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["_CHECKPOINTABLE_OBJECT_GRAPH"], shape_and_slices=[""],
                      tensors=[tf.constant(graph.SerializeToString())])
    _assert_format_error(prefix, "refers to node 7")


def test_name_based_checkpoint_is_refused_politely():
    for case, name in cases_with_file("tf1_saver")[:1]:
        with pytest.raises(UnsupportedFormatError, match="tf1_checkpoint"):
            api.load_state(str(case.file(name)), format="tf_checkpoint")
