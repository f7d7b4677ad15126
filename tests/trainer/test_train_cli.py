"""``microturn train`` refuses what it does not understand before any work: unknown, misspelt and
abbreviated flags, stray values, overrides that name no key or hold inf/nan (exit 2, naming them)."""

from __future__ import annotations

import pytest

from microturn.trainer.run import main
from microturn.trainer.train_config import load_named

BASE = ["--config", "tiny-cpu", "--shards", "a.tar", "--output", "out"]


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2, argv
    return capsys.readouterr().err


@pytest.mark.parametrize("extra, named", [
    (["--max-stepz", "3"], "--max-stepz"),  # misspelt
    (["--shard", "b.tar"], "--shard"),  # an abbreviation of --shards is not taken for it
    (["--no-progres"], "--no-progres"),
    (["--num_workers=2"], "--num_workers=2"),  # another program's spelling
    (["b.tar"], "'b.tar'"),  # a shell-expanded glob: a stray value
    (["train.steps=2", "c.tar"], "'c.tar'"),
])
def test_unknown_flags_and_stray_values_exit_2_naming_them(capsys, extra, named):
    err = _usage_error(capsys, BASE + extra)
    assert named in err, err
    if named.endswith(".tar'"):
        assert "quote it" in err


@pytest.mark.parametrize("override, key", [
    ("train.lr=inf", "train.lr"), ("train.lr=nan", "train.lr"), ("train.grad_clip=-inf", "train.grad_clip"),
    ("model.rope_base=+inf", "model.rope_base"), ("model.capacity_factor=nan", "model.capacity_factor"),
    ("train.lr_typo=1", "lr_typo"), ("lr=1", "lr=1"), ("train.user_text_dropout=1.5", "user_text_dropout"),
    ("train.user_text_dropout=-0.1", "user_text_dropout"),
])
def test_bad_overrides_exit_2_naming_the_key(capsys, override, key):
    err = _usage_error(capsys, BASE + [override])
    assert key in err, err


@pytest.mark.parametrize("section, line, key", [
    ("train", "lr = inf", "lr"), ("train", "eps = nan", "eps"), ("model", "init_std = -inf", "init_std"),
    ("model", "rope_base = inf", "rope_base"),
])
def test_inf_and_nan_in_a_config_file_are_errors_naming_the_key(tmp_path, section, line, key):
    path = tmp_path / "run.toml"
    path.write_text(f"[{section}]\n{line}\n")
    with pytest.raises(ValueError, match=key):
        load_named(str(path))


@pytest.mark.parametrize("name", ["tiny-cpu", "turn-taking-cpu", "small-gpu"])
def test_every_shipped_config_loads(name):
    import glob
    import os

    import microturn.trainer as trainer

    shipped = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(os.path.dirname(trainer.__file__),
                                                                             "configs", "*.toml")))
    assert name in shipped, shipped  # a config added to the folder is added to this list too
    assert len(shipped) == 3, shipped
    cfg = load_named(name)
    assert cfg.train.steps >= 1 and cfg.model.dim >= 1
