"""jaxrej: generative classifiers with a reject option, in JAX."""

from jaxrej.divergence import exact_trace, hutchinson_trace, sample_probes
from jaxrej.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "exact_trace",
    "hutchinson_trace",
    "sample_probes",
]
