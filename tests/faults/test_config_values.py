"""Bad numbers and missing paths in ingest, synthesize and shard settings are one-line errors
before any work, naming the key or flag.

``float()`` and TOML both accept ``inf`` and ``nan``, and a ``nan`` passes every range check
written as ``x <= 0``; a missing source folder used to fit or summarise nothing with exit 0.
"""

from __future__ import annotations

import math
import os

import pytest

from microturn.pipelines.ingest import run as ingest
from microturn.pipelines.ingest.config import IngestConfig
from microturn.pipelines.shard import run as shard
from microturn.pipelines.shard.config import ShardConfig
from microturn.pipelines.synthesize import run as synthesize
from microturn.pipelines.synthesize.config import SynthesizeConfig
from microturn.schemas.config import from_mapping, load_toml

BASE = {"ingest": (ingest, ["--input", "in/*.wav", "--output", "out"]),
        "synthesize": (synthesize, ["--scripts", "dialogues.jsonl", "--output", "out"]),
        "shard": (shard, ["--input", "records", "--output", "shards"])}
NOT_FINITE = ["nan", "inf", "-inf", "NaN", "Infinity", "1e999"]  # float("1e999") is inf


def one_line_error(call) -> str:
    """Run a stage's ``main``-style call; assert a non-zero exit with one line of text, return it."""
    with pytest.raises(SystemExit) as exc:
        call()
    message = exc.value.code
    assert isinstance(message, str) and message and "\n" not in message, message
    return message


# --- inf and nan ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", NOT_FINITE)
@pytest.mark.parametrize("command, flag", [("ingest", "--max-duration-s"), ("synthesize", "--noise-snr-db"),
                                           ("synthesize", "--reverb-rt60-s")])
def test_non_finite_number_on_the_command_line_is_a_usage_error(capsys, command, flag, text):
    module, base = BASE[command]
    with pytest.raises(SystemExit) as exc:
        module.parse_args(base + [flag, text])
    assert exc.value.code == 2
    assert f"argument {flag}: '{text}' is not a finite number" in capsys.readouterr().err


def test_signed_numbers_in_any_spelling_reach_the_numeric_check():
    """argparse reads ``-1e1`` and ``-inf`` as flags; they are values of a numeric flag here."""
    cfg, _ = synthesize.parse_args(["--generate", "1", "--output", "o", "--noise-snr-db", "-5e0"])
    assert cfg.noise_snr_db == -5.0
    with pytest.raises(ValueError, match="--max-duration-s must be positive"):
        ingest.parse_args(["--input", "i", "--output", "o", "--max-duration-s", "-1e1"])


@pytest.mark.parametrize("command, key", [
    ("ingest", "max_duration_s"), ("synthesize", "noise_snr_db"), ("synthesize", "reverb_rt60_s"),
    ("synthesize", "target_dbfs"),
    ("shard", "window_chunks"),  # an integer key given a float: named as well
])
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf", "+inf"])
def test_non_finite_number_in_a_toml_config_names_the_key(tmp_path, command, key, literal):
    module, base = BASE[command]
    path = tmp_path / "stage.toml"
    path.write_text(f"{key} = {literal}\n")
    with pytest.raises(ValueError, match=f"{path}: {key} must be a finite number"):
        module.parse_args(base + ["--config", str(path)])


def test_non_finite_number_inside_a_list_or_under_any_config_class_is_refused():
    with pytest.raises(ValueError, match=r"where: scripts\[1\] must be"):
        from_mapping(SynthesizeConfig, {"output": "o", "scripts": ["a.jsonl", 3]}, where="where")
    with pytest.raises(ValueError, match=r"inputs\[0\] must be"):
        from_mapping(ShardConfig, {"output": "o", "inputs": [math.nan]})


