"""Decoder blocks of the interaction model: RMSNorm, rotary grouped-query attention over packed
segments, and a SwiGLU feed-forward that is dense or a DeepSpeed Mixture-of-Experts.

Positions. A rotary position is ``time * chunk_stride + rank``, where ``time`` is the chunk
index of the position (``time_BL``) and ``rank`` its offset inside the run of positions of that
chunk (0 at the chunk's CHUNK_MARK). Why one integer and not the sequence index: the number of
text tokens and video patches per chunk varies, so with sequence indices the distance between
two chunks would depend on how much was said in between; here chunk k always starts at
``k * chunk_stride``, so the same time lag is the same rotation everywhere (a user frame and the
model's reply 600 ms later are 3 strides apart whatever the text). Within a chunk the rank keeps
the interleaved order, and since ``rank < chunk_stride`` (checked) the positions increase
strictly along a segment, so causal order and time order agree. A two-part rotary (time on half
of the frequencies, rank on the other, as in M-RoPE) would do the same with smaller numbers but
halve the frequency resolution of each part; one integer keeps standard RoPE. Angles are
computed in float64 because positions reach millions (ulp of float32 at 2e6 is 0.25 rad).

Attention. ``scaled_dot_product_attention`` with a boolean mask: a query attends to keys of its
own segment (packed samples never see each other) at or before it. PAD queries (segment 0)
attend to themselves only, which keeps their rows finite (an all-masked row is NaN) and never
reaches a real position. Grouped-query heads are expanded before the call: the memory-efficient
CUDA kernel takes a mask but not ``enable_gqa``, which would fall back to the math kernel.

MoE. ``deepspeed.moe.layer.MoE`` with a SwiGLU expert; it returns (output, l_aux, exp_counts).
The router z-loss (ST-MoE, Zoph et al. 2022: mean over tokens of logsumexp(logits)^2) needs the
router logits, which DeepSpeed does not return. Its gate computes them as
``F.linear(input.float(), wg.weight.float())`` without calling ``wg`` (DeepSpeed 0.19), so a
forward hook on ``gate.wg`` never fires; the hook sits on the gate module instead, takes the
gate's input and recomputes the same logits (U x D x E multiply-adds, about E / (6 I) of the
experts' cost). The gate's output also names the routes dropped at capacity.

Shape suffixes follow :mod:`microturn.schemas.legend`: B batch rows, L positions, D model width,
A query heads, G key/value heads, Q head width (q its half, the rotary pairs), U routed tokens
(B L flattened), E experts, J experts chosen per token (top-k), I expert hidden width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from microturn.trainer.config import ModelConfig


def rotary_positions(time_BL: torch.Tensor, segment_BL: torch.Tensor, *, chunk_stride: int,
                     max_time: int | None = None) -> torch.Tensor:
    """int64 [B, L] rotary positions ``time * chunk_stride + rank within the chunk``.

    A chunk's run starts wherever time or segment changes from the previous position. Raises
    :class:`ValueError` when a chunk of a real segment holds ``chunk_stride`` positions or more,
    or a time is negative or >= ``max_time`` (one host sync for both checks). PAD positions
    (segment 0) are not checked: their positions are never attended.
    """
    b, length = time_BL.shape
    index_BL = torch.arange(length, device=time_BL.device).expand(b, length)
    starts_BL = torch.ones_like(time_BL, dtype=torch.bool)
    starts_BL[:, 1:] = (time_BL[:, 1:] != time_BL[:, :-1]) | (segment_BL[:, 1:] != segment_BL[:, :-1])
    first_BL = torch.where(starts_BL, index_BL, torch.zeros_like(index_BL)).cummax(dim=1).values
    rank_BL = index_BL - first_BL
    if length:
        real_BL = segment_BL > 0
        top_rank, top_time, low_time = torch.stack(
            [rank_BL.masked_fill(~real_BL, 0).max(), time_BL.max(), time_BL.min()]).tolist()
        if top_rank >= chunk_stride:
            raise ValueError(f"a chunk holds {top_rank + 1} positions but chunk_stride is "
                             f"{chunk_stride}: raise ModelConfig.chunk_stride or cap the text "
                             "tokens per chunk in the loader")
        if low_time < 0 or (max_time is not None and top_time >= max_time):
            raise ValueError(f"time_BL spans [{low_time}, {top_time}], outside [0, max_time="
                             f"{max_time}): raise ModelConfig.max_time or cut the window")
    return time_BL * chunk_stride + rank_BL


def rotary_tables(positions_BL: torch.Tensor, *, head_dim: int,
                  base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos and sin [B, 1, L, Q / 2] of the angles ``position * base^(-2 i / Q)``
    (angles in float64, see the module notes)."""
    exponent = torch.arange(0, head_dim, 2, device=positions_BL.device, dtype=torch.float64) / head_dim
    inv_freq = base ** -exponent
    angles_BLq = positions_BL.to(torch.float64).unsqueeze(-1) * inv_freq
    return (angles_BLq.cos().to(torch.float32).unsqueeze(1),
            angles_BLq.sin().to(torch.float32).unsqueeze(1))


