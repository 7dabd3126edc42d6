"""VGG16 feature extractor: exactness against Keras, the weight file reader, the distance.

Weight files are written here in the layouts of Keras' VGG16 files from a Keras VGG16 whose
weights (biases included) are random, so a wrong channel order, padding, pool or a misplaced
tensor shows up as a numeric mismatch.
"""

from __future__ import annotations

import functools
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require
from test_resnet import keras3_writer_file  # Keras 3's legacy writer, as for ResNet50

from jaxcolor.models import vgg16
from jaxcolor.models.vgg16 import KERAS_FILE, VGG16Features, load, perceptual_distance

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 32  # the smallest input Keras' VGG16 accepts
TAPS = tuple(vgg16.LAYERS)  # relu1_2 .. relu5_3
KERAS_TAPS = {name: f"block{block}_conv{name[-1]}" for name, block in vgg16.LAYERS.items()}


def max_rel_error(ours, reference) -> float:
    """As tests/test_resnet.py: the largest absolute error over the largest reference value."""
    reference = np.asarray(reference, np.float64)
    return float(
        np.max(np.abs(np.asarray(ours, np.float64) - reference)) / np.max(np.abs(reference))
    )


def random_weight(rng, name: str, shape) -> np.ndarray:
    """He-scaled kernels keep activations at the input's scale through 13 ReLU layers; biases
    large enough that a dropped or misplaced one shows."""
    if name == "kernel":
        value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    else:
        value = rng.normal(0.0, 5.0, shape)
    return value.astype(np.float32)


