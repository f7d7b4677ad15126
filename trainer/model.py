"""The early-fusion interaction model: input embeddings, decoder blocks (dense and DeepSpeed MoE),
final RMSNorm and the text / dMel / flow heads, with its losses, parameter counts and FLOPs.

Losses (``trainer_spec``): the item at position i is predicted from the hidden state at i - 1,
only where kind[i] is MODEL_TEXT (text head) or MODEL_AUDIO (dMel and flow heads) and i - 1
belongs to the same packed sample; the input side (user text and audio, video, background text)
is never a target. Where a chunk's model text ends (i - 1 is the chunk's
MODEL_MARK or its last MODEL_TEXT, i its first MODEL_AUDIO), the text head's target at i - 1 is
the end-of-text class (``TextHead.end_of_text``), so that a decoder learns from the data how many
text tokens each chunk has and when to start the chunk's audio (since sequence layout 2,
``batch.SEQUENCE_LAYOUT``). The total is

    text_w * CE_text + dmel_w * CE_dmel + flow_w * MSE_flow
        + aux_loss_weight * sum_layers l_aux + z_loss_weight * sum_layers z.

Initialisation draws every parameter from its own generator seeded by (seed, parameter name),
so a model is the same on every machine and no global random state is read or changed. An
expert is named by its global index (ep rank x local experts + local index), so expert e gets
the same weights whatever ``ep_size`` (DeepSpeed deep-copies one expert module into all slots;
without this every expert would start identical).

Shape suffixes follow :mod:`microturn.schemas.legend`: B batch rows, L positions, D model width,
U target positions, M = 80 mel channels, E experts.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from microturn.schemas.sample import N_MELS
from microturn.trainer.config import ModelConfig
from microturn.trainer.embed import DmelEmbedding, InputEmbedding, kind_enum
from microturn.trainer.heads import DmelHead, FlowHead, TextHead
from microturn.trainer.kv_cache import AttentionWindow, KVCache
from microturn.trainer.transformer import (
    MODALITIES,
    Block,
    MoEFeedForward,
    attention_mask,
    rotary_positions,
    rotary_tables,
)

_EXPERT_RE = re.compile(r"deepspeed_experts\.(\d+)\.")
_RESIDUAL_OUT = ("attn.wo.weight", ".w2.weight")  # projections writing into the residual stream


@dataclass(frozen=True, kw_only=True)
class ModelOutput:
    """Result of :meth:`InteractionModel.forward`.

    Attributes:
        loss: the weighted total (scalar, in the autograd graph).
        losses: detached scalars per term: "text", "dmel", "flow" (head means), "aux", "z"
            (sums over MoE layers). The heads are per modality: text for text, dmel and flow
            for audio (video is input only).
        moe_stats: per MoE block, in depth order, the detached routing statistics dict of
            ``transformer.MoEOutput.stats`` (layer, load, drop_fraction, router_entropy,
            capacity, aux_loss, z_loss).
        tokens: int64 scalars: "positions" (non-PAD), "text_targets", "audio_targets", and one
            count per position kind (lower-case ``Kind`` names, "pad" included).
        hidden_BLD: final normed hidden states (for decoding).
    """

    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    moe_stats: list[dict[str, torch.Tensor | int]]
    tokens: dict[str, torch.Tensor]
    hidden_BLD: torch.Tensor


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _fill(param: torch.Tensor, seed: int, name: str, std: float) -> None:
    g = torch.Generator().manual_seed(_seed_for(seed, name))  # CPU draws: the same on any machine
    with torch.no_grad():
        if param.device.type == "cpu":
            param.normal_(0.0, std, generator=g)
        else:
            param.copy_(torch.randn(param.shape, generator=g).mul_(std))


def init_parameters(model: nn.Module, *, cfg: ModelConfig, seed: int = 0, ep_rank: int = 0) -> None:
    """Initialise every parameter of ``model`` (any module built from this package's parts).

    Linear weights and embedding rows ~ N(0, init_std^2) (GPT-2); projections that write into
    the residual stream are divided by sqrt(2 layers) (GPT-2's depth scaling); the dMel table by
    sqrt(80) so that a frame's sum of 80 rows has the scale of one text row; norm weights 1,
    biases 0. ``ep_rank`` names the experts of this rank globally (see the module notes).
    """
    std = cfg.init_std
    for module_name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        for pname, param in params.items():
            full = f"{module_name}.{pname}" if module_name else pname
            name = full
            moe = _owning_moe(model, full)
            if moe is not None:
                local = cfg.n_experts // moe.moe.ep_size
                name = _EXPERT_RE.sub(lambda m, local=local: f"expert{ep_rank * local + int(m.group(1))}.", full)
            if isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                with torch.no_grad():
                    param.fill_(1.0 if pname == "weight" else 0.0)
            elif pname == "bias":
                with torch.no_grad():
                    param.zero_()
            elif isinstance(module, nn.Embedding):
                scale = math.sqrt(N_MELS) if _parent_is(model, module_name, DmelEmbedding) else 1.0
                _fill(param, seed, name, std / scale)
            elif isinstance(module, nn.Linear):
                depth = math.sqrt(2 * cfg.layers) if full.endswith(_RESIDUAL_OUT) else 1.0
                _fill(param, seed, name, std / depth)
            else:
                warnings.warn(f"init_parameters: {full} ({type(module).__name__}) is not a "
                              "known layer type; left as constructed", stacklevel=2)


def _owning_moe(model: nn.Module, full_name: str) -> MoEFeedForward | None:
    if "deepspeed_experts." not in full_name:
        return None
    prefix = full_name.split(".moe.deepspeed_moe.")[0]
    owner = model.get_submodule(prefix) if prefix != full_name else model
    return owner if isinstance(owner, MoEFeedForward) else None


def _parent_is(model: nn.Module, module_name: str, kind: type) -> bool:
    parent = module_name.rpartition(".")[0]
    return isinstance(model.get_submodule(parent) if parent else model, kind)


class InteractionModel(nn.Module):
    """InputEmbedding -> blocks (MoE where ``cfg.is_moe_layer(i)``) -> RMSNorm -> heads.

    Args:
        cfg: the model configuration.
        ep_size: expert-parallel ranks (each holds ``n_experts / ep_size`` experts).
        seed: initialisation seed.
        ep_rank: this rank's index in its expert-parallel group. None: 0 when ``ep_size`` is 1,
            else ``torch.distributed`` rank % ep_size (DeepSpeed's default layout, where
            consecutive ranks form an expert-parallel group); pass it explicitly for the
            data-before-expert layout.
        dropless: MoE layers never drop a route at the expert capacity (DeepSpeed's
            ``drop_tokens=False``: the capacity of a pass is its busiest expert's count). What a
            decoder needs, so that a position's output does not depend on how many others share
            its forward pass; training keeps the capacity (the default).
    """

    def __init__(self, cfg: ModelConfig, *, ep_size: int = 1, seed: int = 0,
                 ep_rank: int | None = None, dropless: bool = False) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
        if ep_size < 1 or cfg.n_experts % ep_size:
            raise ValueError(f"ep_size ({ep_size}) must divide n_experts ({cfg.n_experts})")
        if ep_rank is None:
            ep_rank = 0
            if ep_size > 1:
                if not torch.distributed.is_initialized():
                    raise ValueError("ep_size > 1 needs torch.distributed initialised "
                                     "(deepspeed.init_distributed) before the model is built, "
                                     "or an explicit ep_rank")
                ep_rank = torch.distributed.get_rank() % ep_size
        if not 0 <= ep_rank < ep_size:
            raise ValueError(f"ep_rank must be in [0, {ep_size}), got {ep_rank}")
        self.cfg, self.ep_size = cfg, ep_size
        self.kinds = {k.name: int(k) for k in kind_enum()}
        # Kind -> modality code of transformer.MODALITIES, for the per-modality routing statistics.
        names = {"PAD": "pad", "USER_TEXT": "text", "MODEL_TEXT": "text", "BACKGROUND_TEXT": "text",
                 "USER_AUDIO": "audio", "MODEL_AUDIO": "audio", "VIDEO": "video", "CHUNK_MARK": "marker",
                 "MODEL_MARK": "marker"}
        table = torch.zeros(max(self.kinds.values()) + 1, dtype=torch.long)
        for kind, value in self.kinds.items():
            table[value] = MODALITIES.index(names[kind])
        self._modality: torch.Tensor
        self.register_buffer("_modality", table, persistent=False)
        self.embed = InputEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg, moe=cfg.is_moe_layer(i), ep_size=ep_size, layer=i, dropless=dropless)
                                    for i in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.text_head = TextHead(cfg)
        self.dmel_head = DmelHead(cfg)
        self.flow_head = FlowHead(cfg)
        init_parameters(self, cfg=cfg, seed=seed, ep_rank=ep_rank)

    def _blocks(self) -> list[Block]:
        """The transformer blocks, typed (``nn.ModuleList`` yields plain modules)."""
        return [block for block in self.blocks if isinstance(block, Block)]

    def check_moe_kernel(self, name: str) -> None:
        """Raise ``ValueError`` unless every MoE layer can decode through ``name`` (one of
        ``MoEFeedForward.KERNELS``: ``"deepspeed"``, ``"gemv"``, ``"grouped"``, ``"auto"``)."""
        for block in self._blocks():
            if isinstance(block.ffn, MoEFeedForward):
                block.ffn.check_kernel(name)

    def moe_layers(self) -> list[MoEFeedForward]:
        """The MoE feed-forward layers, in depth order."""
        return [block.ffn for block in self._blocks() if isinstance(block.ffn, MoEFeedForward)]

    def hidden(self, batch: Mapping[str, torch.Tensor], *, moe_kernel: str = "deepspeed",
               window: AttentionWindow | None = None) -> tuple[torch.Tensor, list]:
        """Final normed hidden states [B, L, D] and the MoE outputs of the blocks.

        ``moe_kernel`` (eval mode) runs the MoE layers through a kernel (see
        :meth:`check_moe_kernel`); ``window`` limits every query to the keys its
        :class:`~microturn.trainer.kv_cache.AttentionWindow` allows, the teacher-forced twin of
        a live session with that window."""
        cfg = self.cfg
        segment_BL, time_BL = batch["segment_BL"], batch["time_BL"]
        x_BLD = self.embed(batch)
        positions_BL = rotary_positions(time_BL, segment_BL, chunk_stride=cfg.chunk_stride,
                                        max_time=cfg.max_time)
        cos, sin = rotary_tables(positions_BL, head_dim=cfg.head_dim, base=cfg.rope_base)
        mask_B1LL = attention_mask(segment_BL)
        if window is not None:
            mask_B1LL = mask_B1LL & window.allowed(time_BL, time_BL).unsqueeze(1)
        real_BL = segment_BL > 0
        modality_BL = self._modality[batch["kind_BL"]]
        moe_outputs = []
        for block in self._blocks():
            x_BLD, moe_out = block(x_BLD, cos, sin, mask_B1LL, real_BL, modality_BL, moe_kernel=moe_kernel)
            if moe_out is not None:
                moe_outputs.append(moe_out)
        return self.norm(x_BLD), moe_outputs

    def decode(self, inputs: Mapping[str, torch.Tensor], positions_BL: torch.Tensor, cache: KVCache, *,
               moe_kernel: str = "deepspeed") -> torch.Tensor:
        """Final normed hidden states [B, L, D] of L new positions that follow what ``cache``
        holds (one row per cached sequence), adding them to the cache.

        ``inputs`` has the embedding's keys (kind_BL, text_BL, dmel_BLM, video_PFHWC, video_BL)
        and ``time_BL`` (chunk of each position); ``positions_BL`` are their rotary positions
        (``time * chunk_stride + rank in the chunk``, as :func:`rotary_positions` gives in a
        whole sequence). A new position attends to the cached ones its window allows and to
        the new ones at or before it: the same hidden states as :meth:`hidden` of the whole
        sequence (with the same window).
        """
        cfg = self.cfg
        x_BLD = self.embed(inputs)
        cos, sin = rotary_tables(positions_BL, head_dim=cfg.head_dim, base=cfg.rope_base)
        mask_B1LL = cache.reserve(inputs["time_BL"])
        real_BL = torch.ones_like(positions_BL, dtype=torch.bool)
        for block, layer_cache in zip(self._blocks(), cache.layers, strict=True):
            x_BLD, _ = block(x_BLD, cos, sin, mask_B1LL, real_BL, moe_kernel=moe_kernel, cache=layer_cache)
        cache.commit()
        return self.norm(x_BLD)

    def forward(self, batch: Mapping[str, torch.Tensor], *,
                generator: torch.Generator | None = None) -> ModelOutput:
        """Losses of one batch (``trainer_spec`` batch dict). ``generator`` (on the batch's
        device) draws the flow head's noise and times; None uses the global torch generator."""
        cfg, k = self.cfg, self.kinds
        kind_BL, segment_BL = batch["kind_BL"], batch["segment_BL"]
        h_BLD, moe_outputs = self.hidden(batch)
        prev_BLD = h_BLD[:, :-1]
        same_BL = segment_BL[:, 1:] == segment_BL[:, :-1]
        text_BL = (kind_BL[:, 1:] == k["MODEL_TEXT"]) & same_BL
        audio_BL = (kind_BL[:, 1:] == k["MODEL_AUDIO"]) & same_BL
        # End of the chunk's text: the first MODEL_AUDIO after the MODEL_MARK or the last MODEL_TEXT.
        before_BL = (kind_BL[:, :-1] == k["MODEL_MARK"]) | (kind_BL[:, :-1] == k["MODEL_TEXT"])
        end_BL = audio_BL & before_BL
        said_BL = text_BL | end_BL
        target_BL = torch.where(end_BL, self.text_head.end_of_text, batch["text_BL"][:, 1:])
        text_loss = self.text_head.loss(prev_BLD[said_BL], target_BL[said_BL])
        h_audio_UD = prev_BLD[audio_BL]
        dmel_loss = self.dmel_head.loss(h_audio_UD, batch["dmel_BLM"][:, 1:][audio_BL])
        flow_loss = self.flow_head.loss(h_audio_UD, batch["logmel_BLM"][:, 1:][audio_BL],
                                        generator=generator)
        zero = h_BLD.new_zeros((), dtype=torch.float32)
        aux = sum((o.aux_loss.float() for o in moe_outputs), zero)
        z = sum((o.z_loss for o in moe_outputs), zero)
        loss = (cfg.text_loss_weight * text_loss + cfg.dmel_loss_weight * dmel_loss
                + cfg.flow_loss_weight * flow_loss + cfg.aux_loss_weight * aux
                + cfg.z_loss_weight * z)
        losses = {"text": text_loss, "dmel": dmel_loss, "flow": flow_loss, "aux": aux, "z": z}
        counts = torch.bincount(kind_BL.reshape(-1), minlength=len(k))
        tokens = {"positions": (segment_BL > 0).sum(), "text_targets": said_BL.sum(),
                  "text_ends": end_BL.sum(), "audio_targets": audio_BL.sum()}
        tokens.update({name.lower(): counts[value] for name, value in k.items()})
        return ModelOutput(loss=loss, losses={n: v.detach() for n, v in losses.items()},
                           moe_stats=[o.stats for o in moe_outputs], tokens=tokens,
                           hidden_BLD=h_BLD)


def count_params(model: nn.Module) -> dict[str, int]:
    """{"total", "active"} parameters of ``model`` across all expert-parallel ranks.

    Expert parameters are those DeepSpeed marks ``allreduce = False``; a rank holds
    ``1 / ep_size`` of them, so they count ``ep_size`` times. Active = non-expert parameters +
    top_k / E of the expert parameters (what one token passes through), the basis of MFU.
    """
    total = active = 0.0
    expert_ids = set()
    for moe in (m for m in model.modules() if isinstance(m, MoEFeedForward)):
        experts = [p for p in moe.parameters() if getattr(p, "allreduce", True) is False]
        expert_ids.update(id(p) for p in experts)
        local = sum(p.numel() for p in experts)
        total += local * moe.moe.ep_size
        active += local * moe.moe.ep_size * moe.top_k / moe.n_experts
    shared = sum(p.numel() for p in model.parameters() if id(p) not in expert_ids)
    return {"total": int(round(total + shared)), "active": int(round(active + shared))}


def block_params(cfg: ModelConfig) -> dict[str, int]:
    """{"total", "active"} parameters of the decoder blocks and final norm, from the config
    alone (embeddings, hMLP and heads excluded): the non-embedding count of Kaplan et al. 2020."""
    d, hk, gk = cfg.dim, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    attention = d * hk + 2 * d * gk + hk * d + 2 * d  # q, k, v, o and the two norms
    dense = 3 * d * cfg.ffn_dim
    expert = 3 * d * cfg.expert_hidden
    router = d * cfg.n_experts
    moe, dense_layers = cfg.moe_layers, cfg.layers - cfg.moe_layers
    total = cfg.layers * attention + dense_layers * dense + moe * (router + cfg.n_experts * expert) + d
    active = cfg.layers * attention + dense_layers * dense + moe * (router + cfg.top_k * expert) + d
    return {"total": total, "active": active}


def flops_per_token(cfg: ModelConfig, *, seq_len: int | None = None) -> float:
    """Training FLOPs per position (forward + backward) for MFU by active parameters.

    ``6 * active block parameters`` (2 per multiply-add forward, 4 backward; Kaplan et al. 2020)
    plus the attention term ``12 * layers * heads * head_dim * seq_len`` (PaLM, Chowdhery et al.
    2022, appendix B) over the full padded row length ``seq_len``, since the masked attention
    kernel computes every query-key pair. Without ``seq_len`` the attention term is left out
    (with a warning), though it is about half of the total for the default config at 4096
    positions (a third for ``configs/small-gpu.toml``) and grows linearly with the length.
    Embeddings (lookups), the hMLP (run per video patch, not per position) and the heads (run
    at model-side targets only) are left out as well.
    """
    dense = 6.0 * block_params(cfg)["active"]
    if seq_len is None:
        warnings.warn("flops_per_token without seq_len leaves out the attention term; pass the "
                      "padded row length (train.max_len)", stacklevel=2)
        return dense
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    return dense + 12.0 * cfg.layers * cfg.heads * cfg.head_dim * seq_len
