"""Score-based generative classifier on MNIST (28x28, 256 levels) with a U-Net: the GPU config.

Run (GPU; MNIST as one dataset string, nothing is downloaded):
    jaxrej train --config configs/mnist_sbgc_large.py --workdir runs/mnist_large
    jaxrej score --workdir runs/mnist_large --split test
On more than one device the batch is sharded over all of them (training.data_parallel).
Expected: not measured in this repository (no GPU was lent). Sizing: 6.87M parameters,
2.0 GFLOP per example forward (XLA cost analysis), so 100k steps at batch 128 are ~8e16 FLOP with
the backward pass: about 1 h on one GPU sustaining ~25 TFLOP/s. The CPU-sized recipe and its
measured label-gap curve: configs/mnist_sbgc.py, benchmarks/results/mnist_sbgc_curve.md.
Switch the architecture from the command line: --config.model.name=mlp uses model.mlp.
"""

import importlib.util
import os


def get_config():
    spec = importlib.util.spec_from_file_location(
        "_mnist_sbgc", os.path.join(os.path.dirname(__file__), "mnist_sbgc.py")
    )
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()

    config.model.name = "unet"
    u = config.model.unet
    u.nf = 64
    u.ch_mult = (1, 2, 2)
    u.num_res_blocks = 2
    u.attn_resolutions = (7,)

    config.training.n_iters = 100_000
    config.training.batch_size = 128
    config.training.lr = 2e-4
    config.training.warmup = 5000
    config.training.ema_decay = 0.9999
    config.training.weighting = "likelihood"
    config.training.importance_sampling = True
    # the pure generative objective (the CPU config adds the class cross-entropy: unmeasured here)
    config.training.class_ce_weight = 0.0
    config.training.eval_every = 10_000
    config.training.checkpoint_every = 5000

    config.eval.batch_size = 64
    config.eval.divergence = "rademacher"
    config.eval.scorer = "ode"  # the SBGC paper's scorer (the CPU config's ELBO: --scorer elbo)
    return config