def write_legacy_h5(path, layers, style: str = "keras1"):
    """Writes `[(layer name, [(weight name, array), ...]), ...]` in a Keras legacy HDF5 layout.

    'keras1' is the layout of Keras' VGG16 ImageNet files: no input layer, weights stored in the
    layer group as `block1_conv1_W_1:0` and `block1_conv1_b_1:0`. 'keras2' is `layer/kernel:0`
    in a subgroup, as Keras 2 wrote (and the ResNet50 files are).
    """
    keras1_names = {"kernel": "W", "bias": "b"}
    with h5py.File(path, "w") as f:
        if style == "keras1":
            layers = [(n, w) for n, w in layers if not n.startswith("input")]
        f.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = {"keras1": b"1.2.2", "keras2": b"2.2.4"}[style]
        for layer, weights in layers:
            group = f.create_group(layer)
            if style == "keras1":
                names = [f"{layer}_{keras1_names[w]}_1:0" for w, _ in weights]
            else:
                names = [f"{layer}/{w}:0" for w, _ in weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, (_, value) in zip(names, weights, strict=True):
                group.create_dataset(name, data=value)
    return path


@functools.cache
def random_layers():
    """A legacy layer list of random tensors with VGG16's shapes and Keras' pools (no Keras)."""
    rng = np.random.default_rng(1)
    params = vgg16.expected_variables()["params"]
    layers = [("input_1", [])]
    for block, _, convs in vgg16.BLOCKS:
        for conv in range(1, convs + 1):
            name = f"block{block}_conv{conv}"
            layers.append((name, [(k, random_weight(rng, k, params[name][k].shape))
                                  for k in ("kernel", "bias")]))
        layers.append((f"block{block}_pool", []))
    return layers


# ---------------------------------------------------------------- exactness against Keras


@pytest.fixture(scope="module")
def keras_reference():
    """A randomised Keras VGG16 (no top), its layer list, images and every tapped output."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = require("keras")
    model = keras.applications.VGG16(weights=None, include_top=False,
                                     input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(0)
    layers = []
    for layer in model.layers:
        names = [w.path.rsplit("/", 1)[-1] for w in layer.weights]
        values = [random_weight(rng, n, tuple(w.shape))
                  for n, w in zip(names, layer.weights, strict=True)]
        if values:
            layer.set_weights(values)
        layers.append((layer.name, list(zip(names, values, strict=True))))
    images = rng.uniform(0.0, 1.0, (2, SIZE, SIZE, 3)).astype(np.float32)
    inputs = keras.applications.vgg16.preprocess_input(images.copy() * 255.0)
    taps_model = keras.Model(model.input, [model.get_layer(KERAS_TAPS[n]).output for n in TAPS])
    outputs = taps_model.predict(inputs, verbose=0)
    reference = dict(zip(TAPS, (np.asarray(o) for o in outputs), strict=True))
    return {"keras": keras, "model": model, "layers": layers, "images": images,
            "reference": reference}


@functools.cache
def jitted_apply(layers=TAPS):
    return jax.jit(VGG16Features(layers=layers).apply)


@pytest.mark.parametrize("style", ["keras1", "keras2", "keras3_writer"])
def test_matches_keras(keras_reference, tmp_path, style):
    path = tmp_path / KERAS_FILE
    if style == "keras3_writer":
        keras3_writer_file(keras_reference, path)
    else:
        write_legacy_h5(path, keras_reference["layers"], style)
    variables = load(path)
    ours = jitted_apply()(variables, keras_reference["images"])
    assert set(ours) == set(TAPS)
    errors = {}
    for name, reference in keras_reference["reference"].items():
        assert ours[name].shape == reference.shape, name
        assert np.max(np.abs(reference)) > 1.0 and np.mean(reference > 0) > 0.05, name  # alive
        errors[name] = max_rel_error(ours[name], reference)
    print(f"\n[{style}] max relative error:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert all(errors[n] < 1e-4 for n in errors), errors  # False for NaN, unlike max()


def test_computes_only_up_to_the_deepest_requested_layer(keras_reference, tmp_path):
    variables = load(write_legacy_h5(tmp_path / KERAS_FILE, keras_reference["layers"]))
    model = VGG16Features(layers=("relu2_2", "relu1_2"))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    assert sorted(shapes["params"]) == ["block1_conv1", "block1_conv2", "block2_conv1",
                                        "block2_conv2"]
    ours = jitted_apply(("relu2_2", "relu1_2"))(variables, keras_reference["images"])
    assert set(ours) == {"relu1_2", "relu2_2"}
    assert max_rel_error(ours["relu2_2"], keras_reference["reference"]["relu2_2"]) < 1e-4
    with pytest.raises(ValueError, match="relu3_2.*relu3_3"):
        VGG16Features(layers=("relu3_2",)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_keras3_native_weights_file_is_rejected_clearly(keras_reference, tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    keras_reference["model"].save_weights(path)
    with pytest.raises(ValueError, match=rf"{path}.*not a Keras legacy HDF5.*{KERAS_FILE}"):
        load(path)


# ---------------------------------------------------------------- loader checks (no Keras needed)


def test_file_with_the_top_loads_the_same_features(tmp_path):
    layers = random_layers()
    rng = np.random.default_rng(2)
    top = layers + [("flatten", []),
                    ("fc1", [("kernel", rng.normal(size=(512, 8)).astype(np.float32)),
                             ("bias", np.zeros(8, np.float32))]),
                    ("predictions", [("kernel", rng.normal(size=(8, 3)).astype(np.float32)),
                                     ("bias", np.zeros(3, np.float32))])]
    notop = load(write_legacy_h5(tmp_path / KERAS_FILE, layers))
    with_top = load(write_legacy_h5(tmp_path / vgg16.KERAS_TOP_FILE, top))
    assert jax.tree.structure(notop) == jax.tree.structure(with_top)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(notop), jax.tree.leaves(with_top), strict=True))
    assert sorted(notop["params"]) == sorted(f"block{b}_conv{c}" for b, _, n in vgg16.BLOCKS
                                             for c in range(1, n + 1))


def _edited(layers, layer, edit):
    return [(name, edit(weights) if name == layer else weights) for name, weights in layers]


@pytest.mark.parametrize("style", ["keras1", "keras2"])
def test_shape_mismatch_names_the_layer_and_file(tmp_path, style):
    layers = _edited(random_layers(), "block3_conv2",
                     lambda ws: [(ws[0][0], ws[0][1][:, :, :128]), ws[1]])
    path = write_legacy_h5(tmp_path / KERAS_FILE, layers, style)
    with pytest.raises(ValueError) as error:
        load(path)
    message = str(error.value)
    print("\n" + message)
    assert "\n" not in message and str(path) in message
    assert "'block3_conv2': weight 'kernel' has shape (3, 3, 128, 256)" in message
    assert "expects (3, 3, 256, 256)" in message


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: [(n, w) for n, w in ls if n != "block5_conv3"],
         r"'block5_conv3' is missing"),
        (lambda ls: _edited(ls, "block1_conv1", lambda ws: ws[:1]),
         r"'block1_conv1': weight 'bias' is missing"),
    ],
    ids=["missing_layer", "missing_bias"],
)
def test_missing_weights_name_the_layer_and_file(tmp_path, edit, message):
    path = write_legacy_h5(tmp_path / KERAS_FILE, edit(random_layers()))
    with pytest.raises(ValueError, match=message) as error:
        load(path)
    assert str(path) in str(error.value) and KERAS_FILE in str(error.value)


def test_missing_file_names_the_file_and_where_to_get_it(tmp_path):
    path = tmp_path / "nowhere" / KERAS_FILE
    with pytest.raises(FileNotFoundError) as error:
        load(path)
    text = str(error.value)
    assert str(path) in text and KERAS_FILE in text
    assert "keras.applications.VGG16(weights='imagenet', include_top=False)" in text
    assert "~/.keras/models" in text


# ---------------------------------------------------------------- the distance


def test_distance_is_zero_for_identical_inputs_and_positive_otherwise():
    layers = ("relu1_2", "relu2_2")
    images = jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3))
    variables = jax.jit(VGG16Features(layers=layers).init)(jax.random.key(1), images)
    apply = jitted_apply(layers)
    a, b = apply(variables, images), apply(variables, np.array(images))
    distance = perceptual_distance(a, b, layers)
    assert distance.dtype == jnp.float32 and distance.shape == ()
    assert float(distance) == 0.0
    assert float(perceptual_distance(a, apply(variables, images[::-1]), layers)) > 0.0


def test_distance_matches_a_hand_computed_two_layer_case():
    # two examples; relu1_2 is (2, 1, 2, 1), relu2_2 is (2, 1, 1, 2)
    pred = {"relu1_2": jnp.array([[[[1.0], [2.0]]], [[[0.0], [0.0]]]], jnp.bfloat16),
            "relu2_2": jnp.array([[[[3.0, 5.0]]], [[[1.0, 1.0]]]])}
    true = {"relu1_2": jnp.array([[[[0.0], [4.0]]], [[[1.0], [1.0]]]]),
            "relu2_2": jnp.array([[[[3.0, 1.0]]], [[[0.0, 0.0]]]])}
    # per example mean |difference|: relu1_2 -> (1.5, 1.0), relu2_2 -> (2.0, 1.0)
    layers = ("relu1_2", "relu2_2")
    equal = perceptual_distance(pred, true, layers, weights=(1.0, 1.0))
    assert equal.dtype == jnp.float32
    np.testing.assert_allclose(equal, ((1.5 + 2.0) / 2 + (1.0 + 1.0) / 2) / 2, rtol=1e-6)
    # DDColor's weights 1/16 and 1/8 for these blocks, normalised: 1/3 and 2/3
    ddcolor = perceptual_distance(pred, true, layers)
    np.testing.assert_allclose(ddcolor, ((1.5 + 2 * 2.0) / 3 + (1.0 + 2 * 1.0) / 3) / 2,
                               rtol=1e-6)
    # the second example is padding
    padded = perceptual_distance(pred, true, layers, (1.0, 3.0), weight=jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(padded, (1.5 + 3 * 2.0) / 4, rtol=1e-6)
    with pytest.raises(ValueError, match="one number per layer"):
        perceptual_distance(pred, true, layers, jnp.array([1.0, 0.0]))


def test_gradient_reaches_the_image():
    model = VGG16Features(layers=("relu2_2",))
    images = jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3))
    variables = jax.jit(model.init)(jax.random.key(1), images)
    target = jitted_apply(("relu2_2",))(variables, images)

    def loss(rgb):
        return perceptual_distance(model.apply(variables, rgb), target, ("relu2_2",))

    grad = jax.jit(jax.grad(loss))(images[::-1])
    assert grad.shape == images.shape and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).max()) > 0.0
