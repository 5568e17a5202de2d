"""The variable matcher's rules on plain names and shapes (no model): what pairs, and what is refused with the
variables it could not tell apart. The model-structure rules are tested against real tf_keras / Keras 3 models
in tests/migration/test_load_into.py."""

import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate import matching
from keras_opt_migrate.errors import MappingError


def _pairs(src, dst, **options):
    found = matching.match(matching.sources(src), matching.sources(dst), **options)
    return [(src[s][0], dst[t][0]) for s, t in found.pairs], found.method


def test_device_suffix_and_model_scope_are_not_part_of_the_name():
    src = [("dense/kernel:0", (4, 3)), ("dense/bias:0", (3,)), ("top/kernel:0", (3, 3)), ("top/bias:0", (3,))]
    dst = [("sequential/top/kernel", (3, 3)), ("sequential/top/bias", (3,)),
           ("sequential/dense/kernel", (4, 3)), ("sequential/dense/bias", (3,))]
    pairs, how = _pairs(src, dst)
    assert how == "name"
    assert dict(pairs) == {"dense/kernel:0": "sequential/dense/kernel", "dense/bias:0": "sequential/dense/bias",
                           "top/kernel:0": "sequential/top/kernel", "top/bias:0": "sequential/top/bias"}


def test_a_scope_that_two_variables_share_is_no_proof():
    """`dense/kernel` is the suffix of both `a/dense/kernel` and `b/dense/kernel`: neither is chosen."""
    with pytest.raises(MappingError) as e:
        _pairs([("dense/kernel", (3, 3))], [("a/dense/kernel", (3, 3)), ("b/dense/kernel", (3, 3))],
               require_all_targets=False)
    assert "dense/kernel (3, 3) could be a/dense/kernel or b/dense/kernel" in str(e.value)


def test_the_renamed_depthwise_attribute_pairs_without_the_model_only_where_it_is_left():
    src = [("dw/depthwise_kernel", (3, 3, 4, 1)), ("sep/depthwise_kernel", (3, 3, 4, 1)), ("dw/bias", (4,))]
    dst = [("dw/kernel", (3, 3, 4, 1)), ("sep/depthwise_kernel", (3, 3, 4, 1)), ("dw/bias", (4,))]
    pairs, _ = _pairs(src, dst)
    assert dict(pairs) == {"dw/depthwise_kernel": "dw/kernel", "sep/depthwise_kernel": "sep/depthwise_kernel",
                           "dw/bias": "dw/bias"}


def test_build_order_only_where_shapes_prove_it():
    src = [("layer_with_weights-0/kernel", (5, 4)), ("layer_with_weights-0/bias", (4,))]
    assert _pairs(src, [("x/kernel", (5, 4)), ("x/bias", (4,))])[1] == "build order"
    twins = [("layer_with_weights-0/bias", (4,)), ("layer_with_weights-1/bias", (4,))]
    with pytest.raises(MappingError, match="build order is not proven"):
        _pairs(twins, [("x/bias", (4,)), ("y/bias", (4,))])
    assert _pairs(twins, [("x/bias", (4,)), ("y/bias", (4,))], confirmed=True)[1] == "build order"
    with pytest.raises(MappingError, match="shapes differ"):
        _pairs(src, [("x/kernel", (5, 3)), ("x/bias", (3,))])


def test_a_name_that_pairs_with_the_wrong_shape_is_refused():
    with pytest.raises(MappingError, match=r"dense/kernel \(4, 3\) vs dense/kernel \(4, 2\)"):
        _pairs([("dense/kernel", (4, 3))], [("dense/kernel", (4, 2))])


def test_keras3_store_names_are_structure_not_names():
    (key,) = matching.sources([("layers/c/vars/0", (3,))])[0].structure
    assert key == ("c", "vars", "0")
    (key,) = matching.sources([("model/_functional/_operations/3/_kernel", (3,))])[0].structure
    assert key == ("o3", "kernel")


def test_diff_pairs_generations_by_name():
    """`diff` uses the matcher: a Keras 2 state and its Keras 3 Sequential counterpart compare equal."""
    def state(names):
        return kom.OptimizerState(
            optimizer="adam", generation="keras3", config={}, iterations=1,
            variables=[kom.VariableSpec(n, (2,)) for n in names],
            slots={n: {"momentum": np.full(2, i, np.float32)} for i, n in enumerate(names)})
    a = state(["dense/kernel", "dense/bias"])
    b = state(["sequential/dense/kernel", "sequential/dense/bias"])
    report = kom.diff(a, b)
    assert report.equal and report.pairing == "name" and report.compared == 2
    b.slots["sequential/dense/bias"]["momentum"] = np.zeros(2, np.float32)
    (entry,) = kom.diff(a, b).entries
    assert entry.variable == "dense/bias"
