"""Keras ImageNet ResNet50 weight files -> Flax variables, with h5py (no TensorFlow, no pickle).

The files `resnet50_weights_tf_dim_ordering_tf_kernels.h5` (with the classifier) and
`resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5` use Keras' legacy HDF5 layout: the root
attribute `layer_names` lists the layers, each layer group's attribute `weight_names` lists its
weights, and a weight lives at `<layer group>/<weight name>`. Keras 2 wrote weight names such as
`conv1_conv/kernel:0`; Keras 3's legacy writer drops the `:0`. Following those attributes instead
of guessing paths reads both, and ignores whatever else a writer adds (Keras 3 adds a
`top_level_model_weights` group that is not a layer). Keras 1 wrote `<layer>_W_1:0` and
`<layer>_b_1:0` straight into the layer group; the VGG16 ImageNet files
(`jaxcolor.models.vgg16`) are in that layout, and those names read as `kernel` and `bias`.

Every tensor is checked against the tree the Flax model expects, because a silently skipped or
misplaced tensor would give a network that runs but computes nonsense.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcolor.models.resnet import ResNet50

KERAS_FILES = (
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
TOP_LAYER = "predictions"

# Keras weight name -> (Flax collection, Flax variable name), per layer kind.
CONV_WEIGHTS = {"kernel": ("params", "kernel"), "bias": ("params", "bias")}
BN_WEIGHTS = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}

# Layout of the directory `python -m jaxcolor.port` writes.
PORT_VARIABLES_DIR = "variables"
PORT_METADATA_FILE = "keras_source.json"


def _missing_file_error(path) -> FileNotFoundError:
    return FileNotFoundError(
        f"Keras ResNet50 weights not found at {str(path)!r}. Expected one of the Keras ImageNet "
        f"files {KERAS_FILES[0]} (with the classifier top) or {KERAS_FILES[1]} (without it); "
        "Keras stores them in ~/.keras/models/ "
        "(downloaded there by keras.applications.ResNet50(weights='imagenet'))."
    )


def _string_list_attr(group, name: str) -> list[str]:
    """A list-of-strings attribute, also in Keras' split form (`name0`, `name1`, ...).

    Keras splits attributes over HDF5's 64 KiB header limit that way.
    """
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


# Keras 1's names for a Conv2D's or Dense's weights (`block1_conv1_W_1` -> kernel).
KERAS1_WEIGHTS = {"W": "kernel", "b": "bias"}


def _short_weight_name(weight_name: str, layer: str | None = None) -> str:
    """`conv1_conv/kernel:0` or `conv1_conv/kernel` -> `kernel`; with the layer's name also
    Keras 1's `block1_conv1_W_1:0` -> `kernel` and `block1_conv1_b_1:0` -> `bias`."""
    short = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    if layer is not None:
        keras1 = re.fullmatch(re.escape(layer) + r"_(W|b)(?:_\d+)?", short)
        if keras1:
            return KERAS1_WEIGHTS[keras1.group(1)]
    return short


def read_keras_h5(path) -> dict[str, dict[str, np.ndarray]]:
    """Layer name -> {Keras weight name ('kernel', 'gamma', ...) -> array}.

    Layers without weights (padding, activations, pooling) are left out.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing_file_error(path)
    import h5py  # here, not at import: training an autoencoder needs no h5py

    layers = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if not _string_list_attr(root, "layer_names"):
            raise ValueError(
                f"{path}: no 'layer_names' attribute; not a Keras legacy HDF5 weight file"
            )
        for layer in _string_list_attr(root, "layer_names"):
            group = root[layer]
            weights = {}
            for weight_name in _string_list_attr(group, "weight_names"):
                short = _short_weight_name(weight_name, layer)
                if short in weights:
                    raise ValueError(f"{path}: layer {layer!r} has weight {short!r} twice")
                if weight_name not in group:
                    raise ValueError(
                        f"{path}: layer {layer!r} lists weight {weight_name!r} "
                        "but does not store it"
                    )
                weights[short] = np.asarray(group[weight_name])
            if weights:
                layers[layer] = weights
    return layers


def expected_variables(model: ResNet50):
    """The model's variable tree as ShapeDtypeStructs: what a weight file must supply.

    Only shapes are traced, nothing is allocated; the input size does not affect any shape.
    """
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def keras_layers_to_variables(layers, expected, *, ignore_layers=(TOP_LAYER,)):
    """Keras layers (as `read_keras_h5` returns) -> Flax {'params', 'batch_stats'} numpy trees.

    Every layer and weight that `expected` has must be present with the expected shape; a file
    layer the model lacks is an error unless it is in `ignore_layers`.
    """
    params_expected = expected["params"]
    extra = sorted(set(layers) - set(params_expected) - set(ignore_layers))
    if extra:
        raise ValueError(f"weight file has layers the model does not: {extra}")
    variables = {"params": {}, "batch_stats": {}}
    for layer in params_expected:
        if layer not in layers:
            raise ValueError(f"layer {layer!r} is missing from the weight file")
        table = BN_WEIGHTS if "scale" in params_expected[layer] else CONV_WEIGHTS
        found = layers[layer]
        unknown = sorted(set(found) - set(table))
        if unknown:
            raise ValueError(
                f"layer {layer!r}: unexpected weight(s) {unknown} in the weight file "
                f"(expected {sorted(table)})"
            )
        for keras_name, (collection, flax_name) in table.items():
            if keras_name not in found:
                raise ValueError(
                    f"layer {layer!r}: weight {keras_name!r} is missing from the weight file"
                )
            target = expected[collection][layer][flax_name]
            value = found[keras_name]
            if value.shape != target.shape:
                raise ValueError(
                    f"layer {layer!r}: weight {keras_name!r} has shape {value.shape} in the weight "
                    f"file, the model expects {target.shape}"
                )
            variables[collection].setdefault(layer, {})[flax_name] = value.astype(target.dtype)
    return variables


def load_keras_h5(path, include_top: bool | None = None, *, ignore_top: bool = True):
    """A Keras ResNet50 ImageNet HDF5 file -> Flax variables {'params', 'batch_stats'}.

    `include_top=None` follows the file (the top if it has a `predictions` layer). A file with the
    top loaded with `include_top=False` drops `predictions` when `ignore_top` (the default), since
    the feature extractor is the same network; `ignore_top=False` makes that an error instead.
    """
    layers = read_keras_h5(path)
    if include_top is None:
        include_top = TOP_LAYER in layers
    expected = expected_variables(ResNet50(include_top=include_top))
    ignore = (TOP_LAYER,) if ignore_top else ()
    variables = keras_layers_to_variables(layers, expected, ignore_layers=ignore)
    return jax.tree.map(jnp.asarray, variables)


def load_port_dir(directory):
    """Variables from a directory written by `python -m jaxcolor.port`, with its metadata."""
    import orbax.checkpoint as ocp

    directory = Path(directory).expanduser().absolute()
    metadata_path = directory / PORT_METADATA_FILE
    if not metadata_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a directory written by `python -m jaxcolor.port`: "
            f"no {PORT_METADATA_FILE}"
        )
    metadata = json.loads(metadata_path.read_text())
    target = expected_variables(ResNet50(include_top=metadata["include_top"]))
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(directory / PORT_VARIABLES_DIR, target)
    return variables, metadata


def load_pretrained(path):
    """ResNet50 variables from a Keras `.h5` file or from a `python -m jaxcolor.port` directory.

    Whether the result has the classifier top follows the source.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return load_port_dir(path)[0]
    return load_keras_h5(path)
