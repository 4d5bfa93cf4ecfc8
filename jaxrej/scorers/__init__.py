"""THE scorer layer: a scorer gives class scores (B, C) of pixel images, fits its reject
thresholds on validation rows (`jaxrej.reject.fit_thresholds`), decides (class, accepted), and
has an attack view (cheaper, may see the label) separate from its judge (label-blind, the clean
table's scorer). Heads, the ODE classifier (sbgc), the ELBO classifier and ABS; one registry.

    sc = jaxrej.scorers.load("runs/demo", "sbgc").fit_thresholds(val_x, val_y)
    pred, accepted = sc.decide(x)
    view = sc.for_attack(labels=y)       # every adversarial input is re-judged by `sc`
"""

from jaxrej.scorers.base import ACCEPT_CORRECT, PERCENTILES, AttackView, Scorer
from jaxrej.scorers.registry import BATCH_SIZES, NAMES, find_runs, load

__all__ = ["ACCEPT_CORRECT", "AttackView", "BATCH_SIZES", "NAMES", "PERCENTILES", "Scorer",
           "find_runs", "load"]  # fmt: skip
