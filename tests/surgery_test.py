"""prune_channels: function preservation and the pruning rules."""

import os
import warnings

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain

TOL = 1e-5


def _prepared(build, seed=0):
    model = model_zoo.randomize_batchnorm(build(), seed)
    return model, model_zoo.random_input(model, batch_size=4, seed=seed)


@pytest.mark.parametrize("name", sorted(model_zoo.ALL_BUILDERS))
@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_pruning_dead_channels_preserves_function(name, fraction):
    model, x = _prepared(model_zoo.ALL_BUILDERS[name])
    zeroed, total = pt.zero_random_groups(model, fraction, seed=1)
    assert zeroed > 0, "the architecture has no prunable channel group"
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL
    assert pruned.count_params() < model.count_params()
    assert pt.forward_flops(pruned) < pt.forward_flops(model)
    # The original model is left untouched.
    assert pt.relative_error(before, model.predict(x, verbose=0)) == 0.0


@pytest.fixture
def float64():
    """Deep calibrated networks amplify float32 rounding (≈1e-4 relative
    after 50+ layers): compare them in float64, where only logic errors show."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize("name", sorted(model_zoo.APPLICATIONS))
def test_keras_applications_prune_and_preserve_function(name, float64):
    model = model_zoo.APPLICATIONS[name]()
    assert model.dtype == "float64"
    x = model_zoo.random_input(model, batch_size=2).astype("float64")
    model_zoo.calibrate_batchnorm(model, x)
    pt.zero_random_groups(model, 0.3, seed=2)
    before = model.predict(x, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ops nodes in MobileNetV3 freeze
        pruned = tf_prunetrain.prune_channels(model)
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL
    assert pruned.count_params() < 0.9 * model.count_params()
    assert [layer.name for layer in pruned.layers] == [
        layer.name for layer in model.layers]


def test_nothing_dead_changes_nothing():
    model, x = _prepared(model_zoo.resnet_basic)
    pruned = tf_prunetrain.prune_channels(model)
    assert pruned.count_params() == model.count_params()
    assert pt.relative_error(model.predict(x, verbose=0),
                             pruned.predict(x, verbose=0)) < TOL


def _branch_roots(model, conv_name):
    graph = tf_prunetrain.channel_groups(model)
    for r in graph.records:
        if r.view.path == conv_name:
            return set(graph.roots(r.outs[0]).tolist())
    raise AssertionError(conv_name)


def test_dead_residual_branch_is_removed_and_function_kept():
    model, x = _prepared(model_zoo.resnet_basic)
    names = {layer.name for layer in model.layers}
    conv1 = "stage2_block2_conv1"
    assert conv1 in names
    pt.zero_groups(model, _branch_roots(model, conv1))
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    kept = {layer.name for layer in pruned.layers}
    for gone in ("stage2_block2_conv1", "stage2_block2_bn1",
                 "stage2_block2_conv2", "stage2_block2_bn2", "stage2_block2_add"):
        assert gone not in kept
    # The branch's constant output (BN shift) is folded into an offset.
    offset = pruned.get_layer("stage2_block2_add_offset")
    assert isinstance(offset, keras.layers.Rescaling)
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL
    # Pruning the pruned model again (per-channel offset included) still works.
    pt.zero_random_groups(pruned, 0.4, seed=3)
    before = pruned.predict(x, verbose=0)
    again = tf_prunetrain.prune_channels(pruned)
    assert pt.relative_error(before, again.predict(x, verbose=0)) < TOL
    assert again.count_params() < pruned.count_params()


def test_dead_branch_with_zero_output_becomes_identity():
    model, x = _prepared(model_zoo.resnet_basic)
    pt.zero_groups(model, _branch_roots(model, "stage1_block1_conv1"))
    bn2 = model.get_layer("stage1_block1_bn2")
    bn2.beta.assign(np.zeros(bn2.beta.shape))
    bn2.moving_mean.assign(np.zeros(bn2.moving_mean.shape))
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    names = {layer.name for layer in pruned.layers}
    assert "stage1_block1_add" not in names
    assert "stage1_block1_add_offset" not in names
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL


def test_shortcut_projection_is_never_removed():
    model, x = _prepared(model_zoo.resnet_basic)
    pt.zero_random_groups(model, 0.95, seed=4)
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    shortcuts = [l.name for l in model.layers if "shortcut" in l.name]
    assert shortcuts
    for name in shortcuts:
        pruned.get_layer(name)  # raises if removed
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL


@pytest.mark.parametrize("round_to", [4, 8])
def test_round_to_keeps_multiples_and_function(round_to):
    model, x = _prepared(model_zoo.mobilenetv2_like)
    pt.zero_random_groups(model, 0.5, seed=5)
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model, round_to=round_to)
    plain = tf_prunetrain.prune_channels(model)
    for layer in pruned.layers:
        count = getattr(layer, "filters", None)
        if isinstance(layer, keras.layers.Conv2D) and count is not None:
            full = model.get_layer(layer.name).filters
            assert count % round_to == 0 or count == full, layer.name
    assert pruned.count_params() >= plain.count_params()
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL


@pytest.mark.parametrize("min_channels", [1, 3])
def test_min_channels_keeps_the_strongest(min_channels):
    model, x = _prepared(model_zoo.plain_cnn)
    conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D)
                and l is not model.layers[1])
    pt.zero_groups(model, _branch_roots(model, conv.name))
    before = model.predict(x, verbose=0)
    pruned = tf_prunetrain.prune_channels(model, min_channels=min_channels)
    assert pruned.get_layer(conv.name).filters == min_channels
    assert pt.relative_error(before, pruned.predict(x, verbose=0)) < TOL


def test_explicit_keep_masks():
    model, _ = _prepared(model_zoo.plain_cnn)
    conv = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)][1]
    mask = np.arange(conv.filters) % 2 == 0
    pruned = tf_prunetrain.prune_channels(model, keep={conv.name: mask})
    assert pruned.get_layer(conv.name).filters == mask.sum()
    np.testing.assert_array_equal(
        pruned.get_layer(conv.name).kernel.numpy(),
        conv.kernel.numpy()[..., mask])


def test_bad_arguments_raise_clear_errors():
    model, _ = _prepared(model_zoo.resnet_basic)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        tf_prunetrain.prune_channels(model, keep={"nope": [True]})
    with pytest.raises(ValueError, match="output channels"):
        tf_prunetrain.prune_channels(model, keep={"stem_conv": [True]})
    with pytest.raises(ValueError, match="frozen"):  # classifier = outputs
        tf_prunetrain.prune_channels(
            model, keep={"classifier": np.zeros(10, bool)})
    n = model.get_layer("stem_conv").filters
    with pytest.raises(ValueError, match="contradicts"):
        tf_prunetrain.prune_channels(model, keep={
            "stem_conv": np.ones(n, bool),
            "stage1_block1_conv2": np.zeros(n, bool)})
    for kwargs in ({"round_to": 0}, {"min_channels": 0}, {"threshold": -1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            tf_prunetrain.prune_channels(model, **kwargs)


def test_subclassed_model_gets_a_clear_error():
    with pytest.raises(TypeError, match="subclassed"):
        tf_prunetrain.prune_channels(model_zoo.Subclassed())


def test_unknown_layer_is_frozen_with_a_warning():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, name="c1")(x)
    h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(h)
    h = keras.layers.Conv2D(5, 3, name="c2")(h)
    y = keras.layers.Conv2D(4, 3, name="c3")(h)
    model = keras.Model(x, y)
    graph = tf_prunetrain.channel_groups(model)
    pt.zero_groups(model, np.unique(graph.root).tolist())  # zero everything
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    before = model.predict(data, verbose=0)
    with pytest.warns(UserWarning, match="'double'.*Lambda"):
        pruned = tf_prunetrain.prune_channels(model)
    assert pruned.get_layer("c1").filters == 6  # frozen by the Lambda
    assert pruned.get_layer("c2").filters == 1  # min_channels
    assert pt.relative_error(before, pruned.predict(data, verbose=0)) < TOL


def test_shared_layer_is_pruned_consistently():
    x = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(6, 1, name="a")(x)
    shared = keras.layers.Conv2D(6, 3, padding="same", name="shared")
    h = shared(keras.layers.ReLU()(a))
    h = shared(keras.layers.ReLU()(h))
    y = keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(x, y)
    pt.zero_random_groups(model, 0.5, seed=0)
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    before = model.predict(data, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    assert pruned.get_layer("shared").filters < 6
    assert pt.relative_error(before, pruned.predict(data, verbose=0)) < TOL


def test_sequential_model():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, name="c1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="out"),
    ], name="seq")
    model_zoo.randomize_batchnorm(model)
    pt.zero_random_groups(model, 0.5, seed=0)
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    before = model.predict(data, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    assert isinstance(pruned, keras.Sequential)
    assert pruned.get_layer("c1").filters == 4
    assert pt.relative_error(before, pruned.predict(data, verbose=0)) < TOL


def test_softmax_and_layernorm_freeze_their_channels():
    x = keras.Input((8,))
    h = keras.layers.Dense(6, name="d1")(x)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Dense(6, name="d2", activation="softmax")(h)
    y = keras.layers.Dense(2, name="d3")(h)
    model = keras.Model(x, y)
    graph = tf_prunetrain.channel_groups(model)
    assert np.all(graph.root == 0)  # nothing in this model can be removed


@pytest.mark.parametrize("name", ["resnet_basic", "nested_model"])
def test_pruned_model_saves_and_loads(tmp_path, name):
    model, x = _prepared(model_zoo.ALL_BUILDERS[name])
    pt.zero_random_groups(model, 0.5, seed=6)
    pruned = tf_prunetrain.prune_channels(model)
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == pruned.count_params()
    assert pt.relative_error(pruned.predict(x, verbose=0),
                             loaded.predict(x, verbose=0)) < TOL


def test_compiled_model_stays_compiled():
    model, x = _prepared(model_zoo.plain_cnn)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    pt.zero_random_groups(model, 0.5)
    pruned = tf_prunetrain.prune_channels(model)
    assert pruned.compiled
    loss = pruned.evaluate(x, np.zeros(len(x)), verbose=0)
    assert np.isfinite(loss)


def test_multi_input_multi_output_model():
    a_in, b_in = keras.Input((8, 8, 3), name="a"), keras.Input((8, 8, 2),
                                                              name="b")
    a = keras.layers.Conv2D(6, 3, padding="same", name="ca")(a_in)
    b = keras.layers.Conv2D(6, 3, padding="same", name="cb")(b_in)
    h = keras.layers.Add(name="join")([a, b])
    h = keras.layers.Conv2D(5, 3, name="mid")(keras.layers.ReLU()(h))
    pooled = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model({"a": a_in, "b": b_in}, {
        "cls": keras.layers.Dense(3, name="cls")(pooled),
        "reg": keras.layers.Dense(1, name="reg")(pooled)})
    pt.zero_random_groups(model, 0.5, seed=1)
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=(2, 8, 8, 3)).astype("float32"),
            "b": rng.normal(size=(2, 8, 8, 2)).astype("float32")}
    before = model.predict(data, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    after = pruned.predict(data, verbose=0)
    assert set(after) == {"cls", "reg"}
    for key in before:
        assert pt.relative_error(before[key], after[key]) < TOL
    assert pruned.get_layer("ca").filters == pruned.get_layer("cb").filters < 6


def test_plan_reports_channel_changes_and_removed_layers():
    model, _ = _prepared(model_zoo.resnet_basic)
    pt.zero_groups(model, _branch_roots(model, "stage2_block2_conv1"))
    conv = model.get_layer("stage1_block1_conv1")
    pt.zero_groups(model, sorted(_branch_roots(model, conv.name))[:3])
    plan = tf_prunetrain.planning.plan_pruning(
        tf_prunetrain.channel_groups(model))
    rows = {path: (before, after) for path, before, after in plan.changes()}
    assert rows["stage1_block1_conv1"] == (conv.filters, conv.filters - 3)
    assert rows["stage2_block2_conv2"][1] == 0  # removed with its branch
    assert "stem_conv" not in rows


def test_grouped_conv_with_one_group_per_channel_is_pruned_like_depthwise():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 1, name="expand")(x)
    h = keras.layers.Conv2D(12, 3, padding="same", groups=6, name="dw")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    y = keras.layers.Conv2D(4, 1, name="project")(h)
    model = model_zoo.randomize_batchnorm(keras.Model(x, y))
    graph = tf_prunetrain.channel_groups(model)
    assert len(np.unique(graph.root[graph.root != 0])) == 6
    pt.zero_random_groups(model, 0.5, seed=0)
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    before = model.predict(data, verbose=0)
    pruned = tf_prunetrain.prune_channels(model)
    dw = pruned.get_layer("dw")
    assert (dw.groups, dw.filters) == (3, 6)
    assert pt.relative_error(before, pruned.predict(data, verbose=0)) < TOL


# Regressions found in review: each once broke prune_channels.

def _data(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype(
        "float32")


def _roots_of(model, name):
    return _branch_roots(model, name) - {0}


def _assert_preserved(model, data, **kwargs):
    before = model.predict(data, verbose=0)
    pruned = tf_prunetrain.prune_channels(model, **kwargs)
    assert pt.relative_error(before, pruned.predict(data, verbose=0)) < TOL
    return pruned


def test_branch_with_a_live_parallel_path_is_kept():
    L = keras.layers
    x = keras.Input((8, 8, 3))
    centred = x - keras.ops.mean(x, axis=(1, 2), keepdims=True)
    a = L.Conv2D(8, 3, padding="same", name="stem")(centred)
    p1 = L.BatchNormalization(name="bn_dead")(L.Conv2D(4, 1, name="dead")(a))
    p2 = L.ReLU()(L.Conv2D(4, 1, name="live")(a))
    b = L.Conv2D(8, 1, name="proj")(L.Concatenate()([p1, p2]))
    y = L.Dense(4, name="out")(
        L.GlobalAveragePooling2D()(L.Add(name="add")([a, b])))
    model = keras.Model(x, y)
    model.get_layer("bn_dead").beta.assign(np.linspace(-1, 1, 4))
    pt.zero_groups(model, _roots_of(model, "dead"))
    pruned = _assert_preserved(model, _data((8, 8, 3)))
    # The branch stays; 'dead' keeps min_channels=1 of its 4 channels.
    assert pruned.get_layer("dead").filters == 1
    assert pruned.get_layer("proj").kernel.shape[2] == 5


def test_size_dependent_constant_branch_is_kept():
    L = keras.layers
    x = keras.Input((None, None, 3))
    f = L.Conv2D(8, 3, padding="same", name="f")(x)
    b = L.BatchNormalization(name="bn1")(L.Conv2D(4, 1, name="dead")(f))
    b = L.BatchNormalization(name="bn2")(L.Conv2D(8, 1, name="c2")(b))
    b = L.GlobalAveragePooling2D()(L.ZeroPadding2D(2)(b))
    s = L.Add(name="add")([L.GlobalAveragePooling2D()(f), b])
    model = keras.Model(x, L.Dense(3, name="out")(s))
    model.get_layer("bn2").beta.assign(np.linspace(-1, 1, 8))
    pt.zero_groups(model, _roots_of(model, "dead"))
    _assert_preserved(model, _data((8, 8, 3)))


def test_models_nested_in_a_sequential():
    L = keras.layers
    base = keras.Sequential([keras.Input((8, 8, 8)), L.Conv2D(6, 3, name="b1"),
                             L.ReLU(), L.Conv2D(8, 3, name="b2")], name="base")
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 1, name="stem"),
                              base, L.GlobalAveragePooling2D(),
                              L.Dense(3, name="out")])
    pt.zero_random_groups(model, 0.5, seed=0)
    pruned = _assert_preserved(model, _data((8, 8, 3)))
    assert isinstance(pruned.get_layer("base"), keras.Sequential)
    assert tf_prunetrain.add_group_lasso(model).count_params() == \
        model.count_params()


def test_nested_model_keeps_dynamic_dimensions_and_serves_two_sizes():
    L = keras.layers
    i = keras.Input((None, None, 8))
    sub = keras.Model(i, L.Conv2D(8, 3, padding="same", name="s1")(i),
                      name="sub")
    x = keras.Input((16, 16, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(x)
    y = L.Concatenate()([L.GlobalAveragePooling2D()(sub(a)),
                         L.GlobalAveragePooling2D()(sub(L.MaxPooling2D()(a)))])
    model = keras.Model(x, L.Dense(3, name="out")(y))
    pt.zero_random_groups(model, 0.5, seed=0)
    pruned = _assert_preserved(model, _data((16, 16, 3)))
    assert pruned.get_layer("sub").inputs[0].shape[1:3] == (None, None)


def test_shared_weightless_layers_and_models():
    L = keras.layers
    i = keras.Input((8, 8, 8))
    sub = keras.Model(i, L.ReLU()(i), name="sub")
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(x)
    b = L.Conv2D(8, 3, padding="same", name="b")(x)
    y = L.Conv2D(4, 1, name="c")(L.Concatenate()([sub(a), sub(b)]))
    model = keras.Model(x, L.Dense(3, name="out")(
        L.GlobalAveragePooling2D()(y)))
    pt.zero_groups(model, sorted(_roots_of(model, "a"))[:3])
    pruned = _assert_preserved(model, _data((8, 8, 3)))
    assert pruned.get_layer("a").filters == pruned.get_layer("b").filters

    x = keras.Input((8, 8, 3))
    reshape = L.Reshape((-1, 8), name="rs")
    a = reshape(L.Conv2D(8, 3, padding="same", name="a")(x))
    b = reshape(L.Conv2D(8, 3, padding="same", name="b")(x))
    y = L.Concatenate(axis=1)([L.Dense(4, name="da")(a),
                               L.Dense(4, name="db")(b)])
    model = keras.Model(x, L.Dense(3, name="out")(L.Flatten()(y)))
    pt.zero_groups(model, sorted(_roots_of(model, "a"))[:3])
    _assert_preserved(model, _data((8, 8, 3)))


def test_keras_ops_abs_is_followed():
    L = keras.layers
    x = keras.Input((8, 8, 3))
    h = keras.ops.abs(L.Conv2D(6, 1, name="c1")(x))
    model = keras.Model(x, L.Conv2D(2, 1, name="c2")(h))
    graph = tf_prunetrain.channel_groups(model)
    assert len(np.unique(graph.root[graph.root != 0])) == 6
