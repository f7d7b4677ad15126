"""The shard stage's parts: streams and gates, label bits, the shard plan, the tar layout."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.shard.labels import mark_spans, stream_labels
from microturn.pipelines.shard.plan import bucket_count, bucket_of, first_indices, plan_bucket, shard_name
from microturn.pipelines.shard.streams import build_stream, gate, intervals_intersect, intervals_union
from microturn.pipelines.shard.tar import TarWriter, archive_bytes, member_bytes
from microturn.schemas.sample import Label
from microturn.schemas.turns import Turn, split_backchannels


def test_gate_is_one_inside_and_ramps_outside():
    g = gate([(100, 200)], 16 * 400, fade_ms=10)
    assert (g[1600:3200] == 1).all()
    assert g[1600 - 160 - 1] == 0 and g[3200 + 160] == 0
    assert 0 < g[1600 - 80] < 1 and 0 < g[3200 + 80] < 1
    assert np.all(np.diff(g[1600 - 160:1600]) > 0)  # fade in rises
    assert np.all(np.diff(g[3200:3200 + 160]) < 0)  # fade out falls


def test_gate_clips_at_the_media_end():
    g = gate([(0, 500)], 16 * 300, fade_ms=10)
    assert g.shape == (4800,) and (g == 1).all()


def test_per_speaker_streams_never_mix_channels():
    n = 16 * 1000
    a, b = np.full(n, 0.25, np.float32), np.full(n, -0.5, np.float32)
    segs = [Turn("A", 0, 600, 0), Turn("B", 400, 1000, 1)]
    sa = build_stream(frozenset("A"), audio={0: a, 1: b}, segments=segs)
    sb = build_stream(frozenset("B"), audio={0: a, 1: b}, segments=segs)
    assert np.array_equal(sa.wave_N, a) and np.array_equal(sb.wave_N, b)
    assert sa.leaks_ms == () and sb.leaks_ms == ()


def test_mixed_stream_is_gated_and_reports_leaks():
    n = 16 * 2000
    mix = np.full(n, 0.5, np.float32)
    segs = [Turn("A", 0, 1000, 0), Turn("B", 800, 2000, 0)]
    sa = build_stream(frozenset("A"), audio={0: mix}, segments=segs, fade_ms=10)
    assert (sa.wave_N[: 16 * 1000] == 0.5).all()
    assert (sa.wave_N[16 * 1010:] == 0).all()
    assert sa.leaks_ms == ((800, 1010),)  # B talks while A's gate (plus its fade) is open


def test_interval_helpers():
    assert intervals_union([(5, 7), (0, 2), (1, 3), (7, 9), (4, 4)]) == [(0, 3), (5, 9)]
    assert intervals_intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]


def test_span_marks_every_chunk_it_touches_and_no_more():
    bits = np.zeros(5, np.uint16)  # the labels' dtype since schema version 3
    mark_spans(bits, [(199, 400)], Label.VOICED)  # ends on a boundary: chunk 2 stays clear
    assert bits.tolist() == [1, 1, 0, 0, 0]


def test_labels_of_a_small_exchange():
    segs = [Turn("A", 0, 1000, 0), Turn("B", 300, 700, 1), Turn("B", 1100, 2000, 1), Turn("A", 1800, 2400, 0)]
    main, bc = split_backchannels(segs)
    assert [t.speaker for t in bc] == ["B"]  # 300-700 lies inside A's turn
    speech_a, speech_b = [(0, 1000), (1800, 2400)], [(300, 700), (1100, 2000)]  # talking all through the turns
    a = stream_labels(13, speakers=frozenset("A"), speech_ms=speech_a, other_speech_ms=speech_b, main_turns=main,
                      backchannels=bc, word_starts_ms=[0, 1850], interruptions_ms=[], leaks_ms=[])
    b = stream_labels(13, speakers=frozenset("B"), speech_ms=speech_b, other_speech_ms=speech_a, main_turns=main,
                      backchannels=bc, word_starts_ms=[300, 1100], interruptions_ms=[1800], leaks_ms=[(300, 310)])
    on = lambda bits, flag: [i for i, v in enumerate(bits) if v & flag]  # noqa: E731
    assert on(a, Label.VOICED) == [0, 1, 2, 3, 4, 9, 10, 11]
    assert on(a, Label.TURN_START) == [0, 9] and on(a, Label.TURN_END) == [4, 11]
    assert on(a, Label.WORD_START) == [0, 9]
    assert on(b, Label.BACKCHANNEL) == [1, 2, 3]
    assert on(b, Label.TURN_START) == [5] and on(b, Label.TURN_END) == [9]
    assert on(a, Label.OVERLAP) == on(b, Label.OVERLAP) == [1, 2, 3, 9]
    assert on(b, Label.INTERRUPT) == [9] and on(b, Label.LEAK) == [1]
    assert not any(v & Label.BACKCHANNEL for v in a)


def _members(key: str, sizes: list[int]) -> list[tuple[str, bytes]]:
    return [(f"{key}.f{i}.bin", bytes([i % 251]) * s) for i, s in enumerate(sizes)]


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None, member.name  # the writer writes regular files only
    return f.read()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3000), min_size=1, max_size=4), min_size=1, max_size=6))
def test_tar_layout_is_predicted_exactly(samples):
    buf = io.BytesIO()
    w = TarWriter(buf)
    spans = []
    payload = 0
    for i, sizes in enumerate(samples):
        members = _members(f"k{i:03d}", sizes)
        spans.append((w.add(members), members))
        payload += member_bytes(members)
    total, _ = w.close()
    data = buf.getvalue()
    assert total == len(data) == archive_bytes(payload)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.mode == 0o444 for i in infos)
    for (offset, size, _), members in spans:
        one = tarfile.open(fileobj=io.BytesIO(data[offset: offset + size] + b"\0" * 1024))
        assert [(m.name, _member_bytes(one, m)) for m in one.getmembers()] == members


def test_tar_bytes_do_not_depend_on_the_run():
    def write():
        buf = io.BytesIO()
        w = TarWriter(buf)
        w.add(_members("a", [10, 600]))
        w.close()
        return buf.getvalue()
    assert write() == write()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdef0123", min_size=1, max_size=6), st.integers(512, 40_000), min_size=1,
                       max_size=60), st.integers(20_000, 200_000))
def test_plan_rotates_before_the_target_and_keeps_key_order(sizes, target):
    plan = plan_bucket(sizes.items(), target_bytes=target)
    assert set(plan) == set(sizes)
    order = sorted(sizes)
    idx = [plan[k] for k in order]
    assert idx == sorted(idx) and idx[0] == 0 and set(idx) == set(range(idx[-1] + 1))
    for shard in range(idx[-1] + 1):
        members = [k for k in order if plan[k] == shard]
        payload = sum(sizes[k] for k in members)
        assert len(members) == 1 or archive_bytes(payload) <= target
    assert plan == plan_bucket(reversed(list(sizes.items())), target_bytes=target)


def test_plan_refuses_duplicates_and_bad_targets():
    with pytest.raises(ValueError, match="duplicate"):
        plan_bucket([("a", 1), ("a", 2)], target_bytes=10_000)
    with pytest.raises(ValueError, match="positive"):
        plan_bucket([("a", 1)], target_bytes=0)
    assert shard_name("valid", 12) == "valid/valid-000012.tar"


def _plan(samples: list[tuple[str, str, str, int]], *, target: int, bucket_bytes: int) -> dict[str, tuple[str, int]]:
    """The shard stage's three steps on ``(split, conversation, key, size)``: key → (split, shard index)."""
    payload: dict[str, int] = {}
    for split, _, _, size in samples:
        payload[split] = payload.get(split, 0) + size
    buckets: dict[tuple[str, int], list] = {}
    for split, conv, key, size in samples:
        where = (split, bucket_of(conv, bucket_count(payload[split], bucket_bytes=bucket_bytes)))
        buckets.setdefault(where, []).append((key, size))
    plans = {where: plan_bucket(sizes, target_bytes=target) for where, sizes in buckets.items()}
    first = first_indices({where: max(p.values()) + 1 for where, p in plans.items()})
    return {key: (where[0], first[where] + part) for where, p in plans.items() for key, part in p.items()}


