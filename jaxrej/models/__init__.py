"""Class-conditional score networks (flax.linen) and net -> score_fn."""

from jaxrej.models.mlp import ConditionalMLP
from jaxrej.models.score import init_params, make_noise_fn, make_score_fn
from jaxrej.models.unet import ConditionalUNet

__all__ = ["ConditionalMLP", "ConditionalUNet", "init_params", "make_noise_fn", "make_score_fn"]
