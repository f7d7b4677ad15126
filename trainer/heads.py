"""Output heads of the interaction model, applied to the hidden states that predict model-side
positions (``trainer_spec``: the target at position i is read from the hidden at i - 1).

* :class:`TextHead`: linear to the vocabulary, cross entropy on MODEL_TEXT targets.
* :class:`DmelHead`: 80 independent 16-way classifications per MODEL_AUDIO frame (the dMel bins
  of every mel channel), cross entropy averaged over channels and frames.
* :class:`FlowHead`: conditional flow matching (rectified flow; Lipman et al. 2023, Liu et al.
  2023) of the continuous log-mel frame, as in the reference system's audio decoder: with
  x0 ~ N(0, I) and x1 the target, ``x_t = (1 - t) x0 + t x1`` and a small MLP conditioned on the
  hidden state and t regresses the velocity ``x1 - x0`` (MSE). Sampling integrates the learned
  velocity from noise with Euler steps.

Each loss is a mean over its targets and 0 (still in the graph) when a batch has none, so a
batch without model speech or text does not make the total NaN.

Shape suffixes follow :mod:`microturn.schemas.legend`: U target positions, D model width,
V vocabulary (the text head has V + 1 classes), M = 80 mel channels, S = 16 dMel bins, I the flow MLP's width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from microturn.schemas.dmel import LOG_MAX, LOG_MIN
from microturn.schemas.sample import DMEL_BINS, N_MELS
from microturn.trainer.config import ModelConfig

# Log-mel values lie in [LOG_MIN, LOG_MAX] = [-7, 2] (the dMel clamp); the flow works on them
# mapped affinely to [-1, 1], so the data (std about 0.5) and the N(0, I) source have comparable
# scales, the regime image flows are tuned for (EDM's sigma_data = 0.5, Karras et al. 2022).
_LOGMEL_CENTRE = (LOG_MAX + LOG_MIN) / 2
_LOGMEL_HALF_RANGE = (LOG_MAX - LOG_MIN) / 2
# Sinusoidal time features of t in [0, 1] use t * 1000, the step range of DDPM-style embeddings,
# so the 10000-period frequency ladder resolves small differences of t.
_TIME_SCALE = 1000.0


def _mean_or_zero(total: torch.Tensor, count: int) -> torch.Tensor:
    return total / max(count, 1)


class TextHead(nn.Module):
    """Hidden state -> logits of the next text token, or of the end of the chunk's text.

    V + 1 classes: the V token ids of the text embedding, then :attr:`end_of_text` (= V), which
    no tokenizer emits and no position ever embeds: it only says "this chunk's model text is
    over, its audio comes next", the one decision of the sequence layout that is not fixed.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.end_of_text = cfg.vocab_size
        self.proj = nn.Linear(cfg.dim, cfg.vocab_size + 1, bias=False)

    def logits(self, h_UD: torch.Tensor) -> torch.Tensor:
        """[U, D] -> float32 [U, V + 1] (the last class is :attr:`end_of_text`)."""
        return self.proj(h_UD).float()

    def loss(self, h_UD: torch.Tensor, target_U: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy of int64 targets ``target_U`` (token ids or :attr:`end_of_text`)."""
        total = F.cross_entropy(self.logits(h_UD), target_U, reduction="sum")
        return _mean_or_zero(total, target_U.numel())


class DmelHead(nn.Module):
    """Hidden state -> logits of the 16 dMel bins of each of the 80 mel channels."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.dim, N_MELS * DMEL_BINS, bias=False)

    def logits(self, h_UD: torch.Tensor) -> torch.Tensor:
        """[U, D] -> float32 [U, 80, 16]."""
        return self.proj(h_UD).float().view(-1, N_MELS, DMEL_BINS)

    def loss(self, h_UD: torch.Tensor, target_UM: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy over frames and channels of the bins ``target_UM`` (uint8 or int)."""
        logits_UMS = self.logits(h_UD)
        total = F.cross_entropy(logits_UMS.reshape(-1, DMEL_BINS), target_UM.reshape(-1).long(),
                                reduction="sum")
        return _mean_or_zero(total, target_UM.numel())

    def predict(self, h_UD: torch.Tensor) -> torch.Tensor:
        """uint8 [U, 80]: the most likely bin of every channel."""
        return self.logits(h_UD).argmax(-1).to(torch.uint8)


def time_features(t_U: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal features [U, width] of flow times t in [0, 1] (cos half, sin half)."""
    half = width // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t_U.device,
                                                         dtype=torch.float32) / half)
    angle_UI = (t_U.float() * _TIME_SCALE).unsqueeze(-1) * freq
    out = torch.cat([angle_UI.cos(), angle_UI.sin()], dim=-1)
    return F.pad(out, (0, width - 2 * half))


