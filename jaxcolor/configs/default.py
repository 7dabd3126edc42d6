"""The default configuration: every field the framework reads, with the zero-setup values.

`python -m jaxcolor.train` with no flags uses this: the skip autoencoder at half width on random
crops of the photographs shipped with scikit-image, sized to finish in minutes on a laptop CPU.
Experiment files in `experiments/` import `get_config` from here and override a few fields.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # A non-finite loss or gradient stops the run (False), or that update is skipped - the state
    # kept as it was - and counted in metrics.jsonl as `skipped_updates` (True).
    c.skip_nonfinite = False

    c.data = ml_collections.ConfigDict()
    c.data.source = "sample"  # sample | folder | shards | tfds
    # folder: the image directory (searched recursively); shards: `prepare shards --out` directory
    c.data.path = ""
    c.data.name = ""  # tfds source: the TFDS dataset name, e.g. celeb_a
    c.data.data_dir = ""  # tfds source: TFDS data_dir holding it prepared in ArrayRecord format
    # TFDS-style split strings: a name (train, validation or val, test), a slice, or both
    # (`val[:50%]`); in a folder with train/, val/ (or validation/), test/ subfolders a name reads
    # its subfolder (docs/data.md)
    c.data.train_split = "train"
    c.data.val_split = "validation"
    c.data.test_split = "test"
    # folder source: drop training photos whose Hasler-Suesstrunk colorfulness (0-255 RGB) is
    # below this (grayscale ones have 0; BigColor uses 15), counted in the log; evaluation splits
    # are never filtered. 0 = off
    c.data.min_colorfulness = 0.0
    c.data.crop = 0  # center crop-or-pad side before resizing; 0 = largest centered square
    c.data.image_size = 64
    c.data.rotate_degrees = 15.0
    c.data.hflip = True
    # Where training examples are rotated, flipped and turned into LAB: "host" (the grain workers,
    # per example) or "device" (inside the compiled train step, on the accelerator: the host only
    # decodes, crops and draws the same random numbers, and sends uint8 RGB). Evaluation is always
    # on the host. Rotation agrees with the host's to one uint8 level on <0.2% of values.
    c.data.augment_on = "host"  # host | device
    c.data.worker_count = 0  # grain worker processes; 0 = in the main process
    c.data.worker_buffer_size = 2
    c.data.eval_threads = 2
    c.data.eval_examples = 0  # cap on evaluated examples per split; 0 = the whole split
    c.data.sample_train_examples = 1024  # crops per epoch of the sample source
    c.data.sample_eval_examples = 128
    c.data.sample_eval_seed = 1234

    c.model = ml_collections.ConfigDict()
    c.model.name = "autoencoder"
    c.model.width = 0.5  # autoencoder: multiplier of every hidden channel count
    c.model.ops = "auto"  # autoencoder: phase | im2col | plain | auto (the backend's fastest)
    c.model.weights = "none"  # ResNet50 colorizers: Keras ImageNet .h5, a port dir, or none
    c.model.freeze = "none"  # ResNet50 colorizers: none | stem | encoder | conv1,conv2,...
    c.model.input_mode = "gray_rgb"  # ResNet50 colorizers: gray_rgb | l_repeat (reference)

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "reference"  # reference | l1 | mse | huber | classification
    # Weighted terms, used instead of `name` when any weight is > 0 (jaxcolor/losses.py), e.g.
    # --config.loss.terms.classification=1 --config.loss.terms.l1=10 (CT2's recipe). Regression
    # terms train the two tanh channels; classification the Q logits (both heads when both are
    # set); colorfulness and perceptual the decoded ab; adversarial is the discriminator's.
    c.loss.terms = ml_collections.ConfigDict(
        {t: 0.0 for t in ("reference", "l1", "mse", "huber", "classification", "colorfulness",
                          "perceptual", "adversarial")})
    c.loss.decode = "regression"  # with both heads: the one inference decodes
    c.loss.target_saturation = 1.0  # training targets' ab x this, kept in gamut (DDColor: 1.2)
    # perceptual term: Keras' vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 and its taps
    c.loss.vgg16_weights = ""
    c.loss.perceptual_layers = "relu1_2,relu2_2,relu3_3,relu4_3,relu5_3"
    # classification over ab bins (Zhang et al. 2016; see jaxcolor/ab_bins.py, jaxcolor/ab_prior.py)
    c.loss.grid = 10.0  # ab bin size; the bins are those of this grid that sRGB colors reach
    c.loss.bins = ""  # or a .npy of (Q, 2) bin centers in LAB units (e.g. Zhang et al.'s 313)
    c.loss.rebalance_lambda = 0.5  # w ~ ((1 - lambda) p_smoothed + lambda / Q)^-1, E_p[w] = 1
    c.loss.sigma = 5.0  # ab units: Gaussian of the soft encoding and of the prior smoothing
    c.loss.neighbours = 5  # nearest bins that share a pixel's soft-encoded target
    c.loss.temperature = 0.38  # annealed-mean decoding: 0 = the mode, 1 = the mean
    c.loss.output_stride = 1  # > 1: one prediction per stride x stride block, upsampled
    c.loss.prior = ""  # ab prior .npz; "" = WORKDIR/data/ab_prior.npz, computed if missing

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"  # constant | cosine
    c.optimizer.warmup_steps = 20
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip = 0.0

    # A linear probe trained alongside the colorizer (jaxcolor/companions.py): maps predicted ab
    # to true ab per pixel; its `probe_loss` is the error left after the best affine recoloring.
    # It only watches: the colorizer trains exactly as without it.
    c.probe = ml_collections.ConfigDict()
    c.probe.enabled = False
    c.probe.learning_rate = 1e-2

    # The discriminator of the adversarial term (loss.terms.adversarial > 0): a conditional
    # PatchGAN on (L, ab) (jaxcolor/models/discriminator.py) with its own optimizer. NoGAN
    # (DeOldify): `generator_steps` of the colorizer alone, then `discriminator_steps` of the
    # discriminator alone, then both; 0 and 0 = both from the first step.
    c.discriminator = ml_collections.ConfigDict()
    c.discriminator.width = 32
    c.discriminator.layers = 3
    c.discriminator.spectral_norm = True
    c.discriminator.loss = "hinge"  # hinge | lsgan
    c.discriminator.optimizer = "adam"  # adam | sgd
    c.discriminator.learning_rate = 2e-4
    c.discriminator.b1 = 0.5
    c.discriminator.b2 = 0.999
    c.discriminator.generator_steps = 0
    c.discriminator.discriminator_steps = 0

    c.batch_size = 32  # global, over all devices and processes
    c.num_steps = 200
    c.dtype = "float32"  # compute dtype of activations; parameters stay float32
    c.parallel = "jit"  # jit | pmap

    c.log_every = 20
    c.eval_every = 50
    c.checkpoint_every = 100
    c.keep = 2  # last checkpoints kept, besides the best one
    c.patience = 0  # early stopping after this many evaluations without improvement; 0 = off
    c.num_preview_images = 8
    c.prefetch = 2  # batches moved to the devices ahead of the step
    return c