_SAMPLES = st.lists(st.tuples(st.sampled_from(["train", "valid"]), st.text("abcdef0123", min_size=1, max_size=4),
                              st.integers(512, 40_000)), min_size=1, max_size=80)


@settings(max_examples=100, deadline=None)
@given(_SAMPLES, st.integers(20_000, 200_000), st.integers(1, 4), st.randoms(use_true_random=False))
def test_bucketed_plan_numbers_shards_densely_and_does_not_depend_on_order(rows, target, bucket_shards, rnd):
    samples = [(split, conv, f"{conv}_{i:03d}", size) for i, (split, conv, size) in enumerate(rows)]
    plan = _plan(samples, target=target, bucket_bytes=bucket_shards * target)
    assert set(plan) == {key for _, _, key, _ in samples}
    size_of = {key: size for _, _, key, size in samples}
    for split in {s for s, _, _, _ in samples}:
        shards: dict[int, list[str]] = {}
        for key, (sp, index) in plan.items():
            if sp == split:
                shards.setdefault(index, []).append(key)
        assert sorted(shards) == list(range(len(shards)))  # 0..n-1, no gaps
        for members in shards.values():
            assert len(members) == 1 or archive_bytes(sum(size_of[k] for k in members)) <= target
    by_conv: dict[str, set] = {}
    for split, conv, key, _ in samples:
        by_conv.setdefault(f"{split}/{conv}", set()).add(plan[key])
    # A conversation's windows share a bucket, so they sit in consecutive shards of one split.
    assert all(max(i for _, i in v) - min(i for _, i in v) < len(v) for v in by_conv.values())
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    assert _plan(shuffled, target=target, bucket_bytes=bucket_shards * target) == plan


