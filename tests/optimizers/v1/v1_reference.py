"""The real optimizers, run the way they run: Keras `optimizer_v1` and `tf.compat.v1.train` in graph mode.

One small model has both kinds of gradient: a dense tanh layer and an embedding table whose
gather yields `IndexedSlices` (rows of ids that a batch does not contain get no gradient):
    out = concat(tanh(x @ W1 + b1), sum_k E[ids[:, k]]) @ W2 + b2,   loss = mean((out - y)^2)
"""

import numpy as np
import tensorflow as tf

SHAPES = [("hidden/kernel", (5, 4)), ("hidden/bias", (4,)), ("emb/embeddings", (12, 3)),
          ("out/kernel", (7, 2)), ("out/bias", (2,))]
BATCH = 8
# One thread each: the real v1 Adam/Adamax read `iterations` for `decay` without a control
# dependency on its increment, so with parallel executors the read races with the increment
# and the reference itself is not reproducible (observed: runs differing by 5e-4 after 20 steps).
SESSION_CONFIG = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=1, intra_op_parallelism_threads=1)


def initial_values(seed=7):
    rng = np.random.RandomState(seed)
    return [(0.5 * rng.standard_normal(shape)).astype(np.float32) for _, shape in SHAPES]


MAX_STEPS = 60


def batches(steps, seed=11):
    """The first `steps` of one fixed stream of batches (the same prefix whatever `steps` is)."""
    assert steps <= MAX_STEPS
    rng = np.random.RandomState(seed)
    x, ids, y = _stream(rng)
    return x[:steps], ids[:steps], y[:steps]


def _stream(rng):
    steps = MAX_STEPS
    x = rng.standard_normal((steps, BATCH, 5)).astype(np.float32)
    ids = rng.randint(0, 8, size=(steps, BATCH, 4)).astype(np.int32)  # rows 8..11 never used
    y = rng.standard_normal((steps, BATCH, 2)).astype(np.float32)
    return x, ids, y


def loss_fn(params, x, ids, y):
    w1, b1, emb, w2, b2 = params
    hidden = tf.tanh(tf.matmul(x, w1) + b1)
    pooled = tf.reduce_sum(tf.gather(emb, ids), axis=1)
    out = tf.matmul(tf.concat([hidden, pooled], axis=1), w2) + b2
    return tf.reduce_mean(tf.square(out - y))


def graph_variables(use_get_variable=False):
    """Model variables in the current graph, named like a tf_keras model's."""
    out = []
    for (name, _), value in zip(SHAPES, initial_values()):
        scope, short = name.split("/")
        with tf.compat.v1.variable_scope(scope, reuse=tf.compat.v1.AUTO_REUSE):
            if use_get_variable:
                out.append(tf.compat.v1.get_variable(short, initializer=tf.constant(value)))
            else:
                out.append(tf.compat.v1.Variable(value, name=short))
    return out


def placeholders():
    return (tf.compat.v1.placeholder(tf.float32, (BATCH, 5)), tf.compat.v1.placeholder(tf.int32, (BATCH, 4)),
            tf.compat.v1.placeholder(tf.float32, (BATCH, 2)))


def run_keras_v1(class_name, kwargs, steps):
    """Train with the real optimizer_v1 class in graph mode.

    Returns (params after every step, final get_weights(), final get_config()).
    """
    from tf_keras.src.optimizers import optimizer_v1

    x, ids, y = batches(steps)
    graph = tf.Graph()
    with graph.as_default():
        params = graph_variables()
        px, pids, py = placeholders()
        opt = getattr(optimizer_v1, class_name)(**kwargs)
        # As Keras' backend.function does: a (variable, value) tuple is an assignment.
        updates = tf.group(*[tf.compat.v1.assign(*u) if isinstance(u, tuple) else u
                             for u in opt.get_updates(loss_fn(params, px, pids, py), params)])
        with tf.compat.v1.Session(graph=graph, config=SESSION_CONFIG) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            trajectory = []
            for i in range(steps):
                sess.run(updates, {px: x[i], pids: ids[i], py: y[i]})
                trajectory.append(sess.run(params))
            weights = sess.run(opt.weights)
            config = opt.get_config()
    return trajectory, weights, config


def run_tf1(class_name, kwargs, steps, start=0, saver_path=None, restore_path=None):
    """Train with a real tf.compat.v1.train optimizer in graph mode (variables from get_variable).

    Runs batches [start, steps). With restore_path, a name-based checkpoint is restored first;
    with saver_path, one is written at the end. Returns (params after every step,
    {slot key: value} of the optimizer's variables (name-based keys), global_step).
    """
    x, ids, y = batches(steps)
    graph = tf.Graph()
    with graph.as_default():
        params = graph_variables(use_get_variable=True)
        px, pids, py = placeholders()
        global_step = tf.compat.v1.train.get_or_create_global_step()
        opt = getattr(tf.compat.v1.train, class_name)(**kwargs)
        train = opt.minimize(loss_fn(params, px, pids, py), var_list=params, global_step=global_step)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph, config=SESSION_CONFIG) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            if restore_path:
                saver.restore(sess, restore_path)
            trajectory = []
            for i in range(start, steps):
                sess.run(train, {px: x[i], pids: ids[i], py: y[i]})
                trajectory.append(sess.run(params))
            state = {v.op.name: sess.run(v) for v in opt.variables()}
            step = int(sess.run(global_step))
            if saver_path:
                saver.save(sess, saver_path)
    return trajectory, state, step
