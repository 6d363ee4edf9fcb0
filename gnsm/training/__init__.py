"""Training of the tau-conditioned score networks: configuration, the trainer, checkpoints,
distributed helpers and run-health checks."""
from ..data import TabularData
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model
from .config import TrainConfig, TrainResult
from .distributed import init_distributed
from .monitor import loss_relapse
from .trainer import Trainer

__all__ = ["CHECKPOINT_FORMAT", "TabularData", "TrainConfig", "Trainer", "TrainResult", "init_distributed",
           "load_checkpoint", "load_model", "loss_relapse"]
