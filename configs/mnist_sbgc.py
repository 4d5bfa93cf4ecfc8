"""Score-based generative classifier on MNIST (28x28, 256 levels), CPU-sized.

Run (the local MNIST files of ../shared/data; nothing is downloaded):
    jaxrej train --config configs/mnist_sbgc.py --workdir runs/mnist
    jaxrej score --workdir runs/mnist --split test
    jaxrej train --config configs/mnist_sbgc.py --workdir runs/mnist_unet --config.model.name=unet
The model section carries both architectures (model.mlp, model.unet); model.name picks one, so
--config.model.name=unet --config.model.unet.nf=16 switches from the command line. The GPU-sized
U-Net is configs/mnist_sbgc_large.py.
Recipe (benchmarks/results/mnist_sbgc_curve.md, chosen on validation rows): FiLM conditioning in
every block, likelihood weighting with importance-sampled t, EMA decay 0.995. Measured on 2 CPU
cores shared with other jobs (load 15-18): after 3,500 steps (7.3 min of training) the label is
worth 23.1 nats of the denoising bound (mean over 200 validation rows; 0 = label ignored; the
digits recipe, label added, plain weighting, EMA 0.999, stalled near 8 nats), but the
ODE scores of 20 test rows give only 25% accuracy and 9.2 bits/dim (8.7 s per image). The targets
(>= 97%, <= 2.0 bits/dim) need far more training than these cores give: use
configs/mnist_sbgc_large.py on a GPU.
"""

import importlib.util
import os

import ml_collections

MNIST = (
    "idx:../shared/data/mnist-8k-images-idx3-ubyte.gz,../shared/data/mnist-8k-labels-idx1-ubyte.gz"
)


def get_config():
    spec = importlib.util.spec_from_file_location(
        "_digits_sbgc", os.path.join(os.path.dirname(__file__), "digits_sbgc.py")
    )
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.data.dataset = MNIST
    config.data.eval_split = "validation"

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.mlp = ml_collections.ConfigDict()
    config.model.mlp.hidden = 512
    config.model.mlp.n_blocks = 3
    config.model.mlp.emb_dim = 128
    config.model.mlp.time_embedding = "fourier"
    config.model.mlp.fourier_scale = 16.0
    config.model.mlp.conditioning = "film"
    config.model.unet = ml_collections.ConfigDict()
    config.model.unet.nf = 16
    config.model.unet.ch_mult = (1, 2)
    config.model.unet.num_res_blocks = 1
    config.model.unet.attn_resolutions = ()
    config.model.unet.time_embedding = "sinusoidal"
    config.model.unet.fourier_scale = 16.0
    config.model.unet.conditioning = "film"

    config.training.n_iters = 4000
    config.training.batch_size = 128
    config.training.lr = 1e-3
    config.training.warmup = 500
    config.training.ema_decay = 0.995  # 0.999 lags far behind a run of a few thousand steps
    config.training.weighting = "likelihood"
    config.training.importance_sampling = True
    config.training.eval_every = 1000
    config.training.checkpoint_every = 1000

    config.eval.batch_size = 50
    config.eval.divergence = "rademacher"
    return config
