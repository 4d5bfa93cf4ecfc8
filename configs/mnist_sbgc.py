"""Score-based generative classifier on MNIST (28x28, 256 levels) with a small U-Net.

Run (needs the tfds mnist files in data_dir; nothing is downloaded):
    jaxrej train --config configs/mnist_sbgc.py --workdir runs/mnist --config.data.data_dir=/path/to/tfds
    jaxrej score --workdir runs/mnist --split test
Expected: not measured in this repository (meant for a GPU; ~1 h of training on one).
Toy-size runs of the same code path are tested (tests/test_cli_train_score.py).
"""

import importlib.util
import os


def get_config():
    spec = importlib.util.spec_from_file_location(
        "_digits_sbgc", os.path.join(os.path.dirname(__file__), "digits_sbgc.py")
    )
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    config = base.get_config()
    config.data.dataset = "mnist"

    config.model = type(config.model)()
    config.model.name = "unet"
    config.model.nf = 32
    config.model.ch_mult = (1, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (7,)
    config.model.time_embedding = "sinusoidal"
    config.model.fourier_scale = 16.0

    config.training.n_iters = 100_000
    config.training.batch_size = 128
    config.training.lr = 2e-4
    config.training.warmup = 5000
    config.training.ema_decay = 0.9999
    config.training.weighting = "likelihood"
    config.training.importance_sampling = True
    config.training.eval_every = 10_000
    config.training.checkpoint_every = 5000

    config.eval.batch_size = 64
    config.eval.divergence = "rademacher"
    return config
