"""Study: which loss recipe gives colors that are vivid and faithful at once, on natural photos
(Imagenette, `imagenette.py`'s data: train on `train`, score on the held-out half of `val`).

    python -m jaxcolor.study experiments/study_vivid_recipes.py --workdir studies/vivid_recipes

The screening of issue 17: one seed per recipe, equal steps and equal examples (the same batch
size and number of steps for every cell), at a CPU-sized budget (64x64, `SCREEN_STEPS` steps of
batch 32: about 5 minutes a recipe on an idle 2-core CPU). Raise `seeds` to [0, 1, 2] and keep
the cells of L1, classification and the two best for the confirmation runs.

Recipes (weights as in the papers they come from, scaled to our losses):
  l1                    L1 regression, the faithful baseline
  classification        Zhang et al.'s class-rebalanced classification over ab bins
  classification_l1     CT2: cross-entropy + 10 x L1, both heads, the regression head decoded
  l1_colorfulness       L1 + DDColor's colorfulness term (0.5 x |CF - CF_true| / 100)
  l1_gan                L1 + adversarial (PatchGAN, hinge, 0.01), DeOldify's NoGAN schedule
  classification_l1_gan CT2's pair + the same adversarial term
  l1_colorfulness_boost l1_colorfulness with DDColor's saturation boost of the target (x 1.2)
Scored on 1,024 photos of the test half: PSNR, SSIM, ab MAE, colorfulness ratio, delta-CF and the
wrong-hue share (`jaxcolor.metrics`).
"""

SCREEN_STEPS = 600
SCREEN = {
    "num_steps": SCREEN_STEPS,
    "batch_size": 32,
    "optimizer.warmup_steps": 20,
    "eval_every": 200,
    "checkpoint_every": 200,
    "log_every": 50,
    "patience": 0,
    "data.eval_examples": 256,  # training's validation pass
    "num_preview_images": 4,
}
NOGAN = {"discriminator.generator_steps": SCREEN_STEPS // 3,
         "discriminator.discriminator_steps": SCREEN_STEPS // 10}


def terms(**weights):
    return {f"loss.terms.{k}": v for k, v in weights.items()}


def get_study():
    cell = "imagenette.py"
    return {
        "cells": {
            "l1": (cell, terms(l1=1.0)),
            "classification": (cell, terms(classification=1.0)),
            "classification_l1": (cell, terms(classification=1.0, l1=10.0)),
            "l1_colorfulness": (cell, terms(l1=1.0, colorfulness=0.5)),
            "l1_gan": (cell, {**terms(l1=1.0, adversarial=0.01), **NOGAN}),
            "classification_l1_gan": (cell, {**terms(classification=1.0, l1=10.0,
                                                     adversarial=0.01), **NOGAN}),
            "l1_colorfulness_boost": (cell, {**terms(l1=1.0, colorfulness=0.5),
                                             "loss.target_saturation": 1.2}),
        },
        "seeds": [0],
        "overrides": SCREEN,
        "split": "test",
        "eval_overrides": {"data.eval_examples": 1024},
        "metrics": ["psnr", "ssim", "ab_mae", "colorfulness_ratio", "colorfulness_delta",
                    "wrong_hue"],
    }
