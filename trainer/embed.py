"""Input embeddings of the interleaved micro-turn sequence (early fusion).

Every position of a batch (``trainer_spec``: ``kind_BL`` says what it holds) becomes one vector
of the residual stream, the sum of

* the embedding of its kind (9 rows, one per ``Kind``). Marker positions (CHUNK_MARK,
  MODEL_MARK) carry nothing else, so their kind rows *are* the markers' learned embeddings; a
  second marker table would only add a row that is always summed with the same kind row;
* its content, by modality:
  - text (USER_TEXT, BACKGROUND_TEXT, MODEL_TEXT): a row of the text table, shared by the three
    text streams (the kind row tells them apart);
  - audio (USER_AUDIO, MODEL_AUDIO): the dMel embedding, one table of 80 x 16 rows (row
    ``16 c + b`` for bin b of mel channel c) summed over the 80 channels of the frame;
  - video (VIDEO): the :class:`HMLPStem` of the position's temporal patch.

Shape suffixes follow :mod:`microturn.schemas.legend`: B batch rows, L positions, U = B L
positions flattened, D model width, M = 80 mel channels, P video patches, F = 2 frames per patch,
H = W = 40 pixels, C = 3 colours, Z side of the grid of sub-patches, Y values of one sub-patch
(flattened), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from microturn.schemas.sample import DMEL_BINS, FRAMES_PER_PATCH, N_MELS, PATCH_PX
from microturn.trainer.config import ModelConfig

_SUB_PX = 10  # first hMLP stage: 10 x 10 pixel sub-patches, a 4 x 4 grid per 40 x 40 patch
_N_KINDS = 9  # Kind has PAD..BACKGROUND_TEXT = 0..8 (trainer_spec); 8 before sequence layout 3
_N_KINDS_BEFORE_BACKGROUND = 8  # the kind table of checkpoints of sequence layouts 1-2


def kind_enum():
    """The ``Kind`` enum of the batch contract (``microturn.trainer.batch``), imported late so
    that this module loads on its own."""
    from microturn.trainer.batch import Kind

    return Kind


class DmelEmbedding(nn.Module):
    """dMel frame embedding: ``sum_c table[16 c + bins[c]]`` over the 80 channels.

    One gather-and-sum (``F.embedding_bag`` in ``sum`` mode), so the [80, D] rows of a frame are
    never materialised.
    """

    offsets_M: torch.Tensor  # a registered buffer (pyright sees Module attributes as Tensor | Module)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(N_MELS * DMEL_BINS, dim)
        self.register_buffer("offsets_M", torch.arange(N_MELS) * DMEL_BINS, persistent=False)

    def forward(self, dmel_BLM: torch.Tensor) -> torch.Tensor:
        """uint8 [B, L, 80] bins (0..15) -> [B, L, D]."""
        if dmel_BLM.shape[-1] != N_MELS:
            raise ValueError(f"dMel frames must have {N_MELS} channels, got shape {tuple(dmel_BLM.shape)}")
        rows_UM = (dmel_BLM.reshape(-1, N_MELS).long() + self.offsets_M)
        x_UD = F.embedding_bag(rows_UM, self.table.weight, mode="sum")
        return x_UD.reshape(*dmel_BLM.shape[:-1], -1)


class HMLPStem(nn.Module):
    """hMLP stem (Touvron et al. 2022, "Three things everyone should know about ViTs"): a
    temporal patch of 2 x 40 x 40 x 3 pixels -> one D vector, by per-patch linear layers that
    merge neighbours progressively.

    Stage 1: a 4 x 4 grid of 10 x 10 sub-patches, each flattened with both frames (so time is
    mixed from the first layer: 2 x 10 x 10 x 3 = 600 values) -> linear -> LayerNorm -> GELU.
    Stage 2: 2 x 2 neighbours concatenated (20 x 20 pixels) -> linear -> LayerNorm -> GELU.
    Stage 3: the last 2 x 2 concatenated (the whole 40 x 40 patch) -> linear -> D.
    Stages 1-2 are D / 4 wide, as in the hMLP of the paper. Norms are per token (LayerNorm,
    not the paper's BatchNorm), so a patch's output depends on its own pixels only: patches are
    independent and the stem gives the same vector for a patch whatever else is in the batch.
    Pixels are mapped from 0..255 to [-1, 1].
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        width = dim // 4
        sub_pixels = FRAMES_PER_PATCH * _SUB_PX * _SUB_PX * 3
        self.stage1 = nn.Linear(sub_pixels, width)
        self.norm1 = nn.LayerNorm(width)
        self.stage2 = nn.Linear(4 * width, width)
        self.norm2 = nn.LayerNorm(width)
        self.stage3 = nn.Linear(4 * width, dim)

    @staticmethod
    def _merge(x_PZZD: torch.Tensor) -> torch.Tensor:
        """Concatenate 2 x 2 neighbours: [P, Z, Z, D] -> [P, Z / 2, Z / 2, 4 D]."""
        n, g, _, d = x_PZZD.shape
        x = x_PZZD.reshape(n, g // 2, 2, g // 2, 2, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, g // 2, g // 2, 4 * d)

    def forward(self, video_PFHWC: torch.Tensor) -> torch.Tensor:
        """uint8 [P, 2, 40, 40, 3] -> [P, D]."""
        expected = (FRAMES_PER_PATCH, PATCH_PX, PATCH_PX, 3)
        if video_PFHWC.dim() != 5 or tuple(video_PFHWC.shape[1:]) != expected:
            raise ValueError(f"video patches must be [P, {', '.join(map(str, expected))}], got "
                             f"{tuple(video_PFHWC.shape)}")
        n = video_PFHWC.shape[0]
        grid = PATCH_PX // _SUB_PX
        pixels = video_PFHWC.to(self.stage1.weight.dtype) / 127.5 - 1.0
        x = pixels.reshape(n, FRAMES_PER_PATCH, grid, _SUB_PX, grid, _SUB_PX, 3)
        # flatten, not reshape(..., -1): the stem also runs on P = 0 patches (see InputEmbedding).
        x_PZZY = x.permute(0, 2, 4, 1, 3, 5, 6).flatten(3)
        x = F.gelu(self.norm1(self.stage1(x_PZZY)))
        x = F.gelu(self.norm2(self.stage2(self._merge(x))))
        return self.stage3(self._merge(x).flatten(1))


class InputEmbedding(nn.Module):
    """Batch dict (``trainer_spec``) -> residual stream ``x_BLD``.

    Each modality is embedded and scattered to the positions whose kind holds it; every position
    also gets its kind embedding. PAD positions get the PAD kind row only.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        kind = kind_enum()
        if len(kind) != _N_KINDS:
            raise ValueError(f"Kind has {len(kind)} members, this embedding was built for {_N_KINDS}")
        self.kinds = {k.name: int(k) for k in kind}
        self.kind = nn.Embedding(_N_KINDS, cfg.dim)
        self.text = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.dmel = DmelEmbedding(cfg.dim)
        self.video = HMLPStem(cfg.dim)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Refuse, by name, the kind table of a checkpoint made before background text (8 rows):
        loaded, it would be torch's shape-mismatch error, which does not say why."""
        rows = state_dict.get(prefix + "kind.weight")
        if isinstance(rows, torch.Tensor) and rows.dim() == 2 and rows.shape[0] == _N_KINDS_BEFORE_BACKGROUND:
            raise ValueError(f"{prefix}kind.weight has {_N_KINDS_BEFORE_BACKGROUND} rows: a checkpoint made before "
                             f"background text (sequence layout 3 added Kind.BACKGROUND_TEXT, {_N_KINDS} kinds); "
                             "it cannot read this layout: retrain the run with this version")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``batch`` with kind_BL, text_BL, dmel_BLM, video_PFHWC, video_BL -> [B, L, D]."""
        k = self.kinds
        kind_BL = batch["kind_BL"]
        if kind_BL.dim() != 2:
            raise ValueError(f"kind_BL must be [B, L], got shape {tuple(kind_BL.shape)}")
        x_BLD = self.kind(kind_BL)
        zero = x_BLD.new_zeros(())
        is_text_BL1 = ((kind_BL == k["USER_TEXT"]) | (kind_BL == k["MODEL_TEXT"])
                       | (kind_BL == k["BACKGROUND_TEXT"])).unsqueeze(-1)
        x_BLD = x_BLD + torch.where(is_text_BL1, self.text(batch["text_BL"]), zero)
        is_audio_BL1 = ((kind_BL == k["USER_AUDIO"]) | (kind_BL == k["MODEL_AUDIO"])).unsqueeze(-1)
        x_BLD = x_BLD + torch.where(is_audio_BL1, self.dmel(batch["dmel_BLM"]), zero)
        video_PFHWC = batch["video_PFHWC"]
        is_video_BL = kind_BL == k["VIDEO"]
        # The stem runs even on no patches, so that its parameters get (zero) gradients on every
        # rank: ZeRO 1/2 fill their reduction buckets from backward hooks, and a rank whose batch
        # has no video would otherwise send smaller buckets than a rank with video (gloo:
        # "Received data size doesn't match expected size").
        if video_PFHWC.shape[0] == 0 and not torch.is_grad_enabled():
            if bool(is_video_BL.any()):
                raise ValueError("the batch has VIDEO positions but video_PFHWC holds no patches")
            return x_BLD  # nothing to embed and no gradient to keep in step (decoding, eval)
        patches_PD = self.video(video_PFHWC)
        if video_PFHWC.shape[0] > 0:
            index_BL = batch["video_BL"].clamp(min=0)
            x_BLD = x_BLD + torch.where(is_video_BL.unsqueeze(-1), patches_PD[index_BL], zero)
        elif bool(is_video_BL.any()):
            raise ValueError("the batch has VIDEO positions but video_PFHWC holds no patches")
        else:
            x_BLD = x_BLD + patches_PD.sum()  # a 0 with the stem in its graph
        return x_BLD
