"""Feature-tokenizing transformer score network for tabular records (FT-Transformer style).

Tokens: one conditioning token for log(tau), one token per numerical column (``x_i * w_i + b_i``,
the FT-Transformer numerical tokenizer, so numerical features are embedded once and cannot break
the field bookkeeping), and one token per categorical field (a linear embedding of the field's
relaxed log-probability vector plus a field-specific bias). Pre-norm transformer layers; each
token also receives the tau embedding through FiLM before the output heads. Output heads: one
scalar per numerical column and K_j logits per field, laid out like the input.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core import FieldLayout
from .conditioning import FiLM, LogTauEmbedding


class FTTransformer(nn.Module):
    """``forward(y, log_tau, cond=None)``: ``y`` (B, D + C) -> same layout (see :mod:`gnsm.models`)."""

    def __init__(self, field_sizes: Sequence[int], num_numerical: int = 0, d_token: int = 64, n_layers: int = 3,
                 n_heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0, tau_min: float = 2.0,
                 tau_max: float = 20.0):
        super().__init__()
        self.field_sizes = list(FieldLayout.from_sizes(field_sizes).sizes)
        self.num_numerical = int(num_numerical)
        if d_token % n_heads:
            raise ValueError(f"d_token: must be divisible by n_heads ({n_heads}), got {d_token}")
        self._config = dict(field_sizes=self.field_sizes, num_numerical=self.num_numerical, d_token=d_token,
                            n_layers=n_layers, n_heads=n_heads, ffn_mult=ffn_mult, dropout=dropout,
                            tau_min=tau_min, tau_max=tau_max)
        D, J = self.num_numerical, len(self.field_sizes)
        self.embed = LogTauEmbedding(d_token, tau_min=tau_min, tau_max=tau_max)
        self.num_weight = nn.Parameter(torch.randn(D, d_token) * d_token ** -0.5)
        self.num_bias = nn.Parameter(torch.zeros(D, d_token))
        self.field_embed = nn.ModuleList(nn.Linear(k, d_token, bias=False) for k in self.field_sizes)
        self.field_bias = nn.Parameter(torch.randn(J, d_token) * 0.02)
        layer = nn.TransformerEncoderLayer(d_token, n_heads, d_token * ffn_mult, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_token)
        self.film = FiLM(d_token, d_token)
        self.num_head = nn.Parameter(torch.zeros(D, d_token))
        self.num_head_bias = nn.Parameter(torch.zeros(D))
        self.field_heads = nn.ModuleList(nn.Linear(d_token, k) for k in self.field_sizes)
        for head in self.field_heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def config(self) -> dict:
        return {"name": "ft_transformer", **self._config}

    def forward(self, y: torch.Tensor, log_tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("cond: FTTransformer takes no extra conditioning input")
        D = self.num_numerical
        width = D + sum(self.field_sizes)
        if y.dim() != 2 or y.shape[1] != width:
            raise ValueError(f"y: expected shape (B, {width}), got {tuple(y.shape)}")
        emb = self.embed(log_tau)                                        # (B, d)
        tokens = [emb.unsqueeze(1)]
        if D:
            tokens.append(y[:, :D, None] * self.num_weight + self.num_bias)  # (B, D, d)
        parts = torch.split(y[:, D:], self.field_sizes, dim=1)
        fields = torch.stack([e(p) for e, p in zip(self.field_embed, parts)], dim=1) + self.field_bias
        tokens.append(fields)
        h = self.encoder(torch.cat(tokens, dim=1))
        h = self.film(self.norm(h[:, 1:]), emb)                          # drop the conditioning token
        outs = []
        if D:
            outs.append((h[:, :D] * self.num_head).sum(-1) + self.num_head_bias)
        outs.extend(head(h[:, D + j]) for j, head in enumerate(self.field_heads))
        return torch.cat(outs, dim=1)
