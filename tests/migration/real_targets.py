"""Restore converted files into the REAL tf_keras / Keras 3 / TF1 optimizers and continue training.

FORMAT.md: the continuation is one update per recorded batch 4 and 5 (indices 3, 4) with the
batch mse; the truth `after` holds the model weights it must produce. Keras targets run
`train_on_batch` (as the generators did, so 2.11+ Nadam's traced schedule matches), TF1
targets one `minimize` step per batch in a graph (name-based) or eager (object-based).
tf_keras and keras are imported lazily here: the library itself never imports them.
"""

import inspect

import numpy as np

from keras_opt_migrate.optimizers.registry import get_spec

CONTINUE = (3, 4)
# TF1 optimizers spell some Keras hyperparameters differently.
TF1_ARGS = {"beta_1": "beta1", "beta_2": "beta2", "nesterov": "use_nesterov"}
TF1_CLASS_ARGS = {"RMSPropOptimizer": {"rho": "decay"}}


def tf():
    import tensorflow
    return tensorflow


def keras_lib(generation):
    if generation == "keras3":
        import keras
        return keras
    import tf_keras
    return tf_keras


def build_model(lib, kind):
    layers = lib.layers
    if kind == "dense":
        inp = lib.Input((5,))
        out = layers.Dense(2, name="out")(layers.Dense(4, activation="tanh", name="hidden")(inp))
    else:
        inp = lib.Input((4,), dtype="int32")
        out = layers.Dense(2, name="out")(layers.Flatten()(layers.Embedding(12, 3, name="emb")(inp)))
    return lib.Model(inp, out)


def _accepted(cls, config):
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    if "kwargs" in names:  # OptimizerV2 takes decay / clipnorm through **kwargs
        names |= {"decay", "clipnorm", "clipvalue", "global_clipnorm"}
    return {k: v for k, v in config.items() if k in names and k != "name" and v is not None}


def make_optimizer(generation, state):
    """The real optimizer class of `state`'s algorithm and generation, built from its config."""
    spec = get_spec(state.optimizer)
    cls_name = spec.class_names[generation][0].split(">")[-1]
    if generation == "tf1":
        cls = getattr(tf().compat.v1.train, cls_name)
        names = dict(TF1_ARGS, **TF1_CLASS_ARGS.get(cls_name, {}))
        config = {names.get(k, k): v for k, v in state.config.items()}
        return cls(**_accepted(cls, config))
    lib = keras_lib(generation)
    module = lib.optimizers.legacy if generation == "v2" else lib.optimizers
    cls = getattr(module, cls_name)
    config = dict(state.config)
    if isinstance(config.get("learning_rate"), dict):
        schedule = config["learning_rate"]
        schedule_cls = getattr(lib.optimizers.schedules, schedule["class_name"].split(">")[-1])
        config["learning_rate"] = schedule_cls(**{k: v for k, v in schedule["config"].items() if k != "name"})
    return cls(**_accepted(cls, config))


def wrap_loss_scale(generation, optimizer, settings):
    """The real loss-scale wrapper of `generation` around `optimizer` (tf_keras picks the legacy
    LossScaleOptimizer or LossScaleOptimizerV3 by the inner optimizer's kind)."""
    lib = keras_lib(generation)
    if generation == "keras3":
        return lib.optimizers.LossScaleOptimizer(optimizer, **settings)
    return lib.mixed_precision.LossScaleOptimizer(optimizer, dynamic=True, **settings)


def loss_scale(optimizer):
    """(current scale, good steps) of a real loss-scale wrapper: Keras 3's or tf_keras' (legacy or V3)."""
    if hasattr(optimizer, "dynamic_scale"):
        return float(np.asarray(optimizer.dynamic_scale)), int(np.asarray(optimizer.step_counter))
    return float(np.asarray(optimizer.loss_scale)), int(np.asarray(optimizer.dynamic_counter))


