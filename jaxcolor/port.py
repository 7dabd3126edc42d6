"""Convert a Keras ResNet50 ImageNet HDF5 file once into an orbax checkpoint.

    python -m jaxcolor.port \
        --keras-h5 ~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
        --out /data/resnet50_notop

The output directory holds `variables/` (an orbax StandardCheckpointer checkpoint of
{'params', 'batch_stats'}) and `keras_source.json` (source file, whether it has the top), and is
read back by `jaxcolor.models.keras_weights.load_pretrained`. Converting once keeps h5py out of
the training hosts' startup and checks the file a single time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxcolor.models.keras_weights import (
    PORT_METADATA_FILE,
    PORT_VARIABLES_DIR,
    load_keras_h5,
)


def port(keras_h5, out_dir, include_top: bool = False) -> list[Path]:
    """Writes the checkpoint and metadata; returns the paths written.

    Without `include_top` a file with the classifier is converted without it; with it, a file
    lacking the classifier is a ValueError naming the missing 'predictions' layer.
    """
    import orbax.checkpoint as ocp

    keras_h5 = Path(keras_h5).expanduser().absolute()
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output directory {out_dir} exists and is not empty")
    variables = load_keras_h5(keras_h5, include_top=include_top)

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out_dir / PORT_VARIABLES_DIR
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(checkpoint_dir, variables)
    metadata_path = out_dir / PORT_METADATA_FILE
    metadata = {"source": str(keras_h5), "include_top": include_top, "model": "ResNet50"}
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    return [checkpoint_dir, metadata_path]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxcolor.port", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keras-h5", required=True, help="Keras ResNet50 ImageNet .h5 weight file")
    parser.add_argument(
        "--out", required=True, help="output directory (must not exist or be empty)"
    )
    parser.add_argument(
        "--include-top",
        action="store_true",
        help="keep the 1000-way classifier (file must have it)",
    )
    args = parser.parse_args(argv)
    try:
        written = port(args.keras_h5, args.out, include_top=args.include_top)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
