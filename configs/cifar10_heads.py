"""Reject heads on CIFAR-10 (tfds, via jaxrej.data.registry): small ResNet, SDIM-logit, GMMs.

Run (needs CIFAR-10 and SVHN prepared in the tfds data_dir; nothing is downloaded; a GPU is
advisable for the ResNet):
    jaxrej heads --config configs/cifar10_heads.py --workdir runs/cifar10_heads
Expected: not measured yet in this repository (no tfds data on the CPU machine). OOD set:
SVHN (cropped digits) test.
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
    config.data.dataset = "cifar10"
    config.data.val_fraction = 0.1
    config.model.name = "resnet"
    config.model.kwargs = {"channels": (32, 64, 128), "blocks": 2}
    config.train.epochs = 30
    config.train.batch_size = 128
    config.train.weight_decay = 5e-4
    config.sdim.epochs = 20
    config.gmm.n_components_per_class = 2
    config.gmm.n_components = 20
    config.ood.datasets = ("svhn_cropped",)
    return config