def test_one_bucket_packs_the_split_in_key_order():
    samples = [("train", f"c{i % 7}", f"c{i % 7}_{i:03d}", 3000 + 97 * i) for i in range(40)]
    plan = _plan(samples, target=20_000, bucket_bytes=10**9)
    assert plan == {k: ("train", i) for k, i in plan_bucket([(k, s) for _, _, k, s in samples],
                                                            target_bytes=20_000).items()}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**12), st.integers(1, 10**9))
def test_bucket_count_keeps_the_expected_bucket_under_its_size(payload, bucket_bytes):
    n = bucket_count(payload, bucket_bytes=bucket_bytes)
    assert n >= 1 and payload / n <= bucket_bytes and (n == 1 or payload / (n - 1) > bucket_bytes)


def test_buckets_are_stable_and_spread():
    # Fixed values: the bucket of a conversation must not change across runs, machines or versions.
    # (Python's own str hash is salted per process; these come from sha256.)
    assert [bucket_of(c, 7) for c in ("a", "b", "s-00000000000000e1")] == [1, 6, 2]
    counts = np.bincount([bucket_of(f"conv-{i}", 8) for i in range(8000)], minlength=8)
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected each; 5 sigma is about +-150
    with pytest.raises(ValueError, match="at least 1"):
        bucket_of("a", 0)
    with pytest.raises(ValueError, match="positive"):
        bucket_count(10, bucket_bytes=0)
    assert first_indices({("train", 3): 2, ("train", 0): 1, ("valid", 5): 4}) == {
        ("train", 0): 0, ("train", 3): 1, ("valid", 5): 0}


def test_writer_output_is_what_tarfile_writes_for_the_same_members():
    from microturn.pipelines.shard.tar import _info

    samples = [_members("a", [0, 1, 511, 512, 513]), _members("b", [9000])]
    ours = io.BytesIO()
    w = TarWriter(ours)
    for m in samples:
        w.add(m)
    w.close()
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m in samples:
            for name, data in m:
                tar.addfile(_info(name, len(data)), io.BytesIO(data))
    assert ours.getvalue() == plain.getvalue()
