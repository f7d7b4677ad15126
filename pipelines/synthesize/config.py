"""Configuration of the synthesize pipeline (one keyword-only dataclass; TOML-loadable)."""

from __future__ import annotations

from dataclasses import dataclass

from microturn.schemas.config import setting, validate
from microturn.synth.mix import DEGRADE, MixConfig
from microturn.synth.templates import INTERRUPT_P, check_kinds

# Fields a named config may not set: the command line gives them.
CLI_ONLY = ("output",)


@dataclass(frozen=True, kw_only=True)
class SynthesizeConfig:
    """Everything the synthesize job needs besides Beam's own pipeline options.

    Attributes:
        scripts: JSONL files of dialogue scripts (local paths or Beam filesystem URLs, globs allowed).
        generate: also make this many dialogues with the bundled template generator.
        interruption_share: the share of generated conversations that get one extra interruption
            (:func:`microturn.synth.templates.generate`); scripts keep their own.
        kinds: the kinds of dialogue to generate (of :data:`microturn.synth.templates.KINDS`:
            dialogue, timed, visual, background, simultaneous); empty: all of them, in the
            generator's default mix. Only with ``generate``.
        remix: an ingest output directory whose diarized turns are re-timed into two-stream dialogues.
        output: the output directory OUT.
        seed: the run seed, in [0, 2^32) (numpy's seed range); the same seed and inputs give the
            same bytes.
        tts: the TTS backend (``espeak-ng``).
        timing: a timing-model JSON file (as written by ``microturn synthesize fit``); default:
            the literature defaults of :data:`microturn.synth.timing.DEFAULT_TIMING`.
        fit_from: an ingest output directory to fit the timing model on at launch (instead of ``timing``).
        license: license of dialogues whose script names none.
        target_dbfs, noise_snr_db, reverb_rt60_s, degrade, tail_ms: mixing (see :class:`MixConfig`,
            which checks their ranges).
        table_shards: Parquet files per table.
    """

    scripts: tuple[str, ...] = ()
    generate: int = setting(0, ge=0, flag="--generate")
    interruption_share: float = setting(INTERRUPT_P, ge=0.0, le=1.0, flag="--interruption-share")
    kinds: tuple[str, ...] = setting((), flag="--kinds")
    remix: str | None = None
    output: str = setting(flag="--output")
    seed: int = setting(0, ge=0, lt=2**32, flag="--seed")
    tts: str = "espeak-ng"
    timing: str | None = None
    fit_from: str | None = None
    license: str = "Apache-2.0"
    target_dbfs: float = -26.0
    noise_snr_db: float | None = None
    reverb_rt60_s: float | None = None
    degrade: str = setting("user", choices=DEGRADE, flag="--degrade")
    tail_ms: int = 300
    table_shards: int = setting(1, ge=1, flag="--table-shards")

    def __post_init__(self) -> None:
        validate(self)
        if self.kinds and not self.generate:
            raise ValueError(f"--kinds {','.join(self.kinds)} chooses what --generate makes; give --generate N too "
                             "(scripts and remixes keep their own kinds)")
        if not self.scripts and not self.generate and not self.remix:
            raise ValueError("nothing to synthesize: give --scripts JSONL, --generate N or --remix OUT_OF_INGEST")
        if not self.output:
            raise ValueError("--output is required")
        if self.timing and self.fit_from:
            raise ValueError("give either --timing FILE or --fit-from OUT, not both")
        if self.kinds:
            try:
                check_kinds(self.kinds)
            except ValueError as exc:
                raise ValueError(f"--kinds: {exc}") from None
        _ = self.mix  # validates the mixing values

    @property
    def mix(self) -> MixConfig:
        return MixConfig(target_dbfs=self.target_dbfs, noise_snr_db=self.noise_snr_db,
                         reverb_rt60_s=self.reverb_rt60_s, degrade=self.degrade, tail_ms=self.tail_ms)
