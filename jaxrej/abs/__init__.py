"""Analysis by synthesis (ABS, Schott et al. 2019; E-ABS, Ju & Wagner 2020): one decoder per
class, the class score is a bound on log p(x | y) found by optimising the latent at test time.

    model = abs.ABSModel(num_classes=10, event_shape=(28, 28, 1))
    params = abs.init_params(model, key=key)
    bank = abs.latent_bank(model, params, n=1000, key=key)
    res = abs.class_bounds(model, params, bank, x, options=abs.LatentOptions())   # res.score (B, C)

Files: model (decoders, shared encoder), bound (log joint, linearised ELBO), latent (test-time
latent optimisation), training (ELBO + E-ABS terms, checkpoints, resume), scorer (pixels ->
class scores for `jaxrej score`, `jaxrej evaluate` and the attacks), run (a run in a folder: its
config into options, training, `jaxrej score`'s ABS half).
"""

from jaxrej.abs.bound import laplace_correction, linearised_elbo, log_joint
from jaxrej.abs.latent import BoundResult, LatentOptions, class_bounds, latent_bank
from jaxrej.abs.model import ABSModel, decode, decode_classes, decode_raw, encode, init_params
from jaxrej.abs.scorer import ABSScorer, load_scorer
from jaxrej.abs.training import ABSTrainOptions, train

__all__ = ["ABSModel", "ABSScorer", "ABSTrainOptions", "BoundResult", "LatentOptions",
           "class_bounds", "decode", "decode_classes", "decode_raw", "encode", "init_params", "laplace_correction",
           "latent_bank", "linearised_elbo", "load_scorer", "log_joint", "train"]  # fmt: skip
