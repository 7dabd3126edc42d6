"""Convert a Keras ResNet50 ImageNet HDF5 file once into an orbax checkpoint.

    python -m jaxcolor.port \
        --keras_h5 ~/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
        --out /data/resnet50_notop

The output directory holds `variables/` (an orbax StandardCheckpointer checkpoint of
{'params', 'batch_stats'}) and `keras_source.json` (source file, whether it has the top), and is
read back by `jaxcolor.models.keras_weights.load_pretrained`. Converting once keeps h5py out of
the training hosts' startup and checks the file a single time.

Flags are spelt with underscores, as every command's; `--keras-h5` and `--include-top`, the
spellings of earlier versions, are still accepted (not listed in --help). Exit status: 0 written;
2 a usage error (a flag, a missing or wrong .h5 file, an --out that is not empty), one line
naming it, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxcolor import config as config_lib
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


def parse_args(argv):
    parser = config_lib.command_parser("python -m jaxcolor.port", __doc__.split("\n")[0])
    h5 = parser.add_mutually_exclusive_group(required=True)  # required, in either spelling
    h5.add_argument("--keras_h5", metavar="FILE", help="Keras ResNet50 ImageNet .h5 weight file")
    h5.add_argument("--keras-h5", dest="keras_h5", help=argparse.SUPPRESS)  # the earlier name
    parser.add_argument("--out", required=True,
                        help="output directory (must not exist or be empty)")
    parser.add_argument("--include_top", action="store_true",
                        help="keep the 1000-way classifier (file must have it)")
    parser.add_argument("--include-top", dest="include_top", action="store_true",
                        help=argparse.SUPPRESS)  # the earlier name
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The command; a usage error exits (SystemExit, status 2) rather than returning."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        written = port(args.keras_h5, args.out, include_top=args.include_top)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        config_lib.usage_error(error)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
