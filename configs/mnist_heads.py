"""Reject heads on MNIST (28x28, the 8,000 MNIST images in ../shared/data): small CNN, SDIM-logit,
GMMs; Fashion-MNIST (2,000 images) as the OOD set. CPU-sized.

Run from the repository root (paths resolve against the current directory):
    jaxrej heads --config configs/mnist_heads.py --workdir runs/mnist_heads
Data: `idx:` files split by the registry's fixed rule (jaxrej.data.registry): 5,000 train rows fit
the CNN and the heads, 1,000 validation rows set the temperature and the global thresholds,
2,000 test rows are only reported on; Fashion-MNIST is used whole (split "all"). With the
tfds datasets prepared instead: --config.data.dataset=mnist --ood fashion=fashion_mnist.
Measured (seed 0; this config; the same numbers in both runs): on the 2-core CPU at load
average 2-3, 3 min 29 s wall (287 s user CPU), of which the base classifier's 15 epochs with
their progress bar took 2 min 45 s; under load average 16-17 from other jobs, 27.7 min wall for
the same 291 s of CPU.
    jaxrej heads --config configs/mnist_heads.py --workdir runs/mnist_heads
| base CNN acc | SDIM-logit acc | acc-left @1% | rej. @1% | acc-left @2% | rej. @2% |
|---|---|---|---|---|---|
| 96.55 | 95.30 | 96.67 | 2.40 | 96.94 | 3.55 |
| scorer | mistake AUROC | Fashion OOD AUROC | acc-left / rej. at the 95%-TPR global threshold |
|---|---|---|---|
| sdim_logit | 0.900 | 0.859 | 97.2 / 5.5 |
| msp | 0.944 | 0.640 | 98.6 / 5.7 |
| msp_temperature | 0.944 | 0.640 | 98.6 / 5.8 |
| mahalanobis | 0.856 | 0.962 | 97.6 / 6.1 |
| gmm_cc | 0.932 | 0.975 | 98.3 / 5.5 |
| gmm | 0.899 | 0.976 | 97.9 / 6.2 |
Against the targets: Fashion AUROC >= 0.95 for both GMM heads (0.975, 0.976) and acc-left above
base at the 1st percentile (96.67 > 96.55) are met; base >= 98.5% and SDIM-logit within 1 point
are NOT (96.55; 1.25 points below). What limits it: the base CNN, sized while other jobs held the
machine at load 17 (XLA's CPU convolutions: ~0.1 s CPU per batch of 32 here, a (32, 64)-channel
CNN ~4x that); its training loss was still falling (0.062 after 15 epochs of 5,000 images). An
idle machine leaves ~4x this compute inside 15 minutes: more epochs or channels (16, 32) are the
next settings to measure.
"""

import importlib.util
import os

DATA = "../shared/data"


def _digits():
    """The digits config (a sibling file), loaded by path so any working directory works."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_heads.py")
    spec = importlib.util.spec_from_file_location("_digits_heads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    config = _digits()
    config.data.dataset = (
        f"idx:{DATA}/mnist-8k-images-idx3-ubyte.gz,{DATA}/mnist-8k-labels-idx1-ubyte.gz"
    )
    config.data.val_fraction = 0.1  # used only for datasets without a fixed validation split
    config.model.name = "cnn"
    # CPU-sized: XLA's CPU convolutions make (32, 64) channels ~4x the cost of this one
    config.model.kwargs = {"channels": (8, 16, 32), "dense": 64}
    config.train.epochs = 15
    config.train.batch_size = 32
    config.train.learning_rate = 2e-3
    config.sdim.epochs = 20
    config.gmm.n_components_per_class = 2
    config.gmm.n_components = 20
    config.ood.datasets = (f"fashion=idx:{DATA}/fashion-2k-images-idx3-ubyte.gz",)
    return config
