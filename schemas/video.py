"""Video of a micro-turn sample: patch grid sizing, patch layout and clip decoding.

A sample's ``video.mp4`` holds 10 fps frames whose sides are multiples of 40 px. The loader
decodes it and cuts it into temporal patches of 2 frames x 40 x 40 x 3 (one per 200 ms chunk
and grid cell), the input of the model's hMLP patch embedding.

Shape suffixes follow :mod:`microturn.schemas.legend`: K chunks, P = patches_h * patches_w
patches per chunk (row-major), F video frames (F = 2 K), H and W frame height and width in pixels,
C = 3 colour channels (RGB); inside a patch 2 frames x 40 x 40 px.
"""

from __future__ import annotations

import io

import numpy as np

from microturn.schemas.sample import FRAMES_PER_PATCH, PATCH_PX, SampleError

DEFAULT_PATCH_BUDGET = 48
"""The shard stage's default patches per chunk (``pipelines.shard.video.VideoSpec``, where the
choice is explained) and so the grid a model saw in training for a video of a given size; the
live session scales its video to the same grid."""

__all__ = ["decode_patches", "patch_grid", "patchify", "unpatchify"]


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _side(length: int, num: int, den: int, cap: int) -> int:
    """Patches along a side of ``length`` px at the scale ``num / den``: rounded, in 1..``cap``."""
    # floor(length * s / 40 + 1/2) in integers
    return min(cap, max(1, (2 * length * num + PATCH_PX * den) // (2 * PATCH_PX * den)))


def patch_grid(width: int, height: int, *, patch_budget: int) -> tuple[int, int]:
    """The patch grid ``(patches_h, patches_w)`` of a ``width`` x ``height`` video.

    The frame is scaled uniformly by a factor ``s`` and each side is rounded to a whole number
    of 40 px patches (at least 1, and at most ``side // 40`` so that no side is upscaled; a
    side under 40 px still gets one patch). The grid is the one of the largest ``s`` whose
    grid holds at most ``patch_budget`` patches. Because both sides only grow with ``s``, a
    larger budget never gives a smaller grid on either side, and rounding keeps the aspect
    error of each side under half a patch (a side held at its cap loses under one patch).

    Examples at a budget of 48: 4:3 320x240 gives (6, 8); 16:9 1920x1080 gives (5, 9), 45
    patches in the source's shape rather than 48 in a 4:3 one. A source more elongated than
    the budget allows keeps one patch on its short side. Raises ``ValueError`` for
    non-positive sizes or budget (``TypeError`` for non-integers).
    """
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    budget = _positive_int("patch_budget", patch_budget)
    cap_w, cap_h = max(1, width // PATCH_PX), max(1, height // PATCH_PX)
    # A side of L px reaches k + 1 patches at the scale s = 20 (2 k + 1) / L (where L s / 40 =
    # k + 1/2); the grid changes only there. Walk those scales of both sides in increasing
    # order (compared exactly, by cross-multiplying), computing both sides at each: two sides
    # that step at the same scale thereby step together.
    kw = kh = 1
    best = (1, 1)
    while kw < cap_w or kh < cap_h:
        if kh >= cap_h or (kw < cap_w and (2 * kw + 1) * height <= (2 * kh + 1) * width):
            num, den = (PATCH_PX // 2) * (2 * kw + 1), width
            kw += 1
        else:
            num, den = (PATCH_PX // 2) * (2 * kh + 1), height
            kh += 1
        grid = (_side(height, num, den, cap_h), _side(width, num, den, cap_w))
        if grid[0] * grid[1] > budget:
            break
        best = grid
    return best


def patchify(frames_FHWC: np.ndarray, patches_h: int, patches_w: int) -> np.ndarray:
    """Frames ``[F, H, W, C]`` (F = 2 K, H = 40 patches_h, W = 40 patches_w) to ``[K, P, 2, 40, 40, C]``.

    Patch ``p`` of chunk ``k`` is grid row ``p // patches_w``, column ``p % patches_w`` of
    frames ``2 k`` and ``2 k + 1``. :func:`unpatchify` is the exact inverse.
    """
    ph, pw = _positive_int("patches_h", patches_h), _positive_int("patches_w", patches_w)
    if frames_FHWC.ndim != 4:
        raise ValueError(f"frames must be [F, H, W, C], got shape {frames_FHWC.shape}")
    F, H, W, C = frames_FHWC.shape
    if F % FRAMES_PER_PATCH or (H, W) != (ph * PATCH_PX, pw * PATCH_PX):
        raise ValueError(f"frames of shape {frames_FHWC.shape} do not tile into {ph}x{pw} patches of "
                         f"{FRAMES_PER_PATCH}x{PATCH_PX}x{PATCH_PX}: need an even F and "
                         f"H, W = {ph * PATCH_PX}, {pw * PATCH_PX}")
    K = F // FRAMES_PER_PATCH
    x = frames_FHWC.reshape(K, FRAMES_PER_PATCH, ph, PATCH_PX, pw, PATCH_PX, C)
    x = x.transpose(0, 2, 4, 1, 3, 5, 6)  # [K, ph, pw, 2, 40, 40, C]
    return np.ascontiguousarray(x).reshape(K, ph * pw, FRAMES_PER_PATCH, PATCH_PX, PATCH_PX, C)


def unpatchify(patches_KPFHWC: np.ndarray, patches_h: int, patches_w: int) -> np.ndarray:
    """Patches ``[K, P, 2, 40, 40, C]`` back to frames ``[2 K, 40 patches_h, 40 patches_w, C]``."""
    ph, pw = _positive_int("patches_h", patches_h), _positive_int("patches_w", patches_w)
    shape = patches_KPFHWC.shape
    if patches_KPFHWC.ndim != 6 or shape[1] != ph * pw or shape[2:5] != (FRAMES_PER_PATCH, PATCH_PX, PATCH_PX):
        raise ValueError(f"patches must be [K, {ph * pw}, {FRAMES_PER_PATCH}, {PATCH_PX}, {PATCH_PX}, C] "
                         f"for a {ph}x{pw} grid, got shape {shape}")
    K, C = shape[0], shape[5]
    x = patches_KPFHWC.reshape(K, ph, pw, FRAMES_PER_PATCH, PATCH_PX, PATCH_PX, C)
    x = x.transpose(0, 3, 1, 4, 2, 5, 6)  # [K, 2, ph, 40, pw, 40, C]
    return np.ascontiguousarray(x).reshape(K * FRAMES_PER_PATCH, ph * PATCH_PX, pw * PATCH_PX, C)


def decode_patches(clip: bytes, *, patches_h: int, patches_w: int, chunks: int) -> np.ndarray:
    """Decode a sample's ``video.mp4`` to uint8 RGB patches ``[K, P, 2, 40, 40, 3]``.

    The clip must hold exactly ``2 * chunks`` frames of ``40 patches_w`` x ``40 patches_h``
    px; anything else (another size or count, bytes that are not a video) raises
    :class:`~microturn.schemas.sample.SampleError`.
    """
    import av  # PyAV: only the loader decodes, so the schemas import without it
    from av.error import FFmpegError

    ph, pw = _positive_int("patches_h", patches_h), _positive_int("patches_w", patches_w)
    K = _positive_int("chunks", chunks)
    n_frames, H, W = K * FRAMES_PER_PATCH, ph * PATCH_PX, pw * PATCH_PX
    patches_KPFHWC = np.empty((K, ph * pw, FRAMES_PER_PATCH, PATCH_PX, PATCH_PX, 3), dtype=np.uint8)
    count = 0
    try:
        with av.open(io.BytesIO(bytes(clip)), mode="r") as container:
            if not container.streams.video:
                raise SampleError("video.mp4 holds no video stream")
            stream = container.streams.video[0]
            # One thread per clip: loader workers decode samples in parallel, and extra decoder
            # or swscale threads only add contention (one core, a 30 s clip of 12x8 patches:
            # RGB frames at 1280 frames/s single-threaded, 780 with PyAV's default threads).
            stream.thread_type = "NONE"
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (W, H):
                    raise SampleError(f"video.mp4 frame {count} is {frame.width}x{frame.height} px; "
                                      f"meta.video says {W}x{H} ({pw}x{ph} patches of {PATCH_PX} px)")
                if count < n_frames:
                    # Write each frame straight into its patch slots (the layout of patchify):
                    # one copy instead of a frame buffer plus a transposed copy of it.
                    rgb_HWC = frame.to_ndarray(format="rgb24", threads=1)
                    slots = patches_KPFHWC[count // FRAMES_PER_PATCH, :, count % FRAMES_PER_PATCH]
                    slots.reshape(ph, pw, PATCH_PX, PATCH_PX, 3)[...] = \
                        rgb_HWC.reshape(ph, PATCH_PX, pw, PATCH_PX, 3).transpose(0, 2, 1, 3, 4)
                count += 1
    except FFmpegError as exc:
        raise SampleError(f"video.mp4 does not decode: {exc}") from None
    if count != n_frames:
        raise SampleError(f"video.mp4 has {count} frames; {K} chunks need exactly {n_frames} "
                          f"({FRAMES_PER_PATCH} per chunk at 10 fps)")
    return patches_KPFHWC
