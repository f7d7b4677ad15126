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
