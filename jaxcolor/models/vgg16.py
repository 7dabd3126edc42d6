"""A frozen VGG16 feature extractor (Keras' `keras.applications.VGG16`) for a perceptual loss.

`VGG16Features` is the convolutional part of Keras' VGG16, layer for layer and with Keras' layer
names (`block1_conv1` .. `block5_conv3`: 3x3 convolutions with 'same' padding, bias and ReLU, a
2x2 max pool after each block), so Keras' ImageNet weight file
`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` loads with `load` and a feature map equals
Keras' number for number (tests/test_vgg16.py). It takes RGB in [0, 1] and applies Keras'
`vgg16.preprocess_input` itself ('caffe' mode: BGR, ImageNet means subtracted on the 0..255
scale), so a caller passes the RGB it rebuilt from L and the predicted ab.

The extractor is frozen by how it is used, not by the module: keep the loaded variables out of the
train state (close over them) and differentiate with respect to the image only.

`perceptual_distance` compares two feature dicts: per layer the mean absolute (L1) difference,
combined over layers by a weighted mean, per example, then averaged over the examples that count
as `jaxcolor.losses` does. L1 because DDColor (Kang et al. 2023) trains with an L1 perceptual
term on ImageNet VGG16 features; its per-block layer weights 1/16, 1/8, 1/4, 1/2, 1 are the
default here (`DDCOLOR_LAYER_WEIGHTS`). DDColor taps the pre-ReLU conv{b}_1 of a BatchNorm VGG16
and sums the weighted terms; here the taps are the post-ReLU ends of the blocks of the plain VGG16
whose Keras weights users have, and the weights are normalised to sum to 1, so the scale of the
term differs (a loss weight absorbs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor.models import keras_weights
from jaxcolor.models.resnet import preprocess_caffe

KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_TOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
# Layers of the file with the classifier, which the feature extractor does not use.
TOP_LAYERS = ("fc1", "fc2", "predictions")

# (block, output channels, convolutions), as Keras' VGG16.
BLOCKS = ((1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3))
# Tap name -> block: the post-ReLU output of the block's last convolution (before its pool).
LAYERS = {f"relu{block}_{convs}": block for block, _, convs in BLOCKS}
DDCOLOR_LAYER_WEIGHTS = {"relu1_2": 0.0625, "relu2_2": 0.125, "relu3_3": 0.25, "relu4_3": 0.5,
                         "relu5_3": 1.0}


def _check_layers(layers) -> tuple[str, ...]:
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown or not layers:
        raise ValueError(f"VGG16 feature layers {list(layers)}: expected one or more of "
                         f"{list(LAYERS)}")
    return layers


class VGG16Features(nn.Module):
    """Keras' VGG16 without the top, returning {tap name: feature map} for `layers`.

    Input: RGB in [0, 1], (B, H, W, 3), any float dtype. The network stops after the block of the
    deepest requested tap, so the layers after it are neither created nor computed. `dtype` is
    the compute dtype of the convolutions (parameters stay float32).
    """

    layers: Sequence[str] = tuple(LAYERS)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, rgb):
        layers = _check_layers(self.layers)
        deepest = max(LAYERS[name] for name in layers)
        x = preprocess_caffe(jnp.asarray(rgb, jnp.float32)).astype(self.dtype)
        out = {}
        for block, features, convs in BLOCKS[:deepest]:
            if block > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            for conv in range(1, convs + 1):
                x = nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype,
                            param_dtype=jnp.float32, name=f"block{block}_conv{conv}")(x)
                x = nn.relu(x)
            name = f"relu{block}_{convs}"
            if name in layers:
                out[name] = x
        return out


def expected_variables():
    """The full 13-layer variable tree as ShapeDtypeStructs (shapes only, nothing allocated)."""
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(lambda x: VGG16Features().init(jax.random.key(0), x), x)


def _missing_file_error(path) -> FileNotFoundError:
    return FileNotFoundError(
        f"Keras VGG16 weights not found at {str(path)!r}. Expected Keras' ImageNet file "
        f"{KERAS_FILE} (or {KERAS_TOP_FILE}, with the classifier); "
        "keras.applications.VGG16(weights='imagenet', include_top=False) downloads it to "
        "~/.keras/models/."
    )


def load(path):
    """Keras' VGG16 ImageNet weight file -> Flax variables {'params': ...} for `VGG16Features`.

    Reads the legacy HDF5 layouts with h5py (no TensorFlow, no pickle): the ImageNet files'
    Keras 1 names (`block1_conv1/block1_conv1_W_1:0`), Keras 2's (`block1_conv1/block1_conv1/
    kernel:0`) and Keras 3's legacy writer's (no `:0`). All 13 convolutions must be there with
    VGG16's shapes; the classifier layers of the file with the top are ignored. The result holds
    every layer, so it serves a `VGG16Features` with any `layers`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing_file_error(path)
    expected = expected_variables()
    try:
        layers = keras_weights.read_keras_h5(path)
        variables = keras_weights.keras_layers_to_variables(
            layers, expected, ignore_layers=TOP_LAYERS)
    except (ValueError, OSError) as error:
        message = str(error)
        if not message.startswith(f"{path}:"):
            message = f"{path}: {message}"
        raise ValueError(
            f"{message} (expected Keras' VGG16 weights as in {KERAS_FILE}: the 13 convolutions "
            "block1_conv1..block5_conv3, each with a 3x3 kernel and a bias)"
        ) from None
    return {"params": jax.tree.map(jnp.asarray, variables["params"])}


def perceptual_distance(features_pred: Mapping, features_true: Mapping, layers,
                        weights=None, *, weight=None):
    """Weighted mean over `layers` of the mean absolute difference of the feature maps, float32.

    `features_*` map tap names to (B, h, w, C) feature maps (as `VGG16Features` returns).
    `weights`: one number per layer (default `DDCOLOR_LAYER_WEIGHTS`); they are normalised to sum
    to 1, so equal weights give the plain mean over layers. `weight`: per-example weights (B,) as
    in `jaxcolor.losses` (0 for padding rows); each example's distance is averaged over the
    examples by `weight`.
    """
    from jaxcolor.losses import _per_example  # here: losses may come to import this module

    layers = _check_layers(layers)
    if weights is None:
        weights = [DDCOLOR_LAYER_WEIGHTS[name] for name in layers]
    if isinstance(weights, (np.ndarray, jax.Array)) or len(weights) != len(layers):
        raise ValueError(f"perceptual_distance: weights must be one number per layer {layers}, "
                         f"got {weights!r} (per-example weights go in weight=)")
    weights = [float(w) for w in weights]
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"perceptual_distance: layer weights {weights} must be >= 0, not all 0")
    per_example = 0.0
    for name, w in zip(layers, weights, strict=True):
        pred = jnp.asarray(features_pred[name], jnp.float32)
        true = jnp.asarray(features_true[name], jnp.float32)
        if pred.shape != true.shape:
            raise ValueError(f"perceptual_distance: {name} has shape {pred.shape} in the "
                             f"prediction and {true.shape} in the target")
        diff = jnp.abs(pred - true).reshape(pred.shape[0], -1).mean(axis=1)
        per_example = per_example + (w / sum(weights)) * diff
    return _per_example(per_example, weight)
