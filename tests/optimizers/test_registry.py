"""Table-driven checks over every algorithm spec in the registry."""

import pytest

from keras_opt_migrate.errors import UnknownOptimizerError
from keras_opt_migrate.optimizers import registry
from keras_opt_migrate.optimizers.spec import GENERATIONS, positional_layout

SPECS = sorted(registry.SPECS.values(), key=lambda s: s.name)
DENSE = [(5, 4), (4,), (4, 2), (2,)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_spec_tables_are_consistent(spec):
    assert spec.name == spec.name.lower()
    assert set(spec.names) <= set(GENERATIONS) and set(spec.layouts) == set(spec.names)
    for generation, table in spec.names.items():
        assert set(table) <= set(spec.slots), (generation, table)
        own = list(table.values())
        assert len(own) == len(set(own)), "%s %s: two canonical slots share a name" % (spec.name, generation)
        for canonical, name in table.items():
            assert spec.canonical_slot(generation, name) == canonical
        assert spec.class_names.get(generation), "%s has no class name for %s" % (spec.name, generation)
    assert set(spec.nonnegative) <= set(spec.slots)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("config", [{}, {"amsgrad": True, "momentum": 0.5, "centered": True, "use_ema": True,
                                         "export_clipping_factors": True}])
def test_every_layout_expands_over_variables(spec, config):
    for generation in spec.layouts:
        entries = positional_layout(spec, generation, config, DENSE)
        for e in entries:
            if e.kind == "slot":
                assert e.name in spec.slots or e.name in ("average", "gradient_accumulator")
                assert 0 <= e.var_index < len(DENSE)
        slots = [(e.var_index, e.name) for e in entries if e.kind == "slot"]
        assert len(slots) == len(set(slots)), "%s %s: a slot appears twice" % (spec.name, generation)


def test_class_lookup_and_aliases():
    assert registry.spec_for_class("Adam", "v2").name == "adam"
    assert registry.spec_for_class("Addons>LazyAdam", "v2").name == "lazyadam"
    assert registry.spec_for_class("Custom>ClippyAdagrad", "experimental").name == "clippyadagrad"
    assert registry.spec_for_class("AdamOptimizer", "tf1").name == "adam"
    assert registry.spec_for_class("AdamW", "v2") is None
    for alias in ("ADAM", "adam_w", "rm_sprop", "GradientDescent"):
        registry.get_spec(alias)
    with pytest.raises(UnknownOptimizerError, match="expected one of"):
        registry.get_spec("adamz")


def test_layout_orders_match_layouts_md():
    """Spot checks of shared/LAYOUTS.md §1.1, §2.1, §3.1, §4 (the fixtures test the rest)."""
    adam = registry.get_spec("adam")
    names = lambda g, c: [(e.name, e.var_index) for e in positional_layout(adam, g, c, DENSE)]
    assert names("v2", {})[:3] == [("iterations", None), ("momentum", 0), ("momentum", 1)]
    assert names("experimental", {})[:3] == [("iterations", None), ("momentum", 0), ("velocity", 0)]
    assert names("keras3", {})[:3] == [("iterations", None), ("learning_rate", None), ("momentum", 0)]
    assert names("keras3", {"learning_rate": {"class_name": "ExponentialDecay"}})[1] == ("momentum", 0)
    v1 = positional_layout(adam, "v1", {"amsgrad": False}, DENSE)
    assert [e.shape for e in v1 if e.name == "velocity_hat"] == [(1,)] * 4
    rms = registry.get_spec("rmsprop")
    assert [e.name for e in positional_layout(rms, "v1", {}, DENSE)] == ["velocity"] * 4
    ftrl = registry.get_spec("ftrl")
    assert [e.name for e in positional_layout(ftrl, "v2", {}, DENSE)][1:3] == ["accumulator", "linear"]
    assert registry.get_spec("rmsprop").tf1_namebased_suffixes({"centered": True}, "RMSProp") == {
        "velocity": "RMSProp", "average_gradient": "RMSProp_1", "momentum": "RMSProp_2"}