def apply_rotary(x_BALQ: torch.Tensor, cos_B1Lq: torch.Tensor, sin_B1Lq: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (i, i + Q / 2) of every head by the position's angles; computed in
    float32 (bf16 cos/sin would carry 3 significant digits) and returned in x's dtype."""
    x1, x2 = x_BALQ.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos_B1Lq - x2 * sin_B1Lq, x1 * sin_B1Lq + x2 * cos_B1Lq], dim=-1)
    return out.to(x_BALQ.dtype)


def attention_mask(segment_BL: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, L, L]: True where query i may attend key j (same segment > 0 and j <= i;
    a PAD query, segment 0, attends to itself only)."""
    length = segment_BL.shape[1]
    causal_LL = torch.ones(length, length, dtype=torch.bool, device=segment_BL.device).tril()
    same_BLL = segment_BL.unsqueeze(2) == segment_BL.unsqueeze(1)
    real_BL1 = (segment_BL > 0).unsqueeze(2)
    eye_LL = torch.eye(length, dtype=torch.bool, device=segment_BL.device)
    return ((same_BLL & real_BL1 & causal_LL) | eye_LL).unsqueeze(1)


class Attention(nn.Module):
    """Rotary grouped-query self-attention (no biases)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False)

    def _qkv(self, x_BLD: torch.Tensor, cos_B1Lq: torch.Tensor,
             sin_B1Lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries [B, A, L, Q], rotated keys and values [B, G, L, Q] of ``x_BLD``."""
        b, length, _ = x_BLD.shape
        q_BALQ = self.wq(x_BLD).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k_BGLQ = self.wk(x_BLD).view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v_BGLQ = self.wv(x_BLD).view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)
        return apply_rotary(q_BALQ, cos_B1Lq, sin_B1Lq), apply_rotary(k_BGLQ, cos_B1Lq, sin_B1Lq), v_BGLQ

    def _attend(self, q_BALQ: torch.Tensor, k_BGLQ: torch.Tensor, v_BGLQ: torch.Tensor,
                mask_B1LL: torch.Tensor, *, gqa: bool = False) -> torch.Tensor:
        b, _, length, _ = q_BALQ.shape
        group = self.heads // self.kv_heads
        if gqa and group > 1:
            # Decoding: the kernel shares each key/value head among its query group itself, with no
            # copy of the held keys (repeat_interleave would copy the whole cache on every call).
            out_BALQ = F.scaled_dot_product_attention(q_BALQ, k_BGLQ, v_BGLQ, attn_mask=mask_B1LL, enable_gqa=True)
            return self.wo(out_BALQ.transpose(1, 2).reshape(b, length, -1))
        if group > 1:
            k_BGLQ = k_BGLQ.repeat_interleave(group, dim=1)
            v_BGLQ = v_BGLQ.repeat_interleave(group, dim=1)
        out_BALQ = F.scaled_dot_product_attention(q_BALQ, k_BGLQ, v_BGLQ, attn_mask=mask_B1LL)
        return self.wo(out_BALQ.transpose(1, 2).reshape(b, length, -1))

    def forward(self, x_BLD: torch.Tensor, cos_B1Lq: torch.Tensor, sin_B1Lq: torch.Tensor,
                mask_B1LL: torch.Tensor) -> torch.Tensor:
        q_BALQ, k_BGLQ, v_BGLQ = self._qkv(x_BLD, cos_B1Lq, sin_B1Lq)
        return self._attend(q_BALQ, k_BGLQ, v_BGLQ, mask_B1LL)

    def decode(self, x_BLD: torch.Tensor, cos_B1Lq: torch.Tensor, sin_B1Lq: torch.Tensor,
               mask_B1LL: torch.Tensor, cache: Any) -> torch.Tensor:
        """Attention of the new positions ``x_BLD`` over ``cache`` (a ``kv_cache.LayerCache``) and
        themselves: their rotated keys and values are appended to the cache first, then the
        queries attend to everything the cache holds, under ``mask_B1LL`` [B, 1, new, held]."""
        q_BALQ, k_BGLQ, v_BGLQ = self._qkv(x_BLD, cos_B1Lq, sin_B1Lq)
        k_BGLQ, v_BGLQ = cache.append(k_BGLQ, v_BGLQ)
        return self._attend(q_BALQ, k_BGLQ, v_BGLQ, mask_B1LL, gqa=True)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)`` (Shazeer 2020), no biases; also the expert of the MoE layers.
    Works on any leading shape (DeepSpeed hands an expert [ep, 1, capacity, D])."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@dataclass(frozen=True, kw_only=True)
class MoEOutput:
    """Result of :class:`MoEFeedForward`.

    Attributes:
        y_BLD: the layer's output.
        aux_loss: DeepSpeed's load-balancing loss (in the autograd graph).
        z_loss: router z-loss over real tokens (in the autograd graph).
        stats: routing statistics of this pass, detached tensors (``.item()`` / ``.tolist()``
            them when logging, which syncs):

            - ``layer`` (int): block index;
            - ``load`` [E]: share of the routes that chose each expert before the capacity cut
              (sums to 1; 1 / E is balanced); counts every routed token, PAD included
              (DeepSpeed routes all B L tokens);
            - ``drop_fraction``: share of the U top_k routes dropped at the expert capacity;
            - ``router_entropy``: mean entropy (nats) of softmax(router logits) over real tokens
              (ln E is a uniform router);
            - ``capacity``: tokens per expert in this pass;
            - ``aux_loss``, ``z_loss``: detached copies of the two losses.
    """

    y_BLD: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    stats: dict[str, Any]  # tensors, the int layer, the kernel's name, by_modality's dicts


class MoEFeedForward(nn.Module):
    """DeepSpeed MoE of SwiGLU experts with router z-loss and routing statistics.

    ``ep_size`` experts-parallel ranks each hold ``n_experts / ep_size`` experts; with
    ``ep_size > 1`` the DeepSpeed engine must create the process groups
    (``deepspeed.initialize`` calls ``set_deepspeed_parallelism`` on every MoE module), and
    every rank of a group must route the same number of tokens per step (the all-to-all
    exchanges equal-sized capacity buffers), i.e. batches padded to one length.
    """

    def __init__(self, cfg: ModelConfig, *, ep_size: int = 1, layer: int = 0, dropless: bool = False) -> None:
        super().__init__()
        from deepspeed.moe.layer import MoE  # heavy import, only for models with MoE blocks

        if ep_size < 1 or cfg.n_experts % ep_size:
            raise ValueError(f"n_experts ({cfg.n_experts}) must be a multiple of ep_size ({ep_size})")
        self.layer, self.top_k, self.n_experts = layer, cfg.top_k, cfg.n_experts
        self.moe = MoE(hidden_size=cfg.dim, expert=SwiGLU(cfg.dim, cfg.expert_hidden),
                       num_experts=cfg.n_experts, ep_size=ep_size, k=cfg.top_k,
                       capacity_factor=cfg.capacity_factor,
                       eval_capacity_factor=cfg.eval_capacity_factor,
                       min_capacity=cfg.min_capacity, use_residual=False, drop_tokens=not dropless,
                       top2_2nd_expert_sampling=cfg.second_expert_sampling)
        self._seen: tuple[torch.Tensor, tuple] | None = None
        self.gate.register_forward_hook(self._capture)

    @property
    def gate(self) -> Any:  # DeepSpeed's modules are untyped; pyright would see Tensor | Module
        """DeepSpeed's router (``TopKGate``; its linear is ``gate.wg``). A property, not an
        attribute, so that the router is not registered twice in the state dict."""
        return self.moe.deepspeed_moe.gate

    def _capture(self, module: nn.Module, args: tuple, output: tuple) -> None:
        self._seen = (args[0], output)

    def _take_seen(self) -> tuple[torch.Tensor, tuple] | None:
        """What the gate's hook captured since it was last taken (and forget it)."""
        seen, self._seen = self._seen, None
        return seen

    @staticmethod
    def _kept_routes(gate_output: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept routes, capacity) from the gate's output, in either of DeepSpeed's layouts."""
        if len(gate_output) == 7:  # sparse routes: (l_aux, capacity, E, indices [J, U], ..., exp_counts)
            return (gate_output[3] >= 0).sum(), torch.as_tensor(gate_output[1])
        if len(gate_output) == 4:  # dense: (l_aux, combine, dispatch [U, E, capacity], exp_counts)
            dispatch = gate_output[2]
            return dispatch.sum(), torch.tensor(dispatch.shape[-1])
        warnings.warn(f"unknown DeepSpeed gate output ({len(gate_output)} items): drop fraction "
                      "and capacity are reported as NaN / -1", stacklevel=2)
        return torch.tensor(float("nan")), torch.tensor(-1)

    @staticmethod
    def _kept_per_token(gate_output: tuple, n_tokens: int) -> torch.Tensor | None:
        """Routes of each token that survived the capacity cut [U], or None for an unknown layout."""
        if len(gate_output) == 7:
            indices = torch.as_tensor(gate_output[3])
            indices_JU = indices if indices.shape[-1] == n_tokens else indices.T
            return (indices_JU >= 0).sum(0)
        if len(gate_output) == 4:
            return gate_output[2].reshape(n_tokens, -1).sum(-1)
        return None

    def _by_modality(self, logp_UE: torch.Tensor, kept_U: torch.Tensor | None,
                     modality_U: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Expert load (top-k choices before the capacity cut), drop fraction and router entropy
        over the tokens of each modality present in the batch."""
        out = {}
        chosen_UJ = logp_UE.topk(self.top_k, dim=-1).indices
        for code, name in enumerate(MODALITIES):
            if code == 0:
                continue
            sel_U = modality_U == code
            n = int(sel_U.sum())
            if not n:
                continue
            counts_E = torch.bincount(chosen_UJ[sel_U].reshape(-1), minlength=self.n_experts).float()
            entry = {"tokens": torch.tensor(n), "load": counts_E / counts_E.sum(),
                     "router_entropy": -(logp_UE[sel_U].exp() * logp_UE[sel_U]).sum(-1).mean()}
            if kept_U is not None:
                entry["drop_fraction"] = 1.0 - kept_U[sel_U].float().sum() / float(n * self.top_k)
            out[name] = entry
        return out

    # The seam for decoding: "deepspeed" (default, the training path: DeepSpeed's gate and
    # dispatch) or a kernel of microturn.kernels that gathers the routed experts' weights per token
    # ("gemv", "grouped", or "auto" for the dispatcher). It is an argument of the call, not state
    # of the module: the caller (the live session's config) chooses it, and training, which needs
    # DeepSpeed's capacity, all-to-all and losses, never passes one.
    KERNELS = ("deepspeed", "gemv", "grouped", "auto")
    _stacked: tuple | None = None  # (versions of the expert weights, their stacked copies)

    def check_kernel(self, name: str) -> None:
        """Raise ``ValueError`` unless ``name`` is one of :attr:`KERNELS` and usable here."""
        if name not in self.KERNELS:
            raise ValueError(f"unknown MoE kernel {name!r}; choose one of {self.KERNELS}")
        if name != "deepspeed" and self.moe.ep_size != 1:
            raise ValueError("MoE kernels need every expert in this process (ep_size 1)")

    def route(self, x_UD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert ids [U, J], routing weights [U, J]) as DeepSpeed's gate chooses them before its
        capacity cut: softmax over the router logits in fp32, top-k, and for k > 1 the weights
        renormalised over the chosen experts (DeepSpeed's top-2 and top-k gates; top-1 keeps
        the probability)."""
        probs_UE = F.linear(x_UD.float(), self.gate.wg.weight.float()).softmax(dim=-1)
        weights_UJ, ids_UJ = probs_UE.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            weights_UJ = weights_UJ / weights_UJ.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).eps)
        return ids_UJ, weights_UJ

    def local_experts(self) -> list[SwiGLU]:
        """This rank's experts in DeepSpeed's order (its ``deepspeed_experts``), typed: DeepSpeed's
        modules are untyped, so the attribute chain reads as ``Tensor | Module`` to a checker."""
        experts = self.moe.deepspeed_moe.experts.deepspeed_experts
        assert isinstance(experts, nn.ModuleList)
        local = [e for e in experts if isinstance(e, SwiGLU)]
        assert len(local) == len(experts)  # DeepSpeed deep-copies the SwiGLU expert it was given
        return local

    def expert_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The local experts' SwiGLU weights stacked for the kernels: gate and up [E, I, D],
        down [E, D, I].

        DeepSpeed keeps one Linear per expert, so the stacks are copies (the experts' memory
        twice). They are made once and kept until a weight changes: restacking on every decode
        step would move all expert weights twice per call, more than the kernel itself reads.
        Any in-place change (an optimizer step, ``load_state_dict``) bumps a tensor's version
        counter, which is what the cache is keyed on.
        """
        experts: Any = self.moe.deepspeed_moe.experts.deepspeed_experts  # a ModuleList of DeepSpeed experts
        groups = ([e.w1.weight for e in experts], [e.w3.weight for e in experts], [e.w2.weight for e in experts])
        key = tuple((w.data_ptr(), w._version) for group in groups for w in group)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, tuple(torch.stack(group).contiguous() for group in groups))
        return self._stacked[1]

    def _kernel_forward(self, x_BLD: torch.Tensor, kernel: str) -> MoEOutput:
        from microturn import kernels

        fn = {"gemv": kernels.moe_gemv, "grouped": kernels.moe_grouped, "auto": kernels.moe_decode}[kernel]
        x_UD = x_BLD.reshape(-1, x_BLD.shape[-1])
        ids_UJ, weights_UJ = self.route(x_UD)
        # The ids come from this router's top-k, so they are in range by construction: no
        # host-side check (validate=False), which would sync once per layer per decode step.
        y_UD = fn(x_UD.contiguous(), ids_UJ, weights_UJ.to(x_UD.dtype), *self.expert_weights(), validate=False)
        zero = x_BLD.new_zeros(())
        return MoEOutput(y_BLD=y_UD.reshape(x_BLD.shape), aux_loss=zero, z_loss=zero,
                         stats={"layer": self.layer, "kernel": kernel})

    def forward(self, x_BLD: torch.Tensor, real_BL: torch.Tensor,
                modality_BL: torch.Tensor | None = None, *, kernel: str = "deepspeed",
                stats: bool = True) -> MoEOutput:
        """Route the B L tokens of ``x_BLD``; ``real_BL`` (bool) marks non-PAD positions, over
        which the z-loss and the router entropy are averaged. ``modality_BL`` (int codes of
        :data:`MODALITIES`, 0 for PAD) adds the statistics per modality under ``by_modality``.

        ``kernel`` (eval mode only; see :attr:`KERNELS`) runs the layer through a kernel of
        :mod:`microturn.kernels` instead of DeepSpeed's layer; in training mode anything but
        ``"deepspeed"`` is a ``ValueError``. ``stats=False`` (eval mode) skips the losses and
        routing statistics, which a decoder does not read (their ``.item()``-free tensors still
        cost about as much as the gate)."""
        if kernel != "deepspeed":
            self.check_kernel(kernel)
            if self.training:
                raise ValueError(f"MoE kernel {kernel!r} serves eval mode only; training takes DeepSpeed's layer")
            return self._kernel_forward(x_BLD, kernel)
        if not stats and not self.training:
            y_BLD, _, _ = self.moe(x_BLD)
            self._seen = None
            zero = x_BLD.new_zeros(())
            return MoEOutput(y_BLD=y_BLD, aux_loss=zero, z_loss=zero, stats={"layer": self.layer, "kernel": kernel})
        self._seen = None
        y_BLD, aux_loss, counts_E = self.moe(x_BLD)
        seen = self._take_seen()  # set by the gate's hook during the call above
        if seen is None:
            raise RuntimeError("the DeepSpeed gate hook did not fire; the MoE layer's layout changed")
        tokens_UD, gate_output = seen
        logits_UE = F.linear(tokens_UD.float(), self.gate.wg.weight.float())
        real_U = real_BL.reshape(-1).to(logits_UE.dtype)
        n_real = real_U.sum().clamp(min=1.0)
        z_loss = (torch.logsumexp(logits_UE, dim=-1).square() * real_U).sum() / n_real
        with torch.no_grad():
            logp_UE = logits_UE.log_softmax(dim=-1)
            entropy = (-(logp_UE.exp() * logp_UE).sum(-1) * real_U).sum() / n_real
            kept, capacity = self._kept_routes(gate_output)
            drop = 1.0 - kept.float() / float(tokens_UD.shape[0] * self.top_k)
            counts_E = counts_E.float()
            load_E = counts_E / counts_E.sum().clamp(min=1.0)
            by_modality = {} if modality_BL is None else self._by_modality(
                logp_UE, self._kept_per_token(gate_output, tokens_UD.shape[0]), modality_BL.reshape(-1))
        layer_stats = {"layer": self.layer, "load": load_E, "drop_fraction": drop,
                 "router_entropy": entropy, "capacity": capacity,
                 "aux_loss": aux_loss.detach(), "z_loss": z_loss.detach(), "by_modality": by_modality}
        return MoEOutput(y_BLD=y_BLD, aux_loss=aux_loss, z_loss=z_loss, stats=layer_stats)


