"""Settings of the embedded backends that an ingest config nests (``[vad]``, ``[aligner]``, ...).

They live apart from the backends so that a stage config (and ``microturn ingest --help``) can
hold and check them without importing torch, silero or pocketsphinx; each backend module
re-exports its own config class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from microturn.schemas.config import setting, validate

__all__ = ["EmbeddedDiarizerConfig", "PocketsphinxAlignerConfig", "SileroVadConfig"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")


@dataclass(frozen=True, kw_only=True, slots=True)
class SileroVadConfig:
    """Settings of :class:`~microturn.pipelines.backends.silero.SileroVad`; defaults suit
    conversational speech.

    Attributes:
        threshold: speech probability at or above which a 32 ms frame starts speech. 0.5 is
            silero's recommended default; on pyannote's sample phone call it finds 99 % of
            the reference speech time with 99 % precision.
        neg_threshold: probability below which speech ends (hysteresis); None means silero's
            default of ``threshold - 0.15``.
        min_speech_ms: regions shorter than this are dropped. 250 ms (silero's default) keeps
            short backchannels ("yeah", ~250-400 ms) and drops clicks and breaths.
        min_silence_ms: a pause must last this long to split a region. 100 ms keeps the
            inter-word gaps of fluent speech (typically < 100 ms) inside one region while still
            separating turns, whose gaps are typically 200 ms or more.
        speech_pad_ms: padding added to both sides of every region (halved when two regions
            are closer than twice the pad). 30 ms recovers the soft onsets and offsets the
            32 ms frame quantisation clips.
        max_speech_s: regions longer than this are split at their longest pause (inf: never).
        engine: ``"sequence"`` (batched ONNX, fast, default) or ``"jit"`` (TorchScript).
    """

    threshold: float = setting(0.5, gt=0.0, lt=1.0)
    neg_threshold: float | None = setting(None, gt=0.0)
    min_speech_ms: int = setting(250, ge=0)
    min_silence_ms: int = setting(100, ge=0)
    speech_pad_ms: int = setting(30, ge=0)
    max_speech_s: float = setting(float("inf"), gt=0.0, allow_inf=True)
    engine: Literal["sequence", "jit"] = "sequence"

    def __post_init__(self) -> None:
        validate(self)
        if self.neg_threshold is not None and not self.neg_threshold <= self.threshold:
            raise ValueError(
                f"neg_threshold must be in (0, threshold={self.threshold}], got {self.neg_threshold}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class PocketsphinxAlignerConfig:
    """Settings of :class:`~microturn.pipelines.backends.align_sphinx.PocketsphinxAligner`.

    pad_ms: audio added on both sides of an utterance before aligning it; words may land in
        the padding. 0 (default) takes the transcript's segment times as the bounds of its
        words, as whisperx's aligner does; on the pyannote sample call every word (81 of 81)
        then lies inside its STM segment, against 72 with 200 ms. Raise it for subtitles whose
        times are loose or late.
    pad_into_neighbours: when False (default), padding stops where another utterance's span
        begins, so that a word is not stretched over a neighbour's speech (sample call: 72 of
        81 words inside their STM segment, against 64 when padding runs into neighbours);
        when an alignment inside that span fails, it is retried once with the full padding.
    edge_garbage_prob: probability of entering the garbage loop at each edge of the grammar.
        Words of the pyannote sample call strictly inside their STM segment: 68 of 81 without
        garbage (1e-30), 69 at 1e-6, 71 at 1e-4, 72 from 1e-3 to 0.3; the timing of espeak
        words with silence around them does not change (median error 15 ms throughout).
    garbage_phones: phones of the single-phone garbage words. Three broad classes (vowel,
        fricative, nasal) do as well on the sample call as ten phones (72 vs 71 of 81 words
        inside) and all 39 phones cost 2.5x the alignment time.
    score_midpoint, score_width: a word's confidence is the logistic function of its mean
        per-frame acoustic log-likelihood ratio (nats, against the best senone of each frame,
        so <= 0): 1 / (1 + exp(-(llr - score_midpoint) / score_width)). Calibrated on the
        pyannote sample call: its correct transcript has median llr -2.25 (score 0.81), a
        transcript of shuffled words -4.3 (score 0.25).
    start_offset_ms, end_offset_ms: added to aligned word starts and ends. The model's delta
        features see 20-30 ms past an acoustic edge, so its words come out wide: on 180 espeak
        words (3 voices, energy-trimmed, known positions) starts were a median 21 ms early and
        ends 17 ms late. A word is never shrunk below 30 ms (or its aligned length) by this.
    beam, word_beam: Viterbi beams (pocketsphinx ``beam``/``pbeam`` and ``wbeam``; smaller is
        wider). With the pocketsphinx defaults (1e-48, 7e-29) the search prunes the right path
        more often: 69 instead of 72 of the sample call's 81 words inside their segment, at
        the same speed.
    decoder_options: further pocketsphinx ``Decoder`` keyword arguments (e.g. ``topn``).
    hmm, dictionary: acoustic model directory and pronunciation dictionary; None uses the
        English model and CMUdict that ship with the pocketsphinx package.
    assign_speakers: when diarization turns are given, give each word the speaker of the turn
        it overlaps most (:func:`microturn.pipelines.backends.assign.assign_speakers`);
        otherwise words keep the sidecar utterance's speaker.
    loglevel: pocketsphinx's own logging (``DEBUG`` ... ``FATAL``).
    """

    pad_ms: int = setting(0, ge=0)
    pad_into_neighbours: bool = False
    edge_garbage_prob: float = setting(1e-2, gt=0.0, lt=1.0)
    garbage_phones: tuple[str, ...] = ("AH", "S", "N")
    score_midpoint: float = -3.4
    score_width: float = setting(0.8, gt=0.0)
    start_offset_ms: int = 20
    end_offset_ms: int = -15
    beam: float = setting(1e-60, gt=0.0, lt=1.0)  # smaller is wider
    word_beam: float = setting(1e-40, gt=0.0, lt=1.0)
    hmm: str | None = None
    dictionary: str | None = None
    assign_speakers: bool = True
    loglevel: str = setting("FATAL", choices=_LOG_LEVELS)
    decoder_options: Mapping[str, object] = setting(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        validate(self)
        if not self.garbage_phones or not all(p.isalpha() for p in self.garbage_phones):
            raise ValueError(
                "garbage_phones must be a non-empty tuple of phone names such as ('AH', 'S'), "
                f"got {self.garbage_phones!r}"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbeddedDiarizerConfig:
    """Settings of :class:`~microturn.pipelines.backends.embedded_diarizer.EmbeddedDiarizer`.

    The defaults give DER 0.052 on pyannote's 30 s two-person phone call (no collar, overlap
    scored) with the speaker count given or estimated (estimate: 2), and results on that file
    stay within DER 0.045-0.08 over wide ranges of every setting (step 1-4 s, onset 0.4-0.6,
    threshold 0.25-0.35, gaps and minimum durations 0-250 ms), so they are not tuned to one
    file's noise. Speaker counts were also checked on audio built from the call: one voice's
    turns alone (1), the call 20 times over (2), the call plus a pitch-shifted copy of one
    or both voices (3, 4), and after AAC / MP3 / Opus coding, gain and noise (2).

    Attributes:
        step_s: hop between 5 s segmentation windows. pyannote uses 0.5 s (10 views of every
            frame) on GPUs; here the segmentation LSTM dominates the run time (~20 ms per
            window on one core) and its cost is proportional to 1 / step_s. With 2 s,
            consecutive windows share 3 s (enough to chain local speakers into tracks) and
            every frame is seen by two or three windows. Steps from 1 to 4 s all gave DER
            0.045-0.072 on the sample; on ami-dev 2 s beat 3 s on both halves of the
            leave-some-out check (26.6 % against 28.3 % in total), at ~100x realtime.
        level_dbfs: the audio is scaled so that its loud frames (95th percentile of 30 ms RMS)
            sit at this level before any model sees it (None: as recorded). The segmentation
            model's per-window normalisation adds 1e-5 to the variance, which attenuates quiet
            recordings by a level-dependent amount: trn06 30 dB quieter lost a speaker.
            -30 dBFS (resemblyzer's own target level) against -20: ami-dev DER 26.6 % vs
            27.3 % with the count estimated, chosen on half the clips (bench/diarization.py
            --sweep); the sample call's false alarm rose with -20.
        offset: with hysteresis, a run of frames at or above ``offset`` is active when one of
            its frames reaches ``onset``; None means ``offset = onset`` (no hysteresis).
        onset: threshold on the local sigmoid activations that marks a local speaker active
            (counts simultaneous speakers, selects clean frames, links windows). 0.5 is the
            natural point of a sigmoid trained with binary cross-entropy; 0.4 and 0.6 moved
            DER on the sample by less than a point (more false alarm / more miss).
        warm_up_s: frames this close to a window edge are not used to count speakers where a
            neighbouring window sees them with more context; 0.5 s is pyannote's 10 % of 5 s.
        min_active_s: a local speaker active for less than this in a window is ignored
            (spurious blips); 0.2 s is shorter than any word.
        link_iou: consecutive windows' local speakers are chained into one track when their
            activity on the shared frames has at least this intersection over union. On the
            sample the same voice seen by two windows agrees at 0.91-1.0 and different local
            speakers at 0-0.48. A chain that links a local speaker holding two people one
            after the other mixes their voices in one embedding: on ami-dev, 21 % of single
            window speakers but 33 % of 0.7-linked tracks had less than 90 % of their speech
            from one person. 0.95 keeps the chains the model is sure of; chosen on either half
            of ami-dev in the leave-some-out check (DER 24.9 % in total against 26.6 % at 0.7).
        link_min_s: ... and when they share at least this much speech (0.5 s: about two
            words, so that a breath or a click cannot chain two speakers).
        cooccur_penalty: cosine distance added between tracks that are two local speakers of
            one window. The segmentation model separates voices within 5 s well but sometimes
            splits one speaker in two (a pause, a change of tone), so this is a bias, not a
            wall: 0.1 keeps such a split (distance ~0.1-0.15) below the threshold.
        cannot_link_s: tracks that talk at the same time in a window for at least this long
            are certainly two people (cannot-link). 0.25 s ignores the few frames where the
            model's activations of one voice cross over at a handover.
        min_clean_s: tracks with at least this much clean speech form the clusters; shorter
            ones are only assigned to them. resemblyzer embeds 1.6 s partials; below ~1.5 s
            its d-vectors of different people on the same channel look alike.
        max_embed_s: at most this much of a track's clean speech (its middle) is embedded:
            3.2 s is two partials. With 1.6 s (one partial, ~35 ms less per 30 s) one voice
            was split in two in the single-speaker check; more than 3.2 s only costs time.
        cluster_threshold: height (cosine distance + constraint penalty) at which the tree
            is cut when the count is not given. On the sample, track embeddings of one caller
            sit 0.10-0.16 apart and those of the two callers 0.21-0.28: resemblyzer alone
            separates these voices only below ~0.2, which split one voice in two in the
            single-speaker check. Speakers who talk to each other share windows, and the
            window constraints push them apart; every count check came out right for
            thresholds 0.25-0.35. On ami-dev (far-field meetings), voices of different people
            sit 0.29-0.49 apart on clean segments and 0.25 gave the lower total on the half
            it was chosen on. Two voices that never share a window and sound alike on the
            channel may be merged.
        min_cluster_s: when the count is estimated, clusters with less clean speech than
            this join the most similar larger cluster (2 s: less than a sentence is not enough
            evidence for one more speaker).
        min_turn_ms: turns shorter than this are dropped (after gap filling); 100 ms is
            shorter than a one-syllable backchannel.
        min_gap_ms: pauses shorter than this inside one speaker's speech are filled; 100 ms
            is below the shortest pauses annotators mark between turns.
        speech: where speech is. ``"segmentation"`` (default): the segmentation model
            decides, on every window of the file; its input is normalised per window (an
            instance norm of the waveform), so the level it sees does not depend on the
            recording's gain. ``"vad"``: windows without VAD speech are skipped and turns are
            cut to the VAD regions (faster on long silences, tighter turn edges on clean
            calls). On the far-field AMI clips of ``tests/data/ami-dev`` silero-vad at its
            default threshold finds 77 % of the reference speech (none at all on trn01) at
            any gain from x1 to x16, so ``"vad"`` loses a third of the speech there: DER
            0.378 against 0.27-0.28 with ``"segmentation"`` (bench/diarization.py).
        batch_size: windows per segmentation forward pass: the LSTM costs ~13 ms per window
            at 8 windows a batch and ~17 ms at 32 (larger activations fall out of cache).
        num_threads: torch intra-op threads during a call; the caller's setting is restored
            afterwards (None: leave it alone). 1 by default: on the 2-core ingest machine two
            threads cut the diarization of the 30 s call from ~0.30 s to ~0.25 s (median)
            when the machine is idle, but about double it as soon as one other busy process
            (another worker, ffmpeg) shares the cores, as OpenMP threads wait on each other.
        segmentation_path: another PyanNet multi-label checkpoint (default: whisperx's).
    """

    step_s: float = setting(2.0, ge=0.1, le=5.0)  # windows are 5 s
    onset: float = setting(0.5, gt=0.0, lt=1.0)
    offset: float | None = setting(None, gt=0.0, lt=1.0)
    warm_up_s: float = setting(0.5, ge=0.0, lt=2.5)  # half a 5 s window
    min_active_s: float = setting(0.2, ge=0.0)
    link_iou: float = setting(0.95, gt=0.0, lt=1.0)
    link_min_s: float = setting(0.5, ge=0.0)
    cooccur_penalty: float = setting(0.1, ge=0.0)
    cannot_link_s: float = setting(0.25, ge=0.0)
    min_clean_s: float = setting(1.5, ge=0.0)
    max_embed_s: float = setting(3.2, ge=0.1)
    cluster_threshold: float = setting(0.25, gt=0.0, lt=2.0)  # a cosine distance
    min_cluster_s: float = setting(2.0, ge=0.0)
    min_turn_ms: int = setting(100, ge=0)
    min_gap_ms: int = setting(100, ge=0)
    speech: Literal["segmentation", "vad"] = "segmentation"
    level_dbfs: float | None = setting(-30.0, lt=0.0)
    batch_size: int = setting(8, ge=1)
    num_threads: int | None = setting(1, ge=1)
    segmentation_path: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        validate(self)
