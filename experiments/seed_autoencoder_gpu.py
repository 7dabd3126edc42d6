"""`seed_autoencoder.py` on a GPU host: the same recipe and data, set up so the GPU does not wait.

Measured on one H100 with 16 CPU cores (benchmarks/RESULTS.md, "Third GPU session"): the bfloat16
train step takes about 10,100 examples/s at batch 512, while the host-side augmentation
(rotation + RGB -> LAB in grain workers) gives 6,517 examples/s from 16 workers even from
pre-decoded shards. With `data.augment_on="device"` the workers only read uint8 records and the
rotation, flip and LAB conversion run inside the compiled step (59,927 examples/s host side from
16 workers; a whole `python -m jaxcolor.train` run went at 10,177-10,236 examples/s with 4).

Prepare the shards once (`python -m jaxcolor.prepare shards --source folder:.../img_align_celeba
--out SHARDS --crop 150 --size 128`), then point `--config.data.path` at SHARDS. The batch stays
the recipe's 64; `--config.batch_size=512` is what the numbers above used.
"""

from jaxcolor.configs.reference import get_config as _reference


def get_config():
    c = _reference()
    c.data.source = "shards"
    c.data.path = "shards_150_128"  # the --out folder of `prepare shards`
    c.data.augment_on = "device"
    c.data.worker_count = 4
    c.dtype = "bfloat16"
    c.prefetch = 4
    return c
