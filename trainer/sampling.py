"""Choosing a class from logits: greedy, or drawn with a temperature and nucleus (top-p) cut.

Used by the live session for the text head (V + 1 classes) and the dMel head (16 bins per mel
channel). Draws use an explicit ``torch.Generator``, so a session is the same for the same seed.

Shape suffixes follow :mod:`microturn.schemas.legend`: U rows (positions, or positions x mel
channels), V classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from microturn.schemas.config import setting, validate


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How a head's logits become a choice.

    Attributes:
        greedy: take the most likely class (temperature and top_p are then unused).
        temperature: logits are divided by it before the softmax; below 1 sharpens.
        top_p: draw only among the most likely classes whose probabilities sum to at least
            top_p (Holtzman et al. 2020); 1 keeps every class.
    """

    greedy: bool = True
    temperature: float = setting(1.0, gt=0.0)
    top_p: float = setting(1.0, gt=0.0, le=1.0)

    def __post_init__(self) -> None:
        validate(self)


def choose(logits_UV: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """int64 [U]: one class per row of ``logits_UV`` (float) under ``cfg``."""
    if logits_UV.dim() != 2:
        raise ValueError(f"logits must be [U, V], got shape {tuple(logits_UV.shape)}")
    if cfg.greedy:
        return logits_UV.argmax(-1)
    probs_UV = (logits_UV.float() / cfg.temperature).softmax(-1)
    if cfg.top_p < 1.0:
        sorted_UV, order_UV = probs_UV.sort(-1, descending=True)
        before_UV = sorted_UV.cumsum(-1) - sorted_UV  # mass of the classes ranked above
        sorted_UV = sorted_UV.masked_fill(before_UV >= cfg.top_p, 0.0)  # the best class always stays
        probs_UV = torch.zeros_like(probs_UV).scatter_(-1, order_UV, sorted_UV)
    return torch.multinomial(probs_UV, 1, generator=generator).squeeze(-1)
