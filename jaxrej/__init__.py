"""jaxrej: generative classifiers with a reject option, in JAX.

The public names below are re-exported lazily (PEP 562), so that `import jaxrej.cli` -- and
`jaxrej --help` -- does not import JAX. Importing jaxrej sets one XLA flag on the jaxlib versions
that crash without it (jaxrej/xla_flags.py).
"""

import importlib

from jaxrej import xla_flags

xla_flags.apply()  # before JAX's CPU backend starts: jaxlib 0.10.2 / 0.11.0 crash otherwise

_ATTRS = {
    "jaxrej.sde": ("SDE", "VPSDE", "SubVPSDE", "VESDE"),
    "jaxrej.divergence": ("exact_trace", "hutchinson_trace", "sample_probes"),
    "jaxrej.flow": ("FlowSolve", "SOLVERS"),
    "jaxrej.likelihood": (
        "LikelihoodResult",
        "log_likelihood",
        "marginal_log_likelihood",
        "bits_per_dim",
    ),
    "jaxrej.scoring": (
        "class_log_likelihoods",
        "class_log_likelihood_result",
        "cascade_class_log_likelihoods",
        "ClassLikelihoods",
        "TopK",
        "Screen",
        "batch_mesh",
    ),
    "jaxrej.elbo": ("class_elbos",),
}
_WHERE = {name: module for module, names in _ATTRS.items() for name in names}
_MODULES = ("classifiers", "heads", "metrics", "reject", "scoring", "flow", "autodiff", "elbo",
            "attacks", "corruptions", "scorers")  # fmt: skip
__all__ = [*_MODULES, *_WHERE]


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"jaxrej.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jaxrej' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