class _FlowBlock(nn.Module):
    """Residual MLP block modulated by the condition (adaptive LayerNorm shift and scale, as in
    DiT, Peebles & Xie 2023): the condition acts at every depth, not only at the input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.ada = nn.Linear(width, 2 * width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, z_UI: torch.Tensor, c_UI: torch.Tensor) -> torch.Tensor:
        shift_UI, scale_UI = self.ada(F.silu(c_UI)).chunk(2, dim=-1)
        u_UI = self.norm(z_UI) * (1 + scale_UI) + shift_UI
        return z_UI + self.fc2(F.gelu(self.fc1(u_UI)))


class FlowHead(nn.Module):
    """Flow-matching head for the continuous log-mel frame of MODEL_AUDIO positions."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.flow_hidden
        self.width, self.steps = width, cfg.flow_steps
        self.cond = nn.Linear(cfg.dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(N_MELS, width)
        self.blocks = nn.ModuleList(_FlowBlock(width) for _ in range(cfg.flow_depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, N_MELS)

    @staticmethod
    def normalise(logmel_UM: torch.Tensor) -> torch.Tensor:
        """Log-mel in [-7, 2] -> flow space [-1, 1] (float32)."""
        return (logmel_UM.float() - _LOGMEL_CENTRE) / _LOGMEL_HALF_RANGE

    @staticmethod
    def denormalise(x_UM: torch.Tensor) -> torch.Tensor:
        """Flow space -> log-mel units."""
        return x_UM.float() * _LOGMEL_HALF_RANGE + _LOGMEL_CENTRE

    def velocity(self, x_UM: torch.Tensor, h_UD: torch.Tensor, t_U: torch.Tensor) -> torch.Tensor:
        """Predicted velocity (flow space, float32 [U, 80]) at the point ``x_UM`` and time
        ``t_U``, conditioned on the hidden states ``h_UD``."""
        dtype = self.inp.weight.dtype
        c_UI = self.cond(h_UD.to(dtype)) + self.time(time_features(t_U, self.width).to(dtype))
        z_UI = self.inp(x_UM.to(dtype)) + c_UI
        for block in self.blocks:
            z_UI = block(z_UI, c_UI)
        return self.out(self.out_norm(z_UI)).float()

    def loss(self, h_UD: torch.Tensor, logmel_UM: torch.Tensor, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the velocity for one draw of (x0, t) per target frame.

        ``generator`` (on the device of ``h_UD``) makes the draw reproducible; None uses the
        global torch generator.
        """
        x1_UM = self.normalise(logmel_UM)
        n = x1_UM.shape[0]
        x0_UM = torch.randn(x1_UM.shape, generator=generator, device=x1_UM.device)
        t_U = torch.rand((n,), generator=generator, device=x1_UM.device)
        t_U1 = t_U.unsqueeze(-1)
        xt_UM = (1 - t_U1) * x0_UM + t_U1 * x1_UM
        err_UM = self.velocity(xt_UM, h_UD, t_U) - (x1_UM - x0_UM)
        return _mean_or_zero(err_UM.square().sum(), err_UM.numel())

    @torch.no_grad()
    def sample(self, h_UD: torch.Tensor, steps: int | None = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """float32 [U, 80] log-mel frames: Euler integration of the velocity from x0 ~ N(0, I)
        at t = 0 to t = 1 in ``steps`` equal steps (``cfg.flow_steps`` when None). Values are not
        clamped to the data range."""
        steps = self.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        n = h_UD.shape[0]
        x_UM = torch.randn((n, N_MELS), generator=generator, device=h_UD.device)
        dt = 1.0 / steps
        for i in range(steps):
            t_U = torch.full((n,), i * dt, device=h_UD.device)
            x_UM = x_UM + dt * self.velocity(x_UM, h_UD, t_U)
        return self.denormalise(x_UM)
