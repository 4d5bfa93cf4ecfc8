"""jaxrej: generative classifiers with a reject option, in JAX."""

from jaxrej import classifiers, heads, metrics, reject, sharding
from jaxrej.class_likelihoods import (
    ClassLikelihoods,
    Screen,
    class_log_likelihood_result,
    class_log_likelihoods,
)
from jaxrej.divergence import exact_trace, hutchinson_trace, sample_probes
from jaxrej.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    log_likelihood,
    marginal_log_likelihood,
)
from jaxrej.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "classifiers",
    "heads",
    "metrics",
    "reject",
    "sharding",
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "exact_trace",
    "hutchinson_trace",
    "sample_probes",
    "LikelihoodResult",
    "log_likelihood",
    "class_log_likelihoods",
    "class_log_likelihood_result",
    "ClassLikelihoods",
    "Screen",
    "marginal_log_likelihood",
    "bits_per_dim",
]
