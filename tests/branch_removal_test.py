"""Dead residual branches removed in place: the same model object loses the
branch's layers, variables and optimizer slots, keeps its function, trains
on, saves, loads and exports."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import slicing

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TOL = 1e-5
BRANCH = ("stage2_block2_conv1", "stage2_block2_bn1", "stage2_block2_relu1",
          "stage2_block2_conv2", "stage2_block2_bn2")


def _branch_roots(model, conv_name):
    graph = tf_prunetrain.channel_groups(model)
    record = next(r for r in graph.records if r.view.path == conv_name)
    return set(graph.roots(record.outs[0]).tolist()) - {0}


def _trained(build=model_zoo.resnet_basic, strategy=None):
    with (strategy or tf.distribute.get_strategy()).scope():
        model = model_zoo.randomize_batchnorm(build())
        if strategy is not None:  # one set of BatchNorm statistics
            model = tf_prunetrain.distribute.synchronize_batchnorm(model)
        model = tf_prunetrain.add_group_lasso(model, 1e-3)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS)
    x = model_zoo.random_input(model, batch_size=8, seed=0)
    y = np.arange(8) % 10
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)  # momentum slots set
    return model, x, y


def _slots(model):
    """{variable path: momentum} of the model's trainable variables."""
    opt = model.optimizer
    return {v.path: np.array(m.numpy())
            for v, m in zip(opt._trainable_variables, opt.momentums)}


def _remove_branch(model, conv_name="stage2_block2_conv1"):
    pt.zero_groups(model, _branch_roots(model, conv_name))
    plan = tf_prunetrain.planning.plan_pruning(tf_prunetrain.channel_groups(model))
    assert plan.merges, "the branch should be removable"
    return plan


def test_in_place_removal_keeps_the_function_and_the_other_slots():
    model, x, y = _trained()
    plan = _remove_branch(model)
    before = model.predict(x, verbose=0)
    slots = _slots(model)
    layers = {id(layer): layer for layer in model.layers}
    variables = len(model.trainable_variables)
    tf_prunetrain.inplace.reconfigure_in_place(model, plan)

    names = {layer.name for layer in model.layers}
    assert not names & {*BRANCH, "stage2_block2_add"}
    offset = model.get_layer("stage2_block2_add_offset")
    assert isinstance(offset, keras.layers.Rescaling)
    # The same layer objects, less the branch's.
    assert all(id(layer) in layers for layer in model.layers
               if layer is not offset)
    assert len(model.trainable_variables) == variables - 6  # 2 conv, 2 BN×2
    assert not any(name in v.path for v in model.trainable_variables
                   for name in BRANCH)
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL
    # Surviving variables keep their optimizer state exactly; the branch's
    # slots are gone with it.
    after = _slots(model)
    assert set(after) < set(slots) and len(after) == variables - 6
    for path, value in after.items():
        np.testing.assert_array_equal(value, slots[path], err_msg=path)
    assert int(model.optimizer.iterations) == 4
    # It trains on, and a second pruning of the rewired graph works.
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    plan = _remove_branch(model, "stage1_block1_conv1")
    before = model.predict(x, verbose=0)
    tf_prunetrain.inplace.reconfigure_in_place(model, plan)
    assert "stage1_block1_conv1" not in {layer.name for layer in model.layers}
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL


def test_saved_loaded_and_exported_model_equals_the_live_one(tmp_path):
    model, x, y = _trained()
    tf_prunetrain.inplace.reconfigure_in_place(model, _remove_branch(model))
    live = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [layer.name for layer in loaded.layers] == \
        [layer.name for layer in model.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), live, rtol=1e-6,
                               atol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)  # trains on
    done = tf_prunetrain.export_saved_model(model, str(tmp_path / "saved"),
                                            sample_inputs=x)
    assert done.max_difference < 1e-5
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = reloaded.serve(tf.constant(x, tf.float32))
    np.testing.assert_allclose(np.asarray(served), live, rtol=1e-5, atol=1e-5)


