"""Base discriminative classifiers (flax.linen) whose logits and penultimate features feed the heads."""

from jaxrej.classifiers.cnn import CNN
from jaxrej.classifiers.mlp import MLP
from jaxrej.classifiers.resnet import ResNet
from jaxrej.classifiers.train import ClassifierState, apply, init, make_model, predict, train

__all__ = [
    "MLP",
    "CNN",
    "ResNet",
    "ClassifierState",
    "make_model",
    "init",
    "train",
    "apply",
    "predict",
]
