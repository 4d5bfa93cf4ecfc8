"""GWIN (Cosentino & Zhu 2019): an MC-dropout classifier with a certainty threshold, a conditional
WGAN-GP trained on its confident-and-correct examples, and transform-and-reclassify of rejected
inputs on top of any scorer.

    mc_dropout   the Bayesian classifier (MC dropout) and its certainty; it trains with
                 jaxrej.classifiers.train
    wgan         generator G(x, z), critic D(x, y), gradient penalty, one jitted step, train/resume
    transform    transform_and_reclassify: one function for every scorer
    protocol     the tau table (GWIN Table 1) and its markdown
    figures      PNG curves and the rejected-vs-transformed grid
    pipeline     the whole run on a dataset from one GwinOptions (`jaxrej gwin` calls it)
"""

from jaxrej.gwin.mc_dropout import MCDropoutCNN, MCPrediction, make_classifier, mc_predict
from jaxrej.gwin.protocol import TAUS, gwin_row, markdown, tau_table
from jaxrej.gwin.transform import Reclassified, generator_transform, transform_and_reclassify
from jaxrej.gwin.wgan import (
    Critic,
    CriticPool,
    GanOptions,
    GanState,
    Generator,
    critic_pool,
    gradient_norms,
    gradient_penalty,
)

__all__ = [
    "MCDropoutCNN",
    "MCPrediction",
    "make_classifier",
    "mc_predict",
    "Generator",
    "Critic",
    "GanOptions",
    "GanState",
    "CriticPool",
    "critic_pool",
    "gradient_norms",
    "gradient_penalty",
    "Reclassified",
    "generator_transform",
    "transform_and_reclassify",
    "TAUS",
    "gwin_row",
    "tau_table",
    "markdown",
]
