"""Score-based generative classifier on MNIST (28x28, 256 levels), CPU-sized.

Run (the local MNIST files of ../shared/data; nothing is downloaded):
    jaxrej train --config configs/mnist_sbgc.py --workdir runs/mnist_sbgc
    jaxrej score --workdir runs/mnist_sbgc --split test --ood fashion=idx:../shared/data/fashion-2k-images-idx3-ubyte.gz
    jaxrej score --workdir runs/mnist_sbgc --split test --scorer ode --limit 500
Trains on the 19,690 rows of the MNIST training-set file; validation and test rows come from the
8,000-row test-set file (data.eval_dataset). The model section carries both architectures
(model.mlp, model.unet); model.name picks one (--config.model.name=unet). The GPU-sized U-Net is
configs/mnist_sbgc_large.py.
Recipe (each part chosen on validation rows: benchmarks/results/mnist_sbgc_curve.md): the MLP is F
of the preconditioned noise prediction (models/score.py), likelihood weighting with
importance-sampled t from t = 1e-7, no label below t = 0.03, the closed-form gates of the pixel
values where MNIST piles up (level 0 and levels 251-255; model.mlp.atoms), the cross-entropy of the
model's own class bounds beside the DSM loss (training.class_ce_weight), two 3x3 convolutions of 8
channels refining the MLP's outputs (model.mlp.local: 1.81 -> 1.44 bits/dim, 90.0 -> 92.0% at 3,000
steps), the denoising bound (ELBO) as the default scorer, with the label's window closed above
t = 0.1 (eval.elbo_label_max); 8,000 steps (set by the training-time budget, not chosen on
validation rows).
Measured without the local refinement, 14,000 steps (benchmarks/results/mnist_sbgc_run_s10.md, 2
cores shared at times with other jobs): 65 min of training; on the 2,000 test rows the ELBO
classifies 96.0% at 1.72 bits/dim (per-pixel histogram baseline 1.67) and rejects Fashion-MNIST at
AUROC 0.999, 14.5 min for the 2,000 rows. With it (benchmarks/results/mnist_sbgc_run.md, 8,000 steps in
61 min on shared cores): 94.8% at 1.40 bits/dim, Fashion AUROC 0.999, 8-10 min for the 2,000
rows; the same model with the label's window closed at t = 0.1 (32 draws): 96.75% at 1.40
bits/dim, Fashion AUROC 0.9993, 15.4 min for the 2,000 rows. Target accuracy >= 97%: not met by
this stage alone; configs/mnist_sbgc_window.py trains the window for 2,000 more steps
(`--init-from` this run): 97.05% of the test rows at 1.34 bits/dim, AUROC 0.9995
(benchmarks/results/mnist_sbgc_run_window.md).
"""

import importlib.util
import os

import ml_collections

DATA = "../shared/data/"
# the 19,690 rows of the MNIST training set: all of them train
MNIST_TRAIN = (
    f"idx:{DATA}mnist-train-19690-images-idx3-ubyte.gz,{DATA}mnist-train-19690-labels-idx1-ubyte.gz"
)
# the 8,000 rows of the MNIST test set: the registry's fixed split gives 1,000 validation rows
# (every setting and reject threshold is chosen on them) and 2,000 test rows
MNIST_TEST = f"idx:{DATA}mnist-8k-images-idx3-ubyte.gz,{DATA}mnist-8k-labels-idx1-ubyte.gz"


TOP_WEIGHTS = (0.27, 1.40, 3.27, 1.72, 0.67)


