"""Small pieces both optimizer generations use: sparse gradients, empty gradients, names."""

import logging
import re

import numpy as np
import tensorflow as tf

from ..errors import KerasOptMigrateError, UnknownOptimizerError

log = logging.getLogger("keras_opt_migrate")


def gradients_of(loss, var_list, tape=None, grad_loss=None, scope=None):
    """(gradients, flat variable list) for `minimize`-style arguments, as every Keras generation takes them.

    `loss` is a zero-argument callable (recorded here on `tape` or a new one) or a tensor
    already recorded on `tape`; `var_list` may be a callable, evaluated after the loss so
    that lazily built variables exist.
    """
    if not callable(loss) and tape is None:
        raise ValueError("`tape` is required when a `Tensor` loss is passed. Received: loss=%s, tape=%s."
                         % (loss, tape))
    tape = tape if tape is not None else tf.GradientTape()
    if callable(loss):
        with tape:
            if not callable(var_list):
                tape.watch(var_list)
            loss = loss()
            if callable(var_list):
                var_list = var_list()
    var_list = tf.nest.flatten(var_list)
    if scope is None:
        return tape.gradient(loss, var_list, grad_loss), var_list
    with tf.name_scope(scope):
        return tape.gradient(loss, var_list, grad_loss), var_list


def assign_weight_list(params, weights):
    """Keras v1 `set_weights`: check the count and every shape, then assign all (nothing on error)."""
    if len(params) != len(weights):
        raise ValueError("Length of the specified weight list (%d) does not match the number of weights "
                         "of the optimizer (%d)" % (len(weights), len(params)))
    for p, w in zip(params, weights):
        if tuple(p.shape) != tuple(np.shape(w)):
            raise ValueError("Optimizer weight shape %s not compatible with provided weight shape %s"
                             % (tuple(p.shape), tuple(np.shape(w))))
    for p, w in zip(params, weights):
        p.assign(np.asarray(w, dtype=p.dtype.as_numpy_dtype))


def deduplicate_indexed_slices(values, indices):
    """Sum the rows of a sparse gradient that share an index (Keras' `_deduplicate_indexed_slices`).

    Returns (summed values, unique indices); unique indices keep first-seen order.
    """
    unique_indices, positions = tf.unique(indices)
    summed = tf.math.unsorted_segment_sum(values, positions, tf.shape(unique_indices)[0])
    return summed, unique_indices


def filter_empty_gradients(grads_and_vars):
    """Drop (None, var) pairs; raise when no variable has a gradient (as Keras does)."""
    grads_and_vars = tuple(grads_and_vars)
    if not grads_and_vars:
        return grads_and_vars
    kept = tuple((g, v) for g, v in grads_and_vars if g is not None)
    if not kept:
        raise KerasOptMigrateError(
            "No gradients provided for any variable: %s. Check that the loss depends on the variables."
            % ([v.name for _, v in grads_and_vars],))
    missing = [v.name for g, v in grads_and_vars if g is None]
    if missing:
        log.warning("Gradients do not exist for variables %s when minimizing the loss.", missing)
    return kept


def all_reduce_sum_gradients(grads_and_vars):
    """Sum gradients across replicas; outside a distribution strategy this is the identity."""
    grads_and_vars = list(grads_and_vars)
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return grads_and_vars
    present = [(g, v) for g, v in grads_and_vars if g is not None]
    if not present:
        return grads_and_vars
    reduced = iter(tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, [g for g, _ in present]))
    return [(None, v) if g is None else (next(reduced), v) for g, v in grads_and_vars]


def to_snake_case(name):
    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def check_non_negative(**values):
    for key, value in values.items():
        if value is not None and not callable(value) and not tf.is_tensor(value) and value < 0:
            raise KerasOptMigrateError("`%s` must be >= 0. Received: %s=%r" % (key, key, value))


def get_optimizer(identifier, own_class, deserialize):
    """Keras' `optimizers.get` for one generation: an instance of `own_class` (or of our v1 generation)
    as it is, a name or a `{"class_name", "config"}` dict through `deserialize`, and a
    `tf.compat.v1.train.Optimizer` wrapped in our v1 `TFOptimizer`, as Keras wrapped it in its own."""
    from . import v1
    if isinstance(identifier, (own_class, v1.Optimizer, v1.TFOptimizer)):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return deserialize({"class_name": identifier, "config": {}})
    if isinstance(identifier, tf.compat.v1.train.Optimizer):
        return v1.TFOptimizer(identifier)
    raise UnknownOptimizerError("Could not interpret optimizer identifier: %r; expected an optimizer, a name, "
                                "a {'class_name', 'config'} dict or a tf.compat.v1.train.Optimizer" % (identifier,))
