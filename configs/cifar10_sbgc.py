"""The SBGC paper's CIFAR-10 setting (Zimmermann et al. 2021): VP SDE, a DDPM++-style U-Net of
~67M parameters (69M here: nf 128, ch_mult (1, 2, 2, 2), 5 residual blocks per level, attention
at 16x16), batch 128, likelihood weighting with importance-sampled time, EMA 0.9999.

Run (GPU; needs the tfds cifar10 files in data_dir; nothing is downloaded):
    jaxrej train --config configs/cifar10_sbgc.py --workdir runs/cifar10 --config.data.data_dir=/path/to/tfds
    jaxrej score --workdir runs/cifar10 --split test
Expected: not measured in this repository (the paper trains for days on GPUs and reports
~95.8% test accuracy and ~3.2 bits/dim). Here it is tested only at toy size through the same
code path (tests/test_cli_train_score.py). Differences from score_sde's DDPM++: no dropout, no
FIR resampling, inputs in [0, 1].
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
    config.data.dataset = "cifar10"  # tfds; or "npz:PATH" with uint8 images (N, 32, 32, 3)

    config.model = type(config.model)()
    config.model.name = "unet"
    config.model.nf = 128
    config.model.ch_mult = (1, 2, 2, 2)
    config.model.num_res_blocks = 5
    config.model.attn_resolutions = (16,)
    config.model.time_embedding = "sinusoidal"
    config.model.fourier_scale = 16.0

    config.training.n_iters = 1_300_000
    config.training.batch_size = 128
    config.training.lr = 2e-4
    config.training.warmup = 5000
    config.training.grad_clip = 1.0
    config.training.ema_decay = 0.9999
    config.training.weighting = "likelihood"
    config.training.importance_sampling = True
    config.training.log_every = 100
    config.training.eval_every = 10_000
    config.training.checkpoint_every = 10_000

    config.eval.batch_size = 16
    config.eval.divergence = "rademacher"
    return config
