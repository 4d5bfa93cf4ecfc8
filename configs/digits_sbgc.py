"""Score-based generative classifier on the embedded digits (8x8, 17 levels), CPU-sized.

Run:
    jaxrej train --config configs/digits_sbgc.py --workdir runs/digits
    jaxrej score --workdir runs/digits --split test      # writes score_test.json / .npz
Expected (README "Training and scoring a score-based generative classifier"): training in
2-10 min on a 2-core CPU (132 s in session 4); test accuracy 98.3% (354/360) from the argmax of
exact-divergence class log-likelihoods, 2.50 test bits/dim (scoring: 60 s, one compilation).
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # a dataset string (jaxrej.data.registry): "digits", a tfds name, "idx:IMAGES[,LABELS]" or
    # "npz:PATH"; local files split into train / validation / test by the registry's fixed rule
    config.data.dataset = "digits"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.eval_dataset = ""  # the eval rows' dataset string ("" = data.dataset)
    # held out of training (per class, seed = config.seed), as configs/digits_heads.py does: the
    # validation rows every scorer's reject thresholds come from (jaxrej evaluate)
    config.data.val_fraction = 0.15
    config.data.data_dir = ""  # tfds data_dir ("" = tfds default)

    config.sde = ml_collections.ConfigDict()
    config.sde.name = "vpsde"
    config.sde.beta_min = 0.1
    config.sde.beta_max = 20.0

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.hidden = 256
    config.model.n_blocks = 3
    config.model.emb_dim = 128
    config.model.time_embedding = "fourier"
    config.model.fourier_scale = 16.0
    config.model.label_cutoff = 0.0  # no label below this time (0: off; configs/mnist_sbgc.py)

    config.training = ml_collections.ConfigDict()
    config.training.n_iters = 15_000
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.training.warmup = 500
    config.training.grad_clip = 1.0
    config.training.ema_decay = 0.999
    config.training.weight_decay = 0.0
    config.training.augment_shift = 0  # random translations of training rows (pixels)
    config.training.label_gap_rows = 256  # validation rows of the label-gap diagnostic
    # training.class_ce_weight > 0 adds the cross-entropy of the model's own class bounds
    # (jaxrej.training.losses.class_ce_loss) on class_ce_rows rows of each batch
    config.training.class_ce_weight = 0.0
    config.training.class_ce_rows = 16
    config.training.class_ce_t_min = 0.01
    config.training.class_ce_t_max = 1.0  # < 1: the draws in the scorer's label window only
    config.training.weighting = "plain"
    config.training.importance_sampling = False
    config.training.reduce = "mean"
    config.training.eps = 1e-5
    config.training.log_every = 100
    config.training.eval_every = 5000
    config.training.checkpoint_every = 5000
    config.training.max_to_keep = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 72  # 5 batches of the 360 test digits
    config.eval.divergence = "exact"
    config.eval.n_probes = 1
    # the library's defaults (jaxrej.FlowSolve, jaxrej.scoring.DEFAULT_SCREEN): value-grade
    # tolerances for the accurate solve, TopK screens for the rest (benchmarks/likelihood_speed.py)
    config.eval.rtol = 1e-5
    config.eval.atol = 1e-5
    config.eval.eps = 1e-5
    config.eval.dequantize = "uniform"
    config.eval.chunk_size = 0  # pairs per vmapped solve (0: all pairs of a batch at once)
    config.eval.screen = "default"  # "none": every class gets the accurate solve
    # the default scorer of `jaxrej score` (--scorer overrides): "ode" (log p(x | y) by the
    # probability-flow ODE) or "elbo" (the denoising lower bound, jaxrej.class_elbos)
    config.eval.scorer = "ode"
    # `jaxrej score --scorer elbo`: the denoising bound (jaxrej.class_elbos) with this many (t, z)
    # draws per example shared by its classes, their time sampling, evaluations per vmapped call,
    # and the top of the label's window: above it the bound is that of the class-average score
    # (jaxrej.elbo's label_max; 0: none)
    config.eval.elbo_n_times = 64
    config.eval.elbo_time_sampling = "stratified"
    config.eval.elbo_chunk_size = 4096
    config.eval.elbo_label_max = 0.0
    return config
