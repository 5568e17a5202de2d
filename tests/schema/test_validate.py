"""`schema/validate.py`: one validation of every state read, naming the file and the field."""

import numpy as np
import pytest

import keras_opt_migrate as kom
from keras_opt_migrate.errors import SchemaError
from keras_opt_migrate.schema.validate import check_state


def _state(**changes):
    fields = dict(optimizer="adam", generation="v2", config={"learning_rate": 0.01, "amsgrad": False}, iterations=3,
                  variables=[kom.VariableSpec("dense/kernel", (5, 4))],
                  slots={"dense/kernel": {"momentum": np.zeros((5, 4), np.float32),
                                          "velocity": np.zeros((5, 4), np.float32)}})
    fields.update(changes)
    return kom.OptimizerState(**fields)


def test_a_sound_state_passes():
    state = _state()
    assert check_state(state, "f.h5") is state
    check_state(_state(iterations=None, config={"learning_rate": {"class_name": "ExponentialDecay", "config": {}},
                                                "epsilon": None}), "f.h5")
    check_state(_state(iterations=np.int64(2 ** 63 - 1)), "f.h5")


BAD = [
    (dict(iterations=-1), "iterations"),
    (dict(iterations=2 ** 63), "iterations"),
    (dict(iterations=np.uint64(2 ** 64 - 1)), "iterations"),
    (dict(iterations=-1e30), "iterations"),
    (dict(iterations=3.0), "iterations"),
    (dict(iterations=True), "iterations"),
    (dict(iterations="3"), "iterations"),
    (dict(config=[1, 2]), "config"),
    (dict(config={"learning_rate": b"0.001"}), "config.learning_rate"),
    (dict(config={"epsilon": "tiny"}), "config.epsilon"),
    (dict(config={"beta_1": float("nan")}), "config.beta_1"),
    (dict(config={"beta_2": True}), "config.beta_2"),
    (dict(config={"amsgrad": 1}), "config.amsgrad"),
    (dict(config={"clipnorm": "big"}), "config.clipnorm"),
    (dict(config={3: 1.0}), "config"),
    (dict(optimizer="adamzz"), "optimizer"),
    (dict(generation="v99"), "generation"),
    (dict(variables=[kom.VariableSpec("dense/kernel", (5, 4)), kom.VariableSpec("dense/kernel", (5, 4))]),
     "variables[1].name"),
    (dict(variables=[kom.VariableSpec("dense/kernel", (5, 4)), kom.VariableSpec("x", (-1,))]), "variables[1].shape"),
    (dict(slots={"ghost": {"momentum": np.zeros((5, 4), np.float32)}}), "slots['ghost']"),
    (dict(slots={"dense/kernel": {"momentum": np.zeros((4, 5), np.float32)}}), "slots['dense/kernel']['momentum']"),
]


@pytest.mark.parametrize("changes, field", BAD, ids=[f for _, f in BAD])
def test_each_violation_names_the_file_and_the_field(changes, field):
    with pytest.raises(SchemaError) as info:
        check_state(_state(**changes), "some\ndir/f.h5")
    message = str(info.value)
    assert message.startswith("some\\ndir/f.h5: invalid optimizer state: ") and field in message, message
    assert "\n" not in message


def test_save_state_refuses_an_invalid_state(tmp_path):
    with pytest.raises(SchemaError, match="iterations"):
        kom.save_state(_state(iterations=2 ** 64), tmp_path / "s.kom.h5")
    assert list(tmp_path.iterdir()) == []


def test_factored_slots_follow_the_algorithms_shape_rule():
    """Adafactor keeps row / column factors, not the variable's shape: its spec's rule decides."""
    from keras_opt_migrate.optimizers.registry import get_spec
    spec = get_spec("adafactor")
    shapes = {s: spec.shape_rule(s, (6, 4), {}, "keras3") for s in spec.slots}
    slots = {s: np.zeros(shape, np.float32) for s, shape in shapes.items() if shape is not None}
    state = kom.OptimizerState("adafactor", "keras3", {}, 1, [kom.VariableSpec("k", (6, 4))], {"k": slots})
    check_state(state, "f")
    wrong = dict(slots, **{next(iter(slots)): np.zeros((6, 4, 1), np.float32)})
    with pytest.raises(SchemaError, match="expected shape"):
        check_state(kom.OptimizerState("adafactor", "keras3", {}, 1, [kom.VariableSpec("k", (6, 4))], {"k": wrong}),
                    "f")
