"""Study: the skip autoencoder against the reference's ResNet50 transfer colorizer, 3 seeds each,
on the 10,000 shared CelebA photos (`celeba10k.py`'s data recipe: crop 75 -> 64x64).

    python -m jaxcolor.study experiments/study_seed_models.py --workdir studies/seed_models

Sized for a 2-core CPU (the whole study in about 30 minutes): 200 steps of batch 16 per
member, evaluated on the first 256 photos of the test split. That is far from convergence - it
measures the machinery and the seed-to-seed spread at this budget, not the models' final quality.
No ImageNet weights are available offline, so the ResNet50 colorizer starts from random weights
(`model.weights=none`, nothing frozen); raise `num_steps` and point `model.weights` at Keras'
notop .h5 for the real comparison.
"""

SHORT = {
    "num_steps": 200,
    "batch_size": 16,
    "optimizer.warmup_steps": 0,
    "eval_every": 100,
    "checkpoint_every": 50,
    "log_every": 20,
    "patience": 0,
    "data.eval_examples": 128,  # training's validation pass
    "data.worker_count": 0,
    "num_preview_images": 4,
}


def get_study():
    return {
        "cells": {
            "autoencoder_w0.5": ("celeba10k.py", {"model.width": 0.5}),
            # seed_resnet50.py's model on celeba10k.py's data: only the model differs
            "resnet50_seed": ("celeba10k.py", {"model.name": "resnet50_seed",
                                               "model.weights": "none", "model.freeze": "none"}),
        },
        "seeds": [0, 1, 2],
        "overrides": SHORT,
        "split": "test",
        "eval_overrides": {"data.eval_examples": 256},
        "metrics": ["ab_mae", "ab_rmse", "psnr", "ssim", "auc"],
    }
