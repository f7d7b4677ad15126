from typing import Any

import pytest

from microturn.cli.main import main as cli_main
from microturn.pipelines.ingest.config import IngestConfig
from microturn.pipelines.ingest.pipeline import read_license_manifest
from microturn.pipelines.ingest.run import parse_args


def test_app_flags_and_beam_flags_are_separated():
    cfg, beam_args = parse_args(["--input", "a/*.mp4", "--input", "b.wav", "--output", "OUT",
                                 "--num-speakers", "2", "--runner", "DirectRunner",
                                 "--direct_num_workers=2"])
    assert cfg.inputs == ("a/*.mp4", "b.wav") and cfg.output == "OUT" and cfg.num_speakers == 2
    assert beam_args == ["--runner", "DirectRunner", "--direct_num_workers=2"]


def test_named_toml_config_with_cli_override(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text('diarizer = "embedded"\nmax_duration_s = 600\nmin_speakers = 2\n')
    cfg, _ = parse_args(["--config", str(path), "--input", "x", "--output", "o", "--min-speakers", "1"])
    assert cfg.max_duration_s == 600.0 and cfg.min_speakers == 1


def test_unknown_toml_key_is_an_error(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text("diarizr = 'embedded'\n")
    with pytest.raises(ValueError, match="unknown key.*diarizr"):
        parse_args(["--config", str(path), "--input", "x", "--output", "o"])


def test_wrongly_typed_toml_value_is_an_error(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text("num_speakers = 'two'\n")
    with pytest.raises(ValueError, match="num_speakers"):
        parse_args(["--config", str(path), "--input", "x", "--output", "o"])


@pytest.mark.parametrize("kw, match", [
    (dict(diarizer="magic"), "--diarizer"),
    (dict(transcriber="whisperx"), "--model-dir"),
    (dict(min_speakers=3, max_speakers=2), "larger than"),
    (dict(num_speakers=0), "positive"),
    (dict(max_duration_s=0), "positive"),
    (dict(inputs=()), "at least one"),
])
def test_bad_config_values(kw, match):
    base = dict(inputs=("x",), output="o")
    with pytest.raises(ValueError, match=match):
        IngestConfig(**{**base, **kw})


def test_license_manifest(tmp_path):
    path = tmp_path / "lic.csv"
    path.write_text("uri,license,origin\n/data/a.mp4,CC-BY-4.0,podcast-x\nb.wav,CC0,\n")
    assert read_license_manifest(str(path)) == {"/data/a.mp4": ("CC-BY-4.0", "podcast-x"),
                                                "b.wav": ("CC0", "real")}
    path.write_text("file,licence\nx,y\n")
    with pytest.raises(ValueError, match="header"):
        read_license_manifest(str(path))


def test_cli_help_and_unknown_command(capsys):
    assert cli_main(["--help"]) == 0
    assert "ingest" in capsys.readouterr().out
    assert cli_main(["frobnicate"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["ingest", "--output", "o"])  # --input is required


# --- the embedded backends' settings: [vad], [embedded_diarizer], [aligner] ----------------

NESTED_TOML = """
diarizer = "embedded"

[vad]
threshold = 0.6
min_speech_ms = 200

[embedded_diarizer]
cluster_threshold = 0.28
num_threads = 2

[aligner]
pad_ms = 100
garbage_phones = ["AH", "S"]
"""


def _annotate_dofns(cfg: IngestConfig) -> dict[str, Any]:
    """The DoFns of the pipeline the ingest job builds for ``cfg``, by class name (not run)."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor

    from microturn.pipelines.ingest.pipeline import Annotate

    found: dict[str, Any] = {}

    class Collect(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                found[type(node.transform.fn).__name__] = node.transform.fn

    p = beam.Pipeline()
    _ = p | beam.Create([]) | Annotate(cfg)
    p.visit(Collect())
    return found


def test_backend_tables_of_a_named_config_reach_the_backends(tmp_path):
    path = tmp_path / "ingest.toml"
    path.write_text(NESTED_TOML)
    cfg, _ = parse_args(["--config", str(path), "--input", "x", "--output", "o"])
    assert cfg.vad is not None and cfg.embedded_diarizer is not None and cfg.aligner is not None
    assert cfg.vad.threshold == 0.6 and cfg.vad.min_speech_ms == 200
    assert cfg.embedded_diarizer.cluster_threshold == 0.28 and cfg.aligner.garbage_phones == ("AH", "S")
    fns = _annotate_dofns(cfg)
    vad, diarize, transcribe = fns["DetectSpeech"], fns["Diarize"], fns["Transcribe"]
    vad.setup()
    assert vad.vad.config == cfg.vad
    transcribe.setup()
    assert transcribe.transcriber.config == cfg.aligner
    diarize.setup()  # loads the segmentation and speaker models (a few seconds)
    assert diarize.diarizer.config == cfg.embedded_diarizer


def test_without_tables_the_backends_keep_their_defaults():
    from microturn.pipelines.backends.align_sphinx import PocketsphinxAligner
    from microturn.pipelines.backends.configs import PocketsphinxAlignerConfig, SileroVadConfig
    from microturn.pipelines.backends.factory import make_transcriber, make_vad
    from microturn.pipelines.backends.silero import SileroVad

    cfg = IngestConfig(inputs=("x",), output="o")
    assert (cfg.vad, cfg.embedded_diarizer, cfg.aligner) == (None, None, None)
    vad = make_vad(cfg.vad)
    assert isinstance(vad, SileroVad) and vad.config == SileroVadConfig()
    aligner = make_transcriber(cfg.transcriber, None, "en", aligner=cfg.aligner)
    assert isinstance(aligner, PocketsphinxAligner) and aligner.config == PocketsphinxAlignerConfig()


@pytest.mark.parametrize("table, message", [
    ("[embedded_diarizer]\ncluster_treshold = 0.2\n",
     r"\[embedded_diarizer\]: unknown key\(s\) \['cluster_treshold'\]; known keys: .*'cluster_threshold'"),
    ("[vad]\nthreshold = 'high'\n", r"\[vad\]: threshold must be a number, got 'high'"),
    ("[embedded_diarizer]\ncluster_threshold = 2.5\n",
     r"\[embedded_diarizer\]: cluster_threshold must be in \(0, 2\), got 2.5"),
    ("[embedded_diarizer]\nstep_s = nan\n", r"\[embedded_diarizer\]: step_s must be a finite number"),
    ("[embedded_diarizer]\nbatch_size = true\n", r"\[embedded_diarizer\]: batch_size must be an integer, got True"),
    ("[embedded_diarizer]\nspeech = \"all\"\n", r"\[embedded_diarizer\]: speech must be one of"),
    ("[aligner]\npad_ms = -1\n", r"\[aligner\]: pad_ms must be at least 0, got -1"),
    ("[aligner]\nloglevel = 'LOUD'\n", r"\[aligner\]: loglevel must be one of"),
    ("[vad]\nneg_threshold = 0.9\n", r"\[vad\]: neg_threshold must be in \(0, threshold=0.5\]"),
    ("[diarizr]\nonset = 0.5\n", r"unknown key\(s\) \['diarizr'\]"),
    ("vad = 3\n", "vad must be a table of settings or empty, got 3"),
])
def test_bad_backend_settings_fail_before_any_work_naming_the_key(tmp_path, table, message):
    path = tmp_path / "ingest.toml"
    path.write_text(table)
    with pytest.raises(ValueError, match=message):
        parse_args(["--config", str(path), "--input", "x", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("toml, flags, message", [
    ("diarizer = 'pyannote'\nmodel_dir = 'm'\n[embedded_diarizer]\nonset = 0.4\n", [],
     r"\[embedded_diarizer\] settings are for diarizer = 'embedded'; this run uses diarizer = 'pyannote'"),
    ("[embedded_diarizer]\nonset = 0.4\n", ["--diarizer", "pyannote", "--model-dir", "m"],
     "remove the table or the --diarizer flag"),
    ("[aligner]\npad_ms = 10\n", ["--transcriber", "none"],
     r"\[aligner\] settings are for transcriber = 'sidecar'; this run uses transcriber = 'none'"),
])
def test_a_table_for_a_backend_the_run_does_not_build_is_an_error(tmp_path, toml, flags, message):
    path = tmp_path / "ingest.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=message):
        parse_args(["--config", str(path), "--input", "x", "--output", "o", *flags])
