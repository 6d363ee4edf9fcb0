"""``ScoreModelDetector``: what the detectors built on a tau-conditioned score network share.

:class:`gnsm.detectors.GNSMDetector` (tables) and :class:`gnsm.detectors.SegmentationQC` (masks and
volumes) both train a score network with :class:`gnsm.training.Trainer` on the temperature schedule
``n_temperatures`` x ``[tau_min, tau_max]``, turn records into features at the scoring temperatures and
fit a density head (:class:`gnsm.detectors.heads.DensityHead`) on the training features. This base
holds that scaffolding once: parameter checks, the schedule, the scoring temperatures, the seeds, the
label check of the HGAD head, the head and the training run.

Seeds: ``random_state`` (None counts as 0, so an unseeded detector is still reproducible) seeds the
network weights and training (``seed``), the scoring noise (``seed + 3``, fresh per scoring call, so a
record's score does not depend on the other records) and the head.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core import Schedule, check_temperatures, ensure_configured
from .base import BaseDetector, resolve_device
from .heads import HEAD_KINDS, HEAD_OPTIONS, DensityHead
from .validation import check_choice, check_float_param, check_int_param, check_labels

__all__ = ["ScoreModelDetector", "SCORINGS"]

SCORINGS = ("denoise", "paper")
_NOISE_SEED_OFFSET = 3  # the scoring noise stream, apart from the training streams of the same seed


class ScoreModelDetector(BaseDetector):
    """Base of the score-network detectors (see the module docstring); not used directly.

    Subclasses store these constructor parameters (each with its own default): ``scoring``, ``head``,
    ``n_neighbors``, ``max_components``, ``head_options``, ``n_temperatures``, ``tau_max``, ``tau_min``,
    ``eps``, ``eps_max``, ``n_score_temperatures``, ``n_noise_copies``, ``n_steps``, ``batch_size``, ``lr``,
    ``weight_decay``, ``ema_decay``, ``device``, ``random_state``, ``verbose``.
    """

    #: head used when ``head`` is None, per scoring mode
    DEFAULT_HEADS: ClassVar[dict[str, str]] = {"denoise": "gmm", "paper": "gmm"}
    #: values ``scoring`` accepts (a subclass may add ``"auto"``, resolved by :attr:`scoring_`)
    SCORING_CHOICES: ClassVar[tuple[str, ...]] = SCORINGS
    #: the word for one training sample in error messages ("record", "case")
    SAMPLE_WORD: ClassVar[str] = "sample"
    #: whether ``n_steps="auto"`` is accepted (the subclass then sizes the training itself)
    AUTO_STEPS: ClassVar[bool] = False

    # ------------------------------------------------------------------ parameters
    @property
    def head_kind_(self) -> str:
        """The density head in use: ``head``, or the scoring mode's default when ``head`` is None."""
        return self.head if self.head is not None else self.DEFAULT_HEADS[self.scoring_]

    @property
    def scoring_(self) -> str:
        """The scoring mode in use (``"denoise"`` or ``"paper"``); here ``scoring`` itself."""
        return self.scoring

    def _seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    def _check_score_model_params(self) -> None:
        """Check the shared parameters (ValueError naming the parameter); resolves ``device``."""
        check_choice(self.scoring, "scoring", self.SCORING_CHOICES)
        check_choice(self.head, "head", HEAD_KINDS, allow_none=True)
        check_float_param(self.eps, "eps", low=0.0, high=1.0, low_open=True, high_open=True)
        if self.eps_max is not None:
            check_float_param(self.eps_max, "eps_max", low=float(self.eps), high=1.0, high_open=True)
        check_int_param(self.n_temperatures, "n_temperatures", low=1)
        try:
            check_temperatures(self.tau_max, self.tau_min)
        except TypeError as err:  # parameters are reported as ValueError, like every other parameter
            raise ValueError(str(err)) from err
        check_int_param(self.n_score_temperatures, "n_score_temperatures", low=1, allow_none=True)
        check_int_param(self.n_noise_copies, "n_noise_copies", low=1)
        check_int_param(self.n_neighbors, "n_neighbors", low=1)
        check_int_param(self.max_components, "max_components", low=1)
        if self.head_options is not None:
            if not isinstance(self.head_options, dict):
                raise ValueError(f"head_options: expected a dict or None, got {type(self.head_options).__name__}")
            unknown = sorted(set(self.head_options) - set(HEAD_OPTIONS))
            if unknown:
                raise ValueError(f"head_options: unknown keys {unknown}; expected options of the HGAD head "
                                 f"{list(HEAD_OPTIONS)}")
        if not (self.AUTO_STEPS and isinstance(self.n_steps, str) and self.n_steps == "auto"):
            check_int_param(self.n_steps, "n_steps", low=1,
                            expected="a positive int or 'auto'" if self.AUTO_STEPS else None)
        check_int_param(self.batch_size, "batch_size", low=1)
        check_float_param(self.lr, "lr", low=0.0, low_open=True)
        check_float_param(self.weight_decay, "weight_decay", low=0.0)
        check_float_param(self.ema_decay, "ema_decay", low=0.0, high=1.0, high_open=True)
        if self.random_state is not None:
            check_int_param(self.random_state, "random_state", low=0, allow_none=True)
        self._dev = resolve_device(self.device)

    def _schedule(self) -> Schedule:
        return Schedule(n=int(self.n_temperatures), tau_max=float(self.tau_max), tau_min=float(self.tau_min))

    def _score_indices(self) -> list[int]:
        """Schedule indices of the denoise features: ``n_score_temperatures`` evenly spaced ones (all
        of them for ``scoring="paper"``, for None, or when it is at least ``n_temperatures``)."""
        n = int(self.n_temperatures)
        m = self.n_score_temperatures
        if self.scoring_ == "paper" or m is None or int(m) >= n:
            return list(range(n))
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, int(m))})

    @property
    def score_temperatures_(self) -> np.ndarray:
        """The temperatures of the denoise features, noisiest first."""
        return self._schedule().taus().numpy()[self._score_indices()]

    # ------------------------------------------------------------------ fit helpers
    def _start_fit(self) -> int:
        """Check the parameters, configure threads and seed torch; returns the seed."""
        self._check_score_model_params()
        self._check_params()
        ensure_configured()
        seed = self._seed()
        torch.manual_seed(seed)
        return seed

    def _check_params(self) -> None:
        """Subclass-specific parameter checks (after the shared ones)."""

    def _noise_generator(self) -> torch.Generator:
        """A fresh generator of the scoring noise on the detector's device."""
        gen = torch.Generator(device=self._dev)
        gen.manual_seed(self._seed() + _NOISE_SEED_OFFSET)
        return gen

    def _check_head_labels(self, y: Any, n: int) -> np.ndarray | None:
        """The normal-class labels the HGAD head gets (None for other heads, which ignore ``y``'s values
        but still check its length: a wrong length is a caller's mistake worth naming)."""
        if self.head_kind_ != "hgad":
            if y is not None:
                count = _label_count(y)
                if count != n:
                    raise ValueError(f"y: expected {n} labels (one per {self.SAMPLE_WORD}), got {count}")
            return None
        if y is not None:
            return check_labels(y, n, "y")
        k = (self.head_options or {}).get("n_classes", "auto")
        if k is not None and not isinstance(k, str) and int(k) > n:
            raise ValueError(f"head_options['n_classes']: {int(k)} pseudo-classes need at least {int(k)} "
                             f"samples, got {n}")
        return None

    def _make_head(self) -> DensityHead:
        return DensityHead(self.head_kind_, max_components=int(self.max_components),
                           n_neighbors=int(self.n_neighbors), hgad_options=self.head_options,
                           device=self._dev, seed=self._seed())

    def _train_network(self, model: nn.Module, data: Any, val: Any, field_sizes: int | list[int],
                       n_numerical: int, steps: int, batch_size: int) -> tuple[nn.Module, Any]:
        """Train ``model`` with :class:`gnsm.training.Trainer`; returns (the EMA model in eval mode, the result)."""
        from ..training import TrainConfig, Trainer
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=float(self.lr),
                          weight_decay=float(self.weight_decay), warmup_steps=min(100, steps // 10),
                          ema_decay=float(self.ema_decay), kind="kl", eps=float(self.eps),
                          eps_levels=self._eps_levels(), seed=self._seed(),
                          device=str(self._dev), progress=bool(self.verbose),
                          val_every=max(steps // 4, 1) if val is not None else 10 ** 9)
        trainer = Trainer(model, self._schedule(), cfg, field_sizes, n_numerical)
        result = trainer.fit(data, val=val)
        return trainer.ema_model.eval(), result

    def _eps_levels(self) -> tuple[float, ...] | None:
        """One-hot clip per schedule level, noisiest first: geometric from ``eps_max`` down to ``eps`` when the
        ``eps_max`` is set (None: ``eps`` at every level). Why a rising clip: the relaxed sample is an
        invertible function of ``log onehot + g`` at every temperature, so tau alone never hides a label;
        only the clip does (docs/design.md 1.7)."""
        if self.eps_max is None:
            return None
        levels = np.geomspace(float(self.eps_max), float(self.eps), int(self.n_temperatures))  # index 0 noisiest
        return tuple(float(e) for e in levels)

    def _level_eps(self, i: int) -> float:
        """The one-hot clip of schedule level ``i``."""
        levels = self._eps_levels()
        return float(self.eps) if levels is None else levels[i]

    @staticmethod
    def _train_info(result: Any, batch_size: int) -> dict[str, Any]:
        return {"steps": int(result.steps_run), "batch_size": int(batch_size), "seconds": float(result.seconds),
                "final_train_loss": float(np.mean(result.history[-50:])) if result.history else None}


def _label_count(y: Any) -> int:
    try:
        return len(y)
    except TypeError:
        raise ValueError(f"y: expected a 1-D label vector, got {type(y).__name__}") from None
