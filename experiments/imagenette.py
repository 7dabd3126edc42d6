"""The skip autoencoder on Imagenette (10 ImageNet classes, 224x224 JPEG) in ../shared, at 64x64.

Folder source on the image-folder layout `train/WNID/*.JPEG` (9,469) and `val/WNID/*.JPEG`
(3,925); `--config.data.path=DIR` points it at another folder of the same layout. Imagenette has
no test split, so its val folder is halved: validation `val[:50%]` (1,962 photos: evaluations,
best checkpoint, early stopping, previews) and test `val[50%:]` (1,963, held out for the final
scores). The folder source orders a split folder class by class in turn, so both halves, and
the 512 photos each evaluation scores, hold all ten classes. Training drops its grayscale and
near-gray photos (colorfulness < 15, BigColor's threshold: 1,039 of 9,469, 179 of them gray,
logged at the start); the evaluation halves keep every photo.

Sized for about 20 minutes on a 2-core CPU. Measured on the shared 2-core host
(`python -m jaxcolor.train --config experiments/imagenette.py --workdir /tmp/x
--config.num_steps=100 --config.log_every=10`, jax 0.10.2, load average 6-7 from other jobs):
0.67-0.85 s a step in steady state (median 0.76; 0.53 CPU-s a step, the grain worker
included), about 25 s to start (listing, colorfulness of the training photos 6-8 s, compiling)
and 6.5 s per evaluation of 512 photos. 1,500 steps (48,000 examples, 5.7 epochs of the 8,430
kept photos) with 10 evaluations: about 20 minutes at that load; at load 8-10 the step took
1.27 s (about 33 minutes); on an idle machine expect well under 20.
"""

import os

from jaxcolor.configs.default import get_config as _default

# ../shared/data/imagenette beside the checkout, found from this file: any working directory.
IMAGENETTE = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                          "shared", "data", "imagenette"))


def get_config():
    c = _default()
    c.data.source = "folder"
    c.data.path = IMAGENETTE
    c.data.train_split = "train"
    c.data.val_split = "val[:50%]"  # a held-out half of val for validation ...
    c.data.test_split = "val[50%:]"  # ... and the other half as the test split
    c.data.min_colorfulness = 15.0
    c.data.crop = 0  # the whole 224x224 photo, resized
    c.data.image_size = 64
    c.data.worker_count = 1
    c.data.eval_examples = 512  # of the 1,962 validation photos (all classes): short evaluations
    c.model.name = "autoencoder"  # the skip autoencoder
    c.model.width = 0.5
    c.batch_size = 32
    c.num_steps = 1_500
    c.eval_every = 150
    c.checkpoint_every = 150
    return c
