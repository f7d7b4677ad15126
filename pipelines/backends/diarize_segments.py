"""Local segmentation for the embedded diarizer: windows, the PyanNet model, tracks.

Steps 1 and 2 of :mod:`.embedded_diarizer`'s recipe: where the 5 s windows go (every
``step_s``, skipping those without speech), the pyannote segmentation model bundled in the
whisperx wheel run on them (loaded without unpickling, with a faster shared filterbank), and the
chaining of consecutive windows' local speakers into tracks.

Only ``wave_N`` (audio samples) carries a suffix of :mod:`microturn.schemas.legend`; the other
arrays have axes the legend has no letter for (windows, segmentation frames of a window, local
speakers, active pairs, filterbank filters and outputs, speech regions), so they are named in
words and their axes are stated where they are made.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F_nn
from scipy.optimize import linear_sum_assignment
from torch.torch_version import TorchVersion

from .base import SAMPLE_RATE, Region

__all__ = [
    "FrameGrid",
    "Segmenter",
    "default_segmentation_path",
    "link_tracks",
    "load_segmentation",
    "merged_regions",
]


def default_segmentation_path() -> Path:
    """Path of the pyannote segmentation checkpoint that ships inside the whisperx wheel."""
    import whisperx

    path = Path(whisperx.__file__).resolve().parent / "assets" / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"the segmentation model is missing from the whisperx wheel ({path}); reinstall "
            "whisperx (pip install -c requirements.lock whisperx) or pass "
            "EmbeddedDiarizerConfig(segmentation_path=...)"
        )
    return path


_LOAD_LOCK = threading.Lock()


def load_segmentation(path: Path) -> torch.nn.Module:
    """Load a PyanNet checkpoint without unpickling arbitrary objects.

    ``pyannote.audio.Model.from_pretrained`` calls ``torch.load(weights_only=False)``. Here the
    checkpoint is read with ``weights_only=True``, allowing only the plain data classes that
    the Lightning checkpoint stores (omegaconf containers, pyannote's task specification and
    enums), and the network is rebuilt from its hyper-parameters: same weights, same outputs.
    """
    import omegaconf
    from pyannote.audio.core.model import Introspection
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    allowed = [
        omegaconf.listconfig.ListConfig,
        omegaconf.base.ContainerMetadata,
        omegaconf.base.Metadata,
        omegaconf.nodes.AnyNode,
        Any,
        list,
        dict,
        int,
        collections.defaultdict,
        TorchVersion,
        Introspection,
        Specifications,
        Problem,
        Resolution,
    ]
    try:
        # safe_globals edits a process-wide allow-list: two Beam worker threads loading at once
        # would remove each other's entries, so loads are serialised.
        with _LOAD_LOCK, torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's message names the global it refused
        raise RuntimeError(f"cannot load the segmentation checkpoint {path} safely: {error}") from error
    meta = checkpoint["pyannote.audio"]
    if meta["architecture"].get("class") != "PyanNet":
        raise RuntimeError(f"{path}: expected a PyanNet checkpoint, found {meta['architecture']}")
    specifications = meta["specifications"]
    if specifications.problem != Problem.MULTI_LABEL_CLASSIFICATION:
        # A powerset model (pyannote 3.x) would need its outputs decoded to multi-label first.
        raise RuntimeError(
            f"{path}: expected a multi-label segmentation model, found {specifications.problem}"
        )
    hparams = checkpoint["hyper_parameters"]
    model = PyanNet(
        sincnet=dict(hparams["sincnet"]),
        lstm=dict(hparams["lstm"]),
        linear=dict(hparams["linear"]),
        sample_rate=int(hparams["sample_rate"]),
        num_channels=int(hparams["num_channels"]),
    )
    model.specifications = specifications
    model.build()
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()


@dataclass(frozen=True, kw_only=True, slots=True)
class FrameGrid:
    """Geometry of the segmentation frames, read from the model.

    Window ``c`` starting at global frame ``starts[c]`` covers samples
    ``[start * step, start * step + window_samples)``; its frame ``f`` is global frame
    ``start + f``, centred ``start * step + f * step + centre`` samples into the audio.
    """

    window_samples: int  # 80 000 (5 s)
    step: int  # samples between frames: 270 (16.875 ms)
    centre: float  # centre of frame 0, in samples from the window start
    per_window: int  # frames of one window: 293

    @property
    def frame_s(self) -> float:
        """Seconds between frames."""
        return self.step / SAMPLE_RATE


def merged_regions(speech: list[Region]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged region bounds in ms, ``(starts, ends)`` with one entry per region (empty
    regions dropped)."""
    spans = sorted((r.start_ms, r.end_ms) for r in speech if r.end_ms > r.start_ms)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    bounds = np.asarray(merged, dtype=np.float64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


class Segmenter:
    """The PyanNet multi-label segmentation model at ``path``, run on 5 s windows.

    ``batch_size`` windows go through the model per forward pass. Call under
    ``torch.inference_mode()``.
    """

    def __init__(self, path: Path, *, batch_size: int) -> None:
        # PyanNet builds its layers at run time from its hyper-parameters (sincnet, lstm,
        # linear, classifier), which torch.nn.Module's static typing cannot follow.
        model: Any = load_segmentation(path)
        self.model = model
        self.batch_size = batch_size
        specs = model.specifications
        window_samples = round(specs.duration * SAMPLE_RATE)
        frames = model.receptive_field
        self.grid = FrameGrid(
            window_samples=window_samples,
            step=round(frames.step * SAMPLE_RATE),
            centre=(frames.start + frames.duration / 2) * SAMPLE_RATE,
            per_window=int(model.num_frames(window_samples)),
        )
        # The shared-filterbank path of __call__ relies on PyanNet's layout: a monolithic LSTM
        # and window starts on the filterbank stride (270 samples = 27 strides of 10).
        sinc = model.sincnet
        self._sinc_stride = int(sinc.conv1d[0].stride)
        if not model.hparams.lstm["monolithic"] or self.grid.step % self._sinc_stride:
            raise RuntimeError(f"{path}: unsupported PyanNet layout")
        with torch.inference_mode():
            self._sinc_filters = sinc.conv1d[0].get_filters().detach().clone()  # [filter 80, 1, tap 251]
        self._sinc_sums = self._sinc_filters.sum(dim=(1, 2))  # [filter]

    def window_starts(
        self, num_samples: int, regions: tuple[np.ndarray, np.ndarray], *, step_s: float
    ) -> np.ndarray:
        """Start frames (global grid) of the windows to segment, one per window: every
        ``step_s``, plus one flush with the end of the audio, minus those without speech
        (``regions`` as from :func:`merged_regions`). ``num_samples`` is at least one window."""
        step, window = self.grid.step, self.grid.window_samples
        step_frames = max(1, round(step_s * SAMPLE_RATE / step))
        last = (num_samples - window) // step
        every_step = list(range(0, last + 1, step_frames))
        if every_step[-1] != last:
            every_step.append(last)
        starts = np.asarray(every_step, dtype=np.int64)
        begin_ms = starts * step * 1000 / SAMPLE_RATE
        end_ms = begin_ms + window * 1000 / SAMPLE_RATE
        region_starts, region_ends = regions
        # The last region starting before a window's end overlaps it iff it ends after the
        # window's start (merged regions have increasing ends).
        last_region = np.searchsorted(region_starts, end_ms, side="left") - 1
        keep = (last_region >= 0) & (region_ends[np.maximum(last_region, 0)] > begin_ms)
        return starts[keep]

    def __call__(self, wave_N: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Local speaker activations (sigmoid probabilities), [window, frame, local speaker].

        Same result as the model applied to each window (to ~3e-4, float rounding), faster:
        PyanNet starts with an instance norm of the waveform (an affine map per window) and a
        linear strided filterbank, so the filterbank runs once over the audio a batch covers
        and each window gets its normalisation afterwards as ``scale * conv + shift * sum(h)``.
        This made the filterbank, a third of the model's time, ~3x cheaper (one long
        convolution is also more efficient than many 5 s ones).
        """
        model = self.model
        sinc = model.sincnet
        step, window = self.grid.step, self.grid.window_samples
        stride = self._sinc_stride
        conv_frames = (window - self._sinc_filters.shape[-1]) // stride + 1
        norm = sinc.wav_norm1d
        gamma, beta, eps = float(norm.weight), float(norm.bias), float(norm.eps)
        out = []
        for i in range(0, len(starts), self.batch_size):
            offsets = starts[i : i + self.batch_size] * step  # first sample of each window
            windows = np.stack([wave_N[s : s + window] for s in offsets])  # [window, sample]
            mean = windows.mean(axis=1, dtype=np.float64)
            std = np.sqrt(windows.var(axis=1, dtype=np.float64) + eps)
            scale = torch.from_numpy(gamma / std).float()[:, None, None]
            shift = torch.from_numpy(beta - gamma * mean / std).float()[:, None, None]
            # One filterbank pass per run of overlapping windows (a run never spans a long
            # silence, whose windows were skipped), each window then sliced out of it.
            pieces = []
            run_starts = [0] + [k for k in range(1, len(offsets)) if offsets[k] >= offsets[k - 1] + window]
            for a, b in zip(run_starts, run_starts[1:] + [len(offsets)], strict=True):
                lo, hi = int(offsets[a]), int(offsets[b - 1]) + window
                filtered = F_nn.conv1d(  # [filter, output]
                    torch.from_numpy(wave_N[lo:hi])[None, None], self._sinc_filters,
                    stride=stride,
                )[0]
                pieces += [filtered[:, o : o + conv_frames] for o in ((offsets[a:b] - lo) // stride)]
            x = torch.stack(pieces)  # [window, filter 80, output], contiguous: the in-place ops below are cheap
            x.mul_(scale).add_(shift * self._sinc_sums[None, :, None]).abs_()
            x = F_nn.leaky_relu(sinc.norm1d[0](sinc.pool1d[0](x)))
            for conv, pool, inorm in zip(sinc.conv1d[1:], sinc.pool1d[1:], sinc.norm1d[1:], strict=True):
                x = F_nn.leaky_relu(inorm(pool(conv(x))))
            x, _ = model.lstm(x.transpose(1, 2))
            for linear in model.linear:
                x = F_nn.leaky_relu(linear(x))
            out.append(model.activation(model.classifier(x)).numpy())
        return np.concatenate(out, axis=0)


def link_tracks(
    on: np.ndarray,
    starts: np.ndarray,
    pairs: np.ndarray,
    *,
    grid: FrameGrid,
    link_iou: float,
    link_min_s: float,
) -> np.ndarray:
    """Track id of every active pair (0 .. tracks - 1, in order of first window).

    ``pairs`` holds the (window, local speaker) of each active pair and ``on`` the binarised
    activity, [window, frame, local speaker]. Consecutive windows' local speakers are chained
    when their activity on the shared frames has ``link_iou`` intersection over union and
    ``link_min_s`` of common speech; links are one-to-one (optimal assignment on the IoU), so a
    track holds at most one local speaker per window.
    """
    per_window = grid.per_window
    frame_s = grid.frame_s
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index = {(int(c), int(local)): a for a, (c, local) in enumerate(pairs)}
    by_window: dict[int, list[int]] = collections.defaultdict(list)
    for c, local in index:
        by_window[c].append(local)
    for c in range(len(starts) - 1):
        shift = int(starts[c + 1] - starts[c])
        if shift >= per_window or c not in by_window or c + 1 not in by_window:
            continue
        left, right = by_window[c], by_window[c + 1]
        # [shared frame, local speaker of that window]
        seen_by_left = on[c, shift:][:, left].astype(np.int32)  # shared frames, seen by c
        seen_by_right = on[c + 1, : per_window - shift][:, right].astype(np.int32)  # ... and by c + 1
        inter = seen_by_left.T @ seen_by_right
        union = seen_by_left.sum(0)[:, None] + seen_by_right.sum(0)[None, :] - inter
        iou = inter / np.maximum(union, 1)
        ok = (iou >= link_iou) & (inter * frame_s >= link_min_s)
        rows, cols = linear_sum_assignment(-np.where(ok, iou, -1.0))
        for r, k in zip(rows, cols, strict=True):
            if ok[r, k]:
                parent[root(index[(c, left[r])])] = root(index[(c + 1, right[k])])
    roots = np.array([root(a) for a in range(len(pairs))])
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return rank[inverse]


def hysteresis(activation: np.ndarray, *, onset: float, offset: float) -> np.ndarray:
    """Binarise activations [window, frame, local speaker] with hysteresis: a run of frames at
    or above ``offset`` is on when one of its frames reaches ``onset`` (``offset <= onset``).
    Speech fades out below the level it starts at; one threshold either cuts word endings or
    lets noise in."""
    high = activation >= onset
    if offset >= onset:
        return high
    low = activation >= offset
    num_windows, num_frames, num_local = activation.shape
    # Runs of `low` along frames, labelled per (window, local speaker) row.
    rows_low = low.transpose(0, 2, 1).reshape(-1, num_frames)
    rows_high = high.transpose(0, 2, 1).reshape(-1, num_frames)
    starts = rows_low & ~np.concatenate([np.zeros((len(rows_low), 1), bool), rows_low[:, :-1]], axis=1)
    label = np.cumsum(starts, axis=1) * rows_low  # 0 outside runs, 1.. per run within a row
    keep = np.zeros_like(rows_low)
    for r in np.flatnonzero(rows_high.any(axis=1)):
        good = np.unique(label[r][rows_high[r]])
        keep[r] = np.isin(label[r], good[good > 0])
    return keep.reshape(num_windows, num_local, num_frames).transpose(0, 2, 1)