# Modality codes of the per-modality routing statistics (0 is PAD).
MODALITIES = ("pad", "text", "audio", "video", "marker")


class Block(nn.Module):
    """Pre-norm decoder block: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(self, cfg: ModelConfig, *, moe: bool, ep_size: int = 1, layer: int = 0,
                 dropless: bool = False) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.is_moe = moe
        self.ffn = (MoEFeedForward(cfg, ep_size=ep_size, layer=layer, dropless=dropless) if moe
                    else SwiGLU(cfg.dim, cfg.ffn_dim))

    def forward(self, x_BLD: torch.Tensor, cos_B1Lq: torch.Tensor, sin_B1Lq: torch.Tensor,
                mask_B1LL: torch.Tensor, real_BL: torch.Tensor,
                modality_BL: torch.Tensor | None = None, *, moe_kernel: str = "deepspeed",
                cache: Any = None) -> tuple[torch.Tensor, MoEOutput | None]:
        """Returns the new residual stream and, for an MoE block, its :class:`MoEOutput` (whose
        ``y_BLD`` is already added).

        With ``cache`` (a ``kv_cache.LayerCache``, decoding) the positions of ``x_BLD`` are new
        ones: they attend over what the cache holds and are added to it, ``mask_B1LL`` is
        [B, 1, new, held], and MoE routing statistics are skipped. ``moe_kernel`` is passed to
        the MoE layer (see :attr:`MoEFeedForward.KERNELS`)."""
        h_BLD = self.attn_norm(x_BLD)
        if cache is None:
            x_BLD = x_BLD + self.attn(h_BLD, cos_B1Lq, sin_B1Lq, mask_B1LL)
        else:
            x_BLD = x_BLD + self.attn.decode(h_BLD, cos_B1Lq, sin_B1Lq, mask_B1LL, cache)
        if not self.is_moe:
            return x_BLD + self.ffn(self.ffn_norm(x_BLD)), None
        out = self.ffn(self.ffn_norm(x_BLD), real_BL, modality_BL, kernel=moe_kernel, stats=cache is None)
        return x_BLD + out.y_BLD, out