def keras_resume(generation, case, restore):
    """Build the case's model in `generation`'s Keras, let `restore(model)` load the converted file,
    run the two continuation steps; returns (weights after, the model)."""
    lib = keras_lib(generation)
    model = build_model(lib, case.truth["model"])
    x, y = case.batches()
    restore(model)
    for i in CONTINUE:
        model.train_on_batch(x[i], y[i])
    return [np.asarray(w) for w in model.trainable_weights], model


def tf1_namebased_graph(model_kind, state):
    """Graph mode: `get_variable` under the fixture's scopes and the real TF1 optimizer's `minimize`.

    Returns (graph, session, parts); `tf1_namebased_run` restores a checkpoint into it and trains.
    The session stays open so that one graph serves every checkpoint of the same optimizer config.
    """
    t = tf()
    v1 = t.compat.v1
    graph = t.Graph()
    with graph.as_default():
        shapes = [tuple(v.shape) for v in state.variables]
        if model_kind == "dense":
            names = ["hidden/kernel", "hidden/bias", "out/kernel", "out/bias"]
            x = v1.placeholder(t.float32, (None, 5))
        else:
            names = ["emb/embeddings", "out/kernel", "out/bias"]
            x = v1.placeholder(t.int32, (None, 4))
        y = v1.placeholder(t.float32, (None, 2))
        made = {}
        for name, shape in zip(names, shapes):
            scope, _, var = name.partition("/")
            with v1.variable_scope(scope, reuse=v1.AUTO_REUSE):
                made[name] = v1.get_variable(var, shape, t.float32, initializer=v1.zeros_initializer())
        if model_kind == "dense":
            h = t.tanh(t.matmul(x, made["hidden/kernel"]) + made["hidden/bias"])
        else:
            h = t.reshape(t.gather(made["emb/embeddings"], x), (-1, 12))
        out = t.matmul(h, made["out/kernel"]) + made["out/bias"]
        loss = t.reduce_mean(t.square(out - y))
        step = v1.train.get_or_create_global_step()
        train = make_optimizer("tf1", state).minimize(loss, global_step=step)
        parts = {"x": x, "y": y, "train": train, "weights": [made[n] for n in names], "saver": v1.train.Saver(),
                 "init": v1.global_variables_initializer()}
    graph.finalize()
    return graph, v1.Session(graph=graph), parts


def tf1_namebased_run(sess, parts, case, prefix):
    """Initialise every variable, `Saver.restore(prefix)`, one `minimize` step per continuation batch."""
    x_all, y_all = case.batches()
    with sess.graph.as_default():  # Saver.restore takes its eager path outside the graph
        sess.run(parts["init"])
        parts["saver"].restore(sess, prefix)
        for i in CONTINUE:
            sess.run(parts["train"], {parts["x"]: x_all[i], parts["y"]: y_all[i]})
        return sess.run(parts["weights"])


def tf1_namebased_resume(case, state, prefix):
    """Graph mode: `get_variable` under the fixture's scopes, the real TF1 optimizer, `Saver.restore`."""
    _, sess, parts = tf1_namebased_graph(case.truth["model"], state)
    with sess:
        return tf1_namebased_run(sess, parts, case, prefix)


def tf1_objectbased_resume(case, state, prefix):
    """Eager: a tf_keras model and the real TF1 optimizer under `tf.train.Checkpoint(model=, optimizer=)`."""
    t = tf()
    import tf_keras
    model = build_model(tf_keras, case.truth["model"])
    opt = make_optimizer("tf1", state)
    t.train.Checkpoint(model=model, optimizer=opt).restore(prefix)
    x, y = case.batches()
    for i in CONTINUE:
        with t.GradientTape() as tape:
            loss = t.reduce_mean(t.square(model(x[i]) - y[i]))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
    return [np.asarray(w) for w in model.trainable_weights]


def max_delta(got, case):
    want = case.after_weights()
    return max(float(np.max(np.abs(g.astype(np.float64) - w))) for g, w in zip(got, want))
