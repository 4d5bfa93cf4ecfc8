"""Reject heads on a base classifier's outputs: SDIM-logit, GMM, and baselines (MSP, T-scaling, Mahalanobis)."""

from jaxrej.heads import baselines, gmm, sdim_logit

__all__ = ["baselines", "gmm", "sdim_logit"]