def test_branch_inside_a_nested_model():
    L = keras.layers
    inner_in = keras.Input((8, 8, 8))
    b = L.BatchNormalization(name="bn1")(L.Conv2D(4, 3, padding="same",
                                                  name="c1")(inner_in))
    b = L.BatchNormalization(name="bn2")(L.Conv2D(8, 3, padding="same",
                                                  name="c2")(L.ReLU()(b)))
    block = keras.Model(inner_in, L.Add(name="add")([inner_in, b]),
                        name="block")
    x = keras.Input((8, 8, 3))
    h = block(L.Conv2D(8, 3, padding="same", name="stem")(x))
    model = keras.Model(x, L.Dense(3, name="out")(
        L.GlobalAveragePooling2D()(h)))
    block.get_layer("bn2").beta.assign(np.linspace(-1, 1, 8))
    model.compile("adam", "mse")
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    model.fit(data, np.zeros((4, 3)), verbose=0)
    pt.zero_groups(model, _branch_roots(model, "block/c1"))
    before = model.predict(data, verbose=0)
    tf_prunetrain.inplace.reconfigure_in_place(
        model, tf_prunetrain.planning.plan_pruning(tf_prunetrain.channel_groups(model)))
    assert model.get_layer("block") is block
    assert {layer.name for layer in block.layers} >= {"add_offset"}
    assert not {"c1", "c2", "bn1", "bn2"} & {l.name for l in block.layers}
    assert pt.relative_error(before, model.predict(data, verbose=0)) < TOL
    model.fit(data, np.zeros((4, 3)), verbose=0)


def test_a_failed_removal_is_rolled_back(monkeypatch):
    model, x, y = _trained()
    plan = _remove_branch(model)
    before = model.predict(x, verbose=0)
    names = [layer.name for layer in model.layers]
    nodes = {layer.name: (len(layer._inbound_nodes), len(layer._outbound_nodes))
             for layer in model.layers}
    optimizer = model.optimizer

    def fail(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(slicing, "merged", fail)
    with pytest.raises(RuntimeError, match="rolled back.*boom"):
        tf_prunetrain.inplace.reconfigure_in_place(model, plan)
    monkeypatch.undo()
    assert [layer.name for layer in model.layers] == names
    assert {layer.name: (len(layer._inbound_nodes), len(layer._outbound_nodes))
            for layer in model.layers} == nodes
    assert model.optimizer is optimizer
    assert pt.relative_error(before, model.predict(x, verbose=0)) == 0.0
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)


class _KillBranch(keras.callbacks.Callback):
    """Zeroes one residual branch after the first epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            pt.zero_groups(self.model,
                           _branch_roots(self.model, "stage2_block2_conv1"))


def test_reconfigure_removes_a_dead_branch_inside_fit(tmp_path):
    model, x, y = _trained()
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), penalty_ratio=None,
        round_to=1, verbose=0)
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0,
                        callbacks=[_KillBranch(), callback])
    assert len(history.history["loss"]) == 3
    changes = {path: after for path, _, after in
               callback.reconfigurations[0].changes}
    assert changes["stage2_block2_conv2"] == 0  # reported as removed
    assert "stage2_block2_conv1" not in {layer.name for layer in model.layers}
    done = callback.reconfigurations[0]
    assert done.flops_after < done.flops_before
    assert done.gradient_bytes_after < done.gradient_bytes_before


def test_removal_under_mirrored_strategy():
    strategy = tf_prunetrain.distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    model, x, y = _trained(strategy=strategy)
    plan = _remove_branch(model)
    with strategy.scope():
        before = model.predict(x, verbose=0)
    slots = _slots(model)
    tf_prunetrain.inplace.reconfigure_in_place(model, plan)
    with strategy.scope():
        assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL
    for path, value in _slots(model).items():
        np.testing.assert_array_equal(value, slots[path], err_msg=path)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for variable in [*model.weights, *model.optimizer.variables]:
        copies = [np.asarray(v) for v in variable.value.values]
        assert len(copies) == 2, variable.path
        np.testing.assert_array_equal(copies[0], copies[1],
                                      err_msg=variable.path)


def test_the_budget_plan_removes_a_branch_its_dead_channels_cut_off():
    from tf_prunetrain import budget
    model, x, _ = _trained()
    pt.zero_groups(model, _branch_roots(model, "stage2_block2_conv1"))
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.cost.forward_flops(model)
    plan = budget.plan_to_flops(graph, start, ranking=budget.NormPerFlop())  # only dead go
    narrowed = budget.plan_to_flops(graph, start, remove_blocks=False,
                                    ranking=budget.NormPerFlop())
    assert plan.merges and not narrowed.merges
    assert budget.estimate_flops(graph, plan.keep) < \
        budget.estimate_flops(graph, narrowed.keep)
    before = model.predict(x, verbose=0)
    tf_prunetrain.inplace.reconfigure_in_place(model, plan)
    assert "stage2_block2_conv2" not in {layer.name for layer in model.layers}
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL
