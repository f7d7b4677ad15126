"""Patch grid sizing, patch layout and clip decoding of sample video (microturn.schemas.video)."""

import math
import subprocess

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from microturn.schemas.sample import SampleError
from microturn.schemas.video import decode_patches, patch_grid, patchify, unpatchify

sizes = st.integers(min_value=1, max_value=4000)
budgets = st.integers(min_value=1, max_value=600)


@pytest.mark.parametrize("width, height, budget, grid", [
    (320, 240, 48, (6, 8)),      # 4:3 fills the budget exactly
    (640, 480, 48, (6, 8)),
    (640, 360, 48, (5, 9)),      # 16:9: 45 patches keep the aspect better than 8x6 = 48
    (1920, 1080, 48, (5, 9)),
    (720, 1280, 48, (9, 5)),     # portrait
    (480, 320, 96, (8, 12)),
    (480, 320, 10_000, (8, 12)),  # never upscaled: at most side // 40 patches
    (30, 20, 48, (1, 1)),        # smaller than a patch: one patch a side
    (1000, 10, 48, (1, 25)),
    (400, 400, 1, (1, 1)),
])
def test_patch_grid_examples(width, height, budget, grid):
    assert patch_grid(width, height, patch_budget=budget) == grid


@pytest.mark.parametrize("kwargs", [dict(width=0, height=10, patch_budget=4), dict(width=10, height=-1, patch_budget=4),
                                    dict(width=10, height=10, patch_budget=0)])
def test_patch_grid_rejects_non_positive_values(kwargs):
    with pytest.raises(ValueError, match="must be positive"):
        patch_grid(kwargs.pop("width"), kwargs.pop("height"), **kwargs)


def test_patch_grid_rejects_non_integers():
    with pytest.raises(TypeError, match="integer"):
        patch_grid(320.0, 240, patch_budget=48)  # pyright: ignore[reportArgumentType]  # the float it refuses


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, budgets)
def test_patch_grid_fits_the_budget_and_the_source(width, height, budget):
    ph, pw = patch_grid(width, height, patch_budget=budget)
    assert ph >= 1 and pw >= 1 and ph * pw <= budget
    assert 40 * pw <= max(width, 40) and 40 * ph <= max(height, 40)  # no upscaling


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, budgets, st.integers(min_value=0, max_value=200))
def test_patch_grid_is_monotone_in_the_budget(width, height, budget, extra):
    ph, pw = patch_grid(width, height, patch_budget=budget)
    ph2, pw2 = patch_grid(width, height, patch_budget=budget + extra)
    assert ph2 >= ph and pw2 >= pw


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=40, max_value=4000), st.integers(min_value=40, max_value=4000), budgets)
def test_patch_grid_keeps_the_aspect_within_rounding(width, height, budget):
    # A source more elongated than the budget can hold must squash its short side to one patch;
    # otherwise each side is off by under one patch (half a patch when not held at its cap).
    assume(max(width / height, height / width) <= budget)
    ph, pw = patch_grid(width, height, patch_budget=budget)
    error = abs(math.log(pw / ph) - math.log(width / height))
    assert error <= math.log1p(1 / pw) + math.log1p(1 / ph)


