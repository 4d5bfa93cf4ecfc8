"""jaxrej: generative classifiers with a reject option, in JAX."""

from jaxrej import classifiers, heads, metrics, reject
from jaxrej.divergence import exact_trace, hutchinson_trace, sample_probes
from jaxrej.flow import SOLVERS, FlowSolve
from jaxrej.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    log_likelihood,
    marginal_log_likelihood,
)
from jaxrej.scoring import (
    ClassLikelihoods,
    Screen,
    TopK,
    batch_mesh,
    cascade_class_log_likelihoods,
    class_log_likelihood_result,
    class_log_likelihoods,
)
from jaxrej.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "classifiers",
    "heads",
    "metrics",
    "reject",
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "exact_trace",
    "hutchinson_trace",
    "sample_probes",
    "FlowSolve",
    "SOLVERS",
    "LikelihoodResult",
    "log_likelihood",
    "class_log_likelihoods",
    "class_log_likelihood_result",
    "cascade_class_log_likelihoods",
    "ClassLikelihoods",
    "TopK",
    "Screen",
    "batch_mesh",
    "marginal_log_likelihood",
    "bits_per_dim",
]
