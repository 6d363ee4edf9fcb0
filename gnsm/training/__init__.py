"""Training of the tau-conditioned score networks: configuration, the trainer, checkpoints."""
from .trainer import (CHECKPOINT_FORMAT, TabularData, TrainConfig, Trainer, TrainResult, init_distributed,
                      load_checkpoint, load_model, loss_relapse)

__all__ = ["CHECKPOINT_FORMAT", "TabularData", "TrainConfig", "Trainer", "TrainResult", "init_distributed",
           "load_checkpoint", "load_model", "loss_relapse"]