@settings(max_examples=200, deadline=None)
@given(sizes, sizes, budgets)
def test_patch_grid_reaches_full_resolution_when_the_budget_allows(width, height, budget):
    cap_h, cap_w = max(1, height // 40), max(1, width // 40)
    assume(cap_h * cap_w <= budget)
    assert patch_grid(width, height, patch_budget=budget) == (cap_h, cap_w)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_patchify_and_unpatchify_are_exact_inverses(K, ph, pw, C, seed):
    rng = np.random.default_rng(seed)
    frames_FHWC = rng.integers(0, 256, (2 * K, 40 * ph, 40 * pw, C), dtype=np.uint8)
    patches_KPFHWC = patchify(frames_FHWC, ph, pw)
    assert patches_KPFHWC.shape == (K, ph * pw, 2, 40, 40, C)
    np.testing.assert_array_equal(unpatchify(patches_KPFHWC, ph, pw), frames_FHWC)
    np.testing.assert_array_equal(patchify(unpatchify(patches_KPFHWC, ph, pw), ph, pw), patches_KPFHWC)


def test_patch_order_is_row_major_and_two_frames_per_chunk():
    K, ph, pw = 2, 2, 3
    frames_FHWC = np.arange(2 * K * 80 * 120 * 3, dtype=np.int64).reshape(2 * K, 80, 120, 3)
    patches_KPFHWC = patchify(frames_FHWC, ph, pw)
    for k, p, f, y, x in [(0, 0, 0, 0, 0), (1, 4, 1, 7, 39), (1, 5, 0, 39, 2), (0, 2, 1, 20, 30)]:
        row, col = divmod(p, pw)
        assert patches_KPFHWC[k, p, f, y, x, 1] == frames_FHWC[2 * k + f, 40 * row + y, 40 * col + x, 1]


@pytest.mark.parametrize("shape", [(3, 80, 120, 3), (2, 80, 121, 3), (2, 40, 120, 3), (80, 120, 3)])
def test_patchify_rejects_frames_that_do_not_tile(shape):
    with pytest.raises(ValueError):
        patchify(np.zeros(shape, np.uint8), 2, 3)


def test_unpatchify_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="for a 2x2 grid"):
        unpatchify(np.zeros((1, 6, 2, 40, 40, 3), np.uint8), 2, 2)


def _ffmpeg_stdout(args, data=b""):
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args],
                          input=data, capture_output=True, check=True).stdout


def _lossless_clip(frames_FHWC):
    """RGB frames as lossless H.264 (libx264rgb, qp 0) in a fragmented MP4."""
    F, H, W, _ = frames_FHWC.shape
    return _ffmpeg_stdout(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "10", "-i", "-",
                           "-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast", "-f", "mp4",
                           "-movflags", "frag_keyframe+empty_moov", "-"], frames_FHWC.tobytes())


@pytest.fixture(scope="module")
def clip():
    frames_FHWC = np.random.default_rng(7).integers(0, 256, (6, 80, 120, 3), dtype=np.uint8)
    return frames_FHWC, _lossless_clip(frames_FHWC)


def test_decode_patches_returns_the_frames_as_patches(clip):
    frames_FHWC, data = clip
    patches_KPFHWC = decode_patches(data, patches_h=2, patches_w=3, chunks=3)
    assert patches_KPFHWC.dtype == np.uint8 and patches_KPFHWC.shape == (3, 6, 2, 40, 40, 3)
    np.testing.assert_array_equal(patches_KPFHWC, patchify(frames_FHWC, 2, 3))  # lossless in, exact out


@pytest.mark.parametrize("kwargs, match", [
    (dict(patches_h=2, patches_w=3, chunks=2), "has 6 frames; 2 chunks need exactly 4"),
    (dict(patches_h=2, patches_w=3, chunks=4), "has 6 frames; 4 chunks need exactly 8"),
    (dict(patches_h=2, patches_w=2, chunks=3), "is 120x80 px; meta.video says 80x80"),
    (dict(patches_h=3, patches_w=3, chunks=3), "is 120x80 px"),
])
def test_decode_patches_rejects_a_clip_that_breaks_its_meta(clip, kwargs, match):
    with pytest.raises(SampleError, match=match):
        decode_patches(clip[1], **kwargs)


def test_decode_patches_rejects_bytes_that_are_not_video(clip):
    with pytest.raises(SampleError, match="does not decode"):
        decode_patches(b"not a video at all" * 50, patches_h=2, patches_w=3, chunks=3)
    with pytest.raises(SampleError, match="does not decode|has [0-5] frames"):
        decode_patches(clip[1][: len(clip[1]) // 2], patches_h=2, patches_w=3, chunks=3)
    audio = _ffmpeg_stdout(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", "-f", "mp4",
                            "-movflags", "frag_keyframe+empty_moov", "-"])
    with pytest.raises(SampleError, match="no video stream"):
        decode_patches(audio, patches_h=2, patches_w=3, chunks=3)


def test_decode_patches_rejects_non_positive_geometry(clip):
    with pytest.raises(ValueError, match="chunks must be positive"):
        decode_patches(clip[1], patches_h=2, patches_w=3, chunks=0)
