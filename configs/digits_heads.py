"""Reject heads on the embedded digits (8x8, 17 levels): MLP base classifier, SDIM-logit, GMMs.

Run:
    jaxrej heads --config configs/digits_heads.py --workdir runs/digits_heads
Expected (seed 0, idle 2-core CPU, ~15 s): base accuracy 97.2%, SDIM-logit accuracy 97.2%
(within 1 point for seeds 0-2), acc-left at the 1st percentile 98.5% at 5.0% rejection (above
the base accuracy); see the README section "Reject heads (SDIM-logit, GMM) and the reject
module" for all numbers.
OOD sets are made from the test split: "inverted" (16 - pixel) and "noise" (uniform levels).
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "digits"
    config.data.data_dir = ""
    config.data.val_fraction = 0.15  # of train: temperature scaling and global thresholds

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"  # "mlp" | "cnn" | "resnet"
    config.model.kwargs = ml_collections.ConfigDict({"hidden": (256, 128)})

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 60
    config.train.batch_size = 64
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 0.0
    config.train.lr_schedule = "constant"  # | "cosine" (to 0 over all steps)
    config.train.augment_shift = 0  # random translation of at most this many pixels (CNNs)

    config.sdim = ml_collections.ConfigDict()  # defaults of the SDIM-logit paper's code
    config.sdim.epochs = 100
    config.sdim.batch_size = 100
    config.sdim.learning_rate = 1e-3
    config.sdim.alpha = 0.6
    config.sdim.beta = 0.2
    config.sdim.gamma = 0.2
    config.sdim.margin = 10.0
    config.sdim.rep_size = 0  # 0 = number of classes
    config.sdim.hidden = 64
    config.sdim.mi_units = 64

    config.gmm = ml_collections.ConfigDict()
    config.gmm.n_components_per_class = 1  # class-conditional head
    config.gmm.n_components = 10  # class-agnostic head
    config.gmm.covariance_type = "full"
    config.gmm.reg_covar = 1e-3
    config.gmm.tol = 1e-3
    config.gmm.max_iter = 100
    config.gmm.n_init = 2

    config.reject = ml_collections.ConfigDict()
    config.reject.percentiles = (1.0, 2.0)
    config.reject.tpr = 0.95

    config.ood = ml_collections.ConfigDict()
    config.ood.datasets = ()  # digits: built-in "inverted" and "noise"
    return config
