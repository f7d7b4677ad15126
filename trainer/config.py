"""Configuration of the interaction model (:class:`ModelConfig`).

One keyword-only frozen dataclass holds every size and loss weight of the model built by
``microturn.trainer.model``; it is independent of the training precision (the engine casts the
model, the config never names a dtype). Invalid values raise :class:`ValueError` (or
:class:`TypeError` for a wrong type) at construction, so a bad config fails before any tensor is
allocated.

The defaults describe a small model (94M total / 42M active parameters) that trains on one
GPU; the reference system of DESIGN.md is the same architecture at 276B / 12B.
"""

from __future__ import annotations

from dataclasses import dataclass

from microturn.schemas.config import setting, validate


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Sizes, routing and loss weights of the interaction model.

    Attributes:
        dim: width D of the residual stream.
        layers: number of transformer blocks.
        heads: query heads per attention layer.
        kv_heads: key/value heads (grouped-query attention, Ainslie et al. 2023); divides
            ``heads``. ``heads`` gives plain multi-head attention.
        head_dim: width of one head; even (rotary embeddings rotate pairs of features).
        ffn_dim: hidden width of the dense SwiGLU feed-forward layers.
        expert_ffn_dim: hidden width of one expert's SwiGLU; None means ``ffn_dim``.
        n_experts: experts E per MoE layer.
        top_k: experts per token (DeepSpeed's gate: 1, 2 or any k <= E).
        moe_every: block i (0-based) is an MoE block when ``(i + 1) % moe_every == 0``: 1 makes
            every block MoE, 2 every second one (GShard's layout, Lepikhin et al. 2020), 0 none.
        capacity_factor: expert capacity during training, as a multiple of the even share
            ``k T / E`` of the T routed tokens; 1.25 is Switch Transformer's training value
            (Fedus et al. 2021, table 1: best quality/speed trade-off).
        eval_capacity_factor: the same in eval mode; 2.0 is Switch Transformer's eval value.
        min_capacity: smallest capacity per expert whatever the factor (DeepSpeed's default 4).
            DeepSpeed's top-1 gate asserts that a batch routes at least this many tokens.
        second_expert_sampling: DeepSpeed's top-2 gate can draw the second expert with Gumbel
            noise (its default). The noise is drawn in eval mode as well, which makes eval and
            decoding random, so it is off by default: the second expert is the second-best.
        vocab_size: text vocabulary; at least the tokenizer's ``vocab_size``.
        max_time: largest chunk index + 1 the model accepts (9000 chunks of 200 ms = 30 min).
        chunk_stride: rotary positions per chunk: position = time * chunk_stride + rank within
            the chunk (see ``transformer.rotary_positions``). A chunk holds 2 markers, 8 audio
            frames, its video patches (the shard stage's patch budget, 48 by default) and its text
            tokens (user, background and model text: the loader places at most 16 of each), so 256
            leaves room for about 190 text tokens per 200 ms, 4x the 48 the loader gives at most.
        rope_base: rotary base. Positions reach ``max_time * chunk_stride`` (2.3M with the
            defaults, 38400 in a 30 s window); 500000 is Llama 3's base for its 128k context
            (Dubey et al. 2024), whose slowest rotation (wavelength 2 pi base) still exceeds a
            training window 80x.
        aux_loss_weight: weight of DeepSpeed's load-balancing loss; 0.01 as in Switch
            Transformer and ST-MoE.
        z_loss_weight: weight of the router z-loss; 0.001 as in ST-MoE (Zoph et al. 2022).
        text_loss_weight, dmel_loss_weight, flow_loss_weight: weights of the head losses.
        flow_hidden: width of the flow-matching head's MLP.
        flow_depth: residual blocks in the flow-matching head.
        flow_steps: default Euler steps of the flow head's sampler.
        norm_eps: RMSNorm epsilon.
        init_std: standard deviation of the weight initialisation (0.02 as in GPT-2); output
            projections of each block are further divided by sqrt(2 layers).
    """

    dim: int = setting(512, ge=1)
    layers: int = setting(8, ge=1)
    heads: int = setting(8, ge=1)
    kv_heads: int = setting(2, ge=1)
    head_dim: int = setting(64, ge=1)
    ffn_dim: int = setting(1408, ge=1)  # 8/3 D rounded up to a multiple of 64, the SwiGLU width of LLaMA
    expert_ffn_dim: int | None = setting(None, ge=1)
    n_experts: int = setting(8, ge=1)
    top_k: int = setting(2, ge=1)
    moe_every: int = setting(2, ge=0)  # and at most layers, checked below
    capacity_factor: float = setting(1.25, gt=0.0)
    eval_capacity_factor: float = setting(2.0, gt=0.0)
    min_capacity: int = setting(4, ge=0)
    second_expert_sampling: bool = False
    vocab_size: int = setting(512, ge=1)
    max_time: int = setting(9000, ge=1)
    chunk_stride: int = setting(256, ge=1)
    rope_base: float = setting(500_000.0, gt=1.0)
    aux_loss_weight: float = setting(0.01, ge=0.0)
    z_loss_weight: float = setting(0.001, ge=0.0)
    text_loss_weight: float = setting(1.0, ge=0.0)
    dmel_loss_weight: float = setting(1.0, ge=0.0)
    flow_loss_weight: float = setting(1.0, ge=0.0)
    flow_hidden: int = setting(512, ge=1)
    flow_depth: int = setting(3, ge=1)
    flow_steps: int = setting(16, ge=1)
    norm_eps: float = setting(1e-6, gt=0.0)
    init_std: float = setting(0.02, gt=0.0)

    def __post_init__(self) -> None:
        validate(self)
        if self.heads % self.kv_heads:
            raise ValueError(f"ModelConfig.heads ({self.heads}) must be a multiple of kv_heads "
                             f"({self.kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.dim % 4:
            raise ValueError(f"ModelConfig.dim must be a multiple of 4 (the hMLP stem works at "
                             f"dim / 4), got {self.dim}")
        if self.top_k > self.n_experts:
            raise ValueError(f"ModelConfig.top_k ({self.top_k}) must be <= n_experts ({self.n_experts})")
        if not self.moe_every <= self.layers:
            raise ValueError(f"ModelConfig.moe_every must be in [0, layers={self.layers}], got {self.moe_every}")

    @property
    def expert_hidden(self) -> int:
        """Hidden width of one expert (``expert_ffn_dim`` or ``ffn_dim``)."""
        return self.ffn_dim if self.expert_ffn_dim is None else self.expert_ffn_dim

    def is_moe_layer(self, index: int) -> bool:
        """Whether block ``index`` (0-based) is an MoE block."""
        return self.moe_every > 0 and (index + 1) % self.moe_every == 0

    @property
    def moe_layers(self) -> int:
        """Number of MoE blocks."""
        return sum(self.is_moe_layer(i) for i in range(self.layers))
