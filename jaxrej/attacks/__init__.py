"""Attacks on class-score functions `(B, *event) -> (B, C)`: FGSM, BIM, PGD (L-inf, L2),
APGD (CE, DLR, targeted APGD-T), the gradient-free Square attack (L-inf, L2), EOT for stochastic scorers, and the
reject-aware adaptive loss.

    res = jaxrej.attacks.pgd(class_score_fn, x, y, key=key, eps=0.1, norm="linf", steps=40)
    res.x_adv, res.success, res.margin, res.norm

Every attack is one compiled region (`jaxrej.attacks.pgd` module doc) or, with loop="python",
a Python loop around one jitted gradient step shared by every attack, loss and eps
(`jaxrej.attacks.stepper`: the scorer's gradient compiles once for the whole suite); a
stochastic scorer is called as `class_score_fn(x, key)` when the attack gets `stochastic=True`
(`jaxrej.attacks.eot`).
"""

from jaxrej.attacks.apgd import apgd, apgd_targeted
from jaxrej.attacks.geometry import NORMS, lp_norm, project
from jaxrej.attacks.losses import LOSSES, attack_loss, goal_reached, margin
from jaxrej.attacks.pgd import bim, fgsm, pgd
from jaxrej.attacks.result import AttackResult
from jaxrej.attacks.square import square

__all__ = [
    "AttackResult",
    "LOSSES",
    "NORMS",
    "apgd",
    "apgd_targeted",
    "attack_loss",
    "bim",
    "fgsm",
    "goal_reached",
    "lp_norm",
    "margin",
    "pgd",
    "project",
    "square",
]
