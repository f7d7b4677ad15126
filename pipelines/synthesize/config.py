"""Configuration of the synthesize pipeline (one keyword-only dataclass; TOML-loadable)."""

from __future__ import annotations

from dataclasses import dataclass

from microturn.pipelines.config_io import check_numbers
from microturn.synth.mix import DEGRADE, MixConfig


@dataclass(frozen=True, kw_only=True)
class SynthesizeConfig:
    """Everything the synthesize job needs besides Beam's own pipeline options.

    Attributes:
        scripts: JSONL files of dialogue scripts (local paths or Beam filesystem URLs, globs allowed).
        generate: also make this many dialogues with the bundled template generator.
        remix: an ingest output directory whose diarized turns are re-timed into two-stream dialogues.
        output: the output directory OUT.
        seed: the run seed; the same seed and inputs give the same bytes.
        tts: the TTS backend (``espeak-ng``).
        timing: a timing-model JSON file (as written by ``microturn synthesize fit``); default:
            the literature defaults of :data:`microturn.synth.timing.DEFAULT_TIMING`.
        fit_from: an ingest output directory to fit the timing model on at launch (instead of ``timing``).
        license: license of dialogues whose script names none.
        target_dbfs, noise_snr_db, reverb_rt60_s, degrade: mixing (see :class:`MixConfig`).
        table_shards: Parquet files per table.
    """

    scripts: tuple[str, ...] = ()
    generate: int = 0
    remix: str | None = None
    output: str
    seed: int = 0
    tts: str = "espeak-ng"
    timing: str | None = None
    fit_from: str | None = None
    license: str = "Apache-2.0"
    target_dbfs: float = -26.0
    noise_snr_db: float | None = None
    reverb_rt60_s: float | None = None
    degrade: str = "user"
    table_shards: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)  # integers where integers belong, no inf / nan
        if not self.scripts and not self.generate and not self.remix:
            raise ValueError("nothing to synthesize: give --scripts JSONL, --generate N or --remix OUT_OF_INGEST")
        if not self.output:
            raise ValueError("--output is required")
        if not self.generate >= 0:
            raise ValueError(f"--generate must be >= 0, got {self.generate}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in [0, 2^32), got {self.seed}")
        if self.timing and self.fit_from:
            raise ValueError("give either --timing FILE or --fit-from OUT, not both")
        if not self.table_shards >= 1:
            raise ValueError(f"--table-shards must be at least 1, got {self.table_shards}")
        if self.degrade not in DEGRADE:
            raise ValueError(f"--degrade must be one of {DEGRADE}, got {self.degrade!r}")
        self.mix  # validates the mixing values

    @property
    def mix(self) -> MixConfig:
        return MixConfig(target_dbfs=self.target_dbfs, noise_snr_db=self.noise_snr_db,
                         reverb_rt60_s=self.reverb_rt60_s, degrade=self.degrade)
