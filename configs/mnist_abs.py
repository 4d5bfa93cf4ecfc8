"""Analysis-by-synthesis classifier (ABS / E-ABS, jaxrej.abs) on MNIST: trained on the 19,690-row
MNIST training file in ../shared/data (every row); validation and test rows from the 8k
test-set file by the registry's fixed split (1,000 validation, 2,000 test); Fashion-MNIST as
the OOD set. Settings chosen on the validation rows only.

Run from the repository root (paths resolve against the current directory):
    jaxrej train --config configs/mnist_abs.py --workdir runs/mnist_abs
    jaxrej score --workdir runs/mnist_abs --split test --ood fashion=idx:../shared/data/fashion-2k-images-idx3-ubyte.gz,../shared/data/fashion-2k-labels-idx1-ubyte.gz
"""

import importlib.util
import os

DATA = "../shared/data"


def _digits():
    """The digits config (a sibling file), loaded by path so any working directory works."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_abs.py")
    spec = importlib.util.spec_from_file_location("_digits_abs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _digits()
    config.data.dataset = (
        f"idx:{DATA}/mnist-train-19690-images-idx3-ubyte.gz,"
        f"{DATA}/mnist-train-19690-labels-idx1-ubyte.gz"
    )
    config.data.train_split = "all"
    config.data.eval_dataset = (
        f"idx:{DATA}/mnist-8k-images-idx3-ubyte.gz,{DATA}/mnist-8k-labels-idx1-ubyte.gz"
    )
    config.data.eval_split = "validation"
    config.model.hidden = (256, 512)
    config.model.encoder_hidden = (512, 256)
    config.training.n_iters = 3000
    config.training.per_class = 32
    config.training.eval_every = 1000
    config.training.eval_rows = 200
    return config
