"""Reject heads on MNIST (tfds, via jaxrej.data.registry): small CNN, SDIM-logit, GMMs.

Run (needs MNIST and Fashion-MNIST prepared in the tfds data_dir; nothing is downloaded):
    jaxrej heads --config configs/mnist_heads.py --workdir runs/mnist_heads
Expected: not measured yet in this repository (no tfds data on the CPU machine). The
SDIM-logit paper reports no accuracy loss against the base classifier and acc-left above it
at the 1st percentile; OOD set here: Fashion-MNIST test.
"""

import importlib.util
import os


def _digits():
    """The digits config (a sibling file), loaded by path so any working directory works."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_heads.py")
    spec = importlib.util.spec_from_file_location("_digits_heads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _digits()
    config.data.dataset = "mnist"
    config.data.val_fraction = 0.1
    config.model.name = "cnn"
    config.model.kwargs = {"channels": (32, 64), "dense": 128}
    config.train.epochs = 10
    config.train.batch_size = 128
    config.sdim.epochs = 20
    config.gmm.n_components_per_class = 2
    config.gmm.n_components = 20
    config.ood.datasets = ("fashion_mnist",)
    return config