# Wrong types on purpose (the ignores): a config built in code must refuse them at run time.
@pytest.mark.parametrize("make, message", [
    (lambda: IngestConfig(inputs=("x",), output="o", max_duration_s=math.nan), "max_duration_s must be a finite"),
    (lambda: IngestConfig(inputs=("x",), output="o", max_duration_s=math.inf), "max_duration_s must be a finite"),
    (lambda: IngestConfig(inputs=("x",), output="o", video_max_side=math.nan),  # pyright: ignore[reportArgumentType]
     "video_max_side must be an integer"),
    (lambda: IngestConfig(inputs=("x",), output="o", num_speakers=2.0),  # pyright: ignore[reportArgumentType]
     "num_speakers must be an integer"),
    (lambda: SynthesizeConfig(generate=1, output="o", target_dbfs=math.nan), "target_dbfs must be a finite"),
    (lambda: SynthesizeConfig(generate=1, output="o", noise_snr_db=-math.inf), "noise_snr_db must be a finite"),
    (lambda: SynthesizeConfig(generate=math.nan, output="o"),  # pyright: ignore[reportArgumentType]
     "generate must be an integer"),
    (lambda: ShardConfig(inputs=("x",), output="o", window_chunks=math.nan),  # pyright: ignore[reportArgumentType]
     "window_chunks must be an integer"),
    (lambda: ShardConfig(inputs=("x",), output="o", shard_bytes=math.inf),  # pyright: ignore[reportArgumentType]
     "shard_bytes must be an integer"),
    (lambda: ShardConfig(inputs=("x",), output="o", fade_ms=True), "fade_ms must be an integer"),
])
def test_configs_built_in_code_refuse_non_numbers_and_non_finite_numbers(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_non_finite_split_ratios_are_refused():
    for spec in ("train=nan", "train=inf", "train=0.5,test=inf,valid=-inf"):
        with pytest.raises(ValueError, match="--splits"):
            shard.parse_args(["--input", "r", "--output", "s", "--splits", spec])


# --- zero and negative where positive is required ------------------------------------------

@pytest.mark.parametrize("command, extra, message", [
    ("ingest", ["--max-duration-s", "0"], "--max-duration-s must be positive"),
    ("ingest", ["--max-duration-s", "-1"], "--max-duration-s must be positive"),
    ("ingest", ["--num-speakers", "0"], "--num-speakers must be a positive"),
    ("ingest", ["--max-speakers", "-2"], "--max-speakers must be a positive"),
    ("synthesize", ["--generate", "-1"], "--generate must be at least 0"),
    ("synthesize", ["--seed", "-1"], "--seed must be in"),
    ("synthesize", ["--reverb-rt60-s", "0"], "reverb_rt60_s must be in"),
    ("shard", ["--window-chunks", "0"], "--window-chunks must be at least 1"),
    ("shard", ["--patch-budget", "-3"], "patch_budget must be >= 1"),
    ("shard", ["--shard-bytes", "0"], "--shard-bytes must be at least 65536"),
])
def test_zero_or_negative_where_a_setting_must_be_positive(command, extra, message):
    module, base = BASE[command]
    with pytest.raises(ValueError, match=message):
        module.parse_args(base + extra)


@pytest.mark.parametrize("command, toml, message", [
    ("ingest", "table_shards = 0", "--table-shards must be at least 1"),
    ("ingest", "video_max_side = -1", "--video-max-side must be at least 40"),
    ("synthesize", "table_shards = -1", "--table-shards must be at least 1"),
    ("shard", "fade_ms = -5", "fade_ms must be at least 0"),
    ("shard", "tolerance_ms = -1", "tolerance_ms must be at least 0"),
    ("shard", "min_chunks = 0", "--min-chunks must be in"),
])
def test_zero_or_negative_in_a_toml_config(tmp_path, command, toml, message):
    module, base = BASE[command]
    path = tmp_path / "stage.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ValueError, match=message):
        module.parse_args(base + ["--config", str(path)])


# --- missing or unreadable files and folders -----------------------------------------------

@pytest.mark.parametrize("command", BASE)
def test_missing_or_unusable_config_file_is_a_one_line_error(tmp_path, command):
    module, base = BASE[command]
    missing = str(tmp_path / "nope.toml")
    message = one_line_error(lambda: module.main(base + ["--config", missing]))
    assert f"--config {missing}: no such file" in message
    message = one_line_error(lambda: module.main(base + ["--config", str(tmp_path)]))
    assert "is a folder" in message
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"seed = \"\xff\xfe\"\n")
    message = one_line_error(lambda: module.main(base + ["--config", str(binary)]))
    assert str(binary) in message and "not valid TOML" in message
    assert sorted(os.listdir(tmp_path)) == ["binary.toml"]


def test_unreadable_config_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="cannot read the config"):
        load_toml(str(tmp_path / "nope.toml"))


def test_missing_license_manifest_and_timing_files(tmp_path):
    out = tmp_path / "out"
    missing = str(tmp_path / "licenses.csv")
    message = one_line_error(lambda: ingest.main(["--input", str(tmp_path / "*.wav"), "--output", str(out),
                                                  "--license-manifest", missing]))
    assert f"--license-manifest {missing}: no such file" in message
    message = one_line_error(lambda: ingest.main(["--input", str(tmp_path / "*.wav"), "--output", str(out),
                                                  "--license-manifest", str(tmp_path)]))
    assert "--license-manifest" in message and "is a folder" in message
    missing = str(tmp_path / "timing.json")
    message = one_line_error(lambda: synthesize.main(["--generate", "1", "--output", str(out), "--timing", missing]))
    assert f"--timing {missing}: no such file" in message
    assert not out.exists()


def test_synthesize_fit_from_a_missing_or_empty_folder_writes_nothing(tmp_path):
    model = tmp_path / "fit" / "timing.json"
    missing = str(tmp_path / "no-such-output")
    message = one_line_error(lambda: synthesize.main(["fit", missing, "--output", str(model)]))
    assert f"{missing}: no such folder" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = one_line_error(lambda: synthesize.main(["fit", str(empty), "--output", str(model)]))
    assert "no segments records there" in message
    assert not (tmp_path / "fit").exists() and not os.path.exists(missing)


def test_synthesize_stats_of_a_missing_folder_creates_nothing(tmp_path):
    missing = str(tmp_path / "no-such-output")
    message = one_line_error(lambda: synthesize.main(["stats", missing]))
    assert f"OUT {missing}: no such folder" in message
    assert not os.path.exists(missing)
    message = one_line_error(lambda: synthesize.main(["stats", str(tmp_path), "--against", missing]))
    assert "no conversations records there" in message or "--against" in message
    assert sorted(os.listdir(tmp_path)) == []
