"""In-memory tabular training data for the trainer: integer field codes + numerical columns.

:class:`TabularData` is the trainer's tabular input (``gnsm.data.tabular.TabularEncoder`` produces
the codes and standardized numericals from a pandas table). Validation happens here so a bad table
fails with a clear ``ValueError`` before any training step runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class TabularData:
    """``codes``: int64 ``(n, J)`` field codes; ``numerical``: float32 ``(n, D)`` or ``None``."""

    codes: torch.Tensor
    numerical: torch.Tensor | None = None

    def __post_init__(self) -> None:
        codes = torch.as_tensor(np.asarray(self.codes) if not isinstance(self.codes, torch.Tensor) else self.codes)
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise ValueError(f"codes: expected an integer tensor, got {codes.dtype}")
        if codes.dim() != 2:
            raise ValueError(f"codes: expected shape (n, J), got {tuple(codes.shape)}")
        if codes.shape[0] == 0:
            raise ValueError("codes: the table is empty (0 records)")
        self.codes = codes.long().contiguous()
        if self.numerical is not None:
            num = self.numerical
            num = torch.as_tensor(np.asarray(num, dtype=np.float32) if not isinstance(num, torch.Tensor) else num)
            num = num.float()
            if num.dim() != 2 or num.shape[0] != codes.shape[0]:
                raise ValueError(f"numerical: expected shape ({codes.shape[0]}, D), got {tuple(num.shape)}")
            if num.shape[1] == 0:
                num = None
            else:
                bad = ~torch.isfinite(num)
                if bad.any():
                    r, c = (int(i) for i in bad.nonzero()[0])
                    raise ValueError(f"numerical: found a non-finite value ({num[r, c].item()}) at row {r}, "
                                     f"column {c}; impute or drop it before training")
                num = num.contiguous()
            self.numerical = num

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def num_fields(self) -> int:
        return self.codes.shape[1]

    @property
    def num_numerical(self) -> int:
        return 0 if self.numerical is None else self.numerical.shape[1]

    def check_layout(self, field_sizes: Sequence[int], num_numerical: int, name: str = "data") -> None:
        """Raise ``ValueError`` unless the table matches the model's field layout."""
        sizes = [int(k) for k in field_sizes]
        if self.num_fields != len(sizes):
            raise ValueError(f"{name}.codes: expected {len(sizes)} fields, got {self.num_fields}")
        if self.num_numerical != num_numerical:
            raise ValueError(f"{name}.numerical: expected {num_numerical} numerical columns, got {self.num_numerical}")
        low = self.codes.min(dim=0).values
        high = self.codes.max(dim=0).values
        for j, k in enumerate(sizes):
            if low[j] < 0 or high[j] >= k:
                v = int(low[j]) if low[j] < 0 else int(high[j])
                row = int(((self.codes[:, j] < 0) | (self.codes[:, j] >= k)).nonzero()[0])
                raise ValueError(f"{name}.codes: field {j} expects values in [0, {k}), found {v} at row {row}")
