"""Denoising score matching (losses), the training loop, checkpoints and trained runs on disk."""

from jaxrej.training.checkpoint import latest_step, restore_checkpoint
from jaxrej.training.loop import TrainOptions, TrainState, make_optimizer, make_train_step, train
from jaxrej.training.losses import dsm_loss, importance_density, sample_importance_time
from jaxrej.training.workdir import TrainedModel, load_score_model, load_trained, read_config

__all__ = [
    "TrainOptions",
    "TrainState",
    "TrainedModel",
    "dsm_loss",
    "importance_density",
    "latest_step",
    "load_score_model",
    "load_trained",
    "make_optimizer",
    "make_train_step",
    "read_config",
    "restore_checkpoint",
    "sample_importance_time",
    "train",
]
