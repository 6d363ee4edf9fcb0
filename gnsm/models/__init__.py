"""Temperature-conditioned score networks and the model registry.

Common interface (the trainer and the detectors rely on exactly this):

* every network is an ``nn.Module`` with ``forward(y, log_tau, cond=None) -> out``;
* ``y`` is ``(B, D + C, *spatial)`` laid out ``[numerical (D) | field_1 (K_1) | ... | field_J (K_J)]``
  (tabular networks: no spatial dims; the UNet: D = 0 and 2 or 3 spatial dims);
* ``log_tau`` is ``(B,)``: the log temperature of each record (continuous, so a trained network can be
  evaluated at any temperature of its range);
* ``cond`` is optional extra input (the UNet's conditioning channels ``(B, cond_channels, *spatial)``,
  e.g. the image a mask belongs to); it gets no score;
* ``out`` has the layout of ``y``: the numerical part is the score for the numerical columns
  directly; each field's part holds raw logits ``l`` whose score is ``tau * (K * softmax(l) - 1)``
  (use :func:`gnsm.ops.score_norms` / :func:`gnsm.ops.score_matching_loss` on it);
* attributes ``num_numerical`` (D) and ``field_sizes`` (an int K for one-field masks, else a list),
  and ``config()`` -> a JSON-able dict with a ``"name"`` key so that ``build_model(config)``
  rebuilds the same architecture (weights travel separately, in a state dict).

Output layers are zero-initialized: an untrained network predicts uniform logits (score 0).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .conditioning import FiLM, LogTauEmbedding
from .ft_transformer import FTTransformer
from .tabular_mlp import TabularResMLP
from .unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "tabular_mlp": TabularResMLP,
    "ft_transformer": FTTransformer,
    "unet": UNet,
}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a network class to the registry so ``build_model`` (and checkpoints) can rebuild it."""
    MODELS[name] = factory


def build_model(config: dict) -> nn.Module:
    """Rebuild a network from its ``config()`` dict."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"config: expected a dict with a 'name' key, got {config!r}")
    kwargs = dict(config)
    name = kwargs.pop("name")
    if name not in MODELS:
        raise ValueError(f"config['name']: unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["FTTransformer", "FiLM", "LogTauEmbedding", "MODELS", "TabularResMLP", "UNet", "build_model",
           "register_model"]