def get_config():
    spec = importlib.util.spec_from_file_location(
        "_digits_sbgc", os.path.join(os.path.dirname(__file__), "digits_sbgc.py")
    )
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.data.dataset = MNIST_TRAIN
    config.data.train_split = "all"
    config.data.eval_dataset = MNIST_TEST
    config.data.eval_split = "validation"

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.mlp = ml_collections.ConfigDict()
    config.model.mlp.hidden = 512
    config.model.mlp.n_blocks = 3
    config.model.mlp.emb_dim = 128
    config.model.mlp.time_embedding = "log_fourier"
    config.model.mlp.fourier_scale = 16.0
    config.model.mlp.conditioning = "film"
    # the MLP is F of the preconditioned noise prediction (jaxrej.models.score.make_score_fn), with
    # the mean and std of the training rows' pixels in [0, 1]
    config.model.mlp.precondition = True
    config.model.mlp.data_mean = 0.1307
    config.model.mlp.data_std = 0.3081
    # no label below t = 0.03: the class differences come from the coarse scales only (chosen on
    # validation rows: benchmarks/results/mnist_sbgc_curve.md, per time interval)
    config.model.mlp.label_cutoff = 0.03
    # the closed-form gates of the pixel values where MNIST piles up (models/score.py: atoms): the
    # bin of level 0 (80.8% of the training pixels) and the levels 251-255 as one group weighted by
    # their counts (0.27, 1.40, 3.27, 1.72, 0.67% of the pixels); () switches them off
    config.model.mlp.atoms = (
        ((0.0, 1.0 / 256, 1.0),),
        tuple(
            (k / 256, (k + 1) / 256, w) for k, w in zip(range(251, 256), TOP_WEIGHTS, strict=True)
        ),
    )
    config.model.mlp.local = 8  # channels of a 3x3 refinement of the output (models/local.py)
    config.model.unet = ml_collections.ConfigDict()
    config.model.unet.nf = 16
    config.model.unet.ch_mult = (1, 2)
    config.model.unet.num_res_blocks = 1
    config.model.unet.attn_resolutions = ()
    config.model.unet.time_embedding = "sinusoidal"
    config.model.unet.fourier_scale = 16.0
    config.model.unet.conditioning = "film"

    config.training.n_iters = 8_000
    # from t = 1e-7: at 1e-5 the kernel's std (1e-3, a quarter of a bin) blurs the bins' edges,
    # which costs even the exact denoiser of the per-pixel histogram 0.55 bits/dim of its bound
    # (0.07 at 1e-7; tests/test_elbo.py)
    config.training.eps = 1e-7
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.training.warmup = 500
    config.training.ema_decay = 0.999
    config.training.weighting = "likelihood"
    config.training.importance_sampling = True
    # the cross-entropy of the model's own class bounds on 32 rows of each batch
    # (training.losses.class_ce_loss): the bound learns to rank the classes. Weight 3 on 32 rows
    # against 1 on 16: 90.0% against 88.5% on 200 validation rows at 3,000 steps, 1.81 against
    # 1.75 bits/dim (benchmarks/results/mnist_sbgc_curve.md: atoms2_ce3_e7, atoms2_ce1_e7). Weight
    # 10 on the full recipe: no accuracy gained on 1,000 validation rows at 4,000 / 6,000 steps
    # (94.6 / 95.3% against 94.7 / 94.9%), 0.5 bits/dim lost (results/mnist_sbgc_run_ce10)
    config.training.class_ce_weight = 3.0
    config.training.class_ce_rows = 32
    config.training.class_ce_t_min = 0.01
    config.training.eval_every = 2000
    config.training.checkpoint_every = 2000

    config.eval.batch_size = 50
    config.eval.eps = 1e-7
    config.eval.divergence = "rademacher"
    # the denoising bound, not the ODE: on validation rows the ODE's class differences disagreed
    # with the bound's (10 rows: ODE 50-60%, bound 100%), the bound is ~20x cheaper
    config.eval.scorer = "elbo"
    # the label acts on t in [0.03, 0.1] alone, the class-average score above (jaxrej.elbo's
    # label_max): the coarse scales' class differences are the noisy, less accurate ones. On the
    # 1,000 validation rows at 8,000 steps (runs/mnist_sbgc_s11, 32 draws): 97.1 / 97.0 / 96.9% for
    # a top of 0.1 / 0.2 / 0.3, against 95.5% without a window (64 draws); bits/dim 1.40 either way
    # (benchmarks/results/label_window.md, mnist_sbgc_run.md)
    config.eval.elbo_n_times = 32
    config.eval.elbo_label_max = 0.1
    return config
