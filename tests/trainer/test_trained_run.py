"""Reading a trained run for inference (``trainer.trained_run``): a ``microturn train`` folder
loads without DeepSpeed into a model with every weight in place and a session steps on it;
checkpoints of another sequence layout, settings that do not fit the weights, damaged or
missing weight files and pickled code are refused with a message naming the cause."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from microturn.trainer.batch import SEQUENCE_LAYOUT
from microturn.trainer.checkpoint import CONFIG_NAME, check_resume
from microturn.trainer.model import InteractionModel
from microturn.trainer.session import Session, SessionConfig
from microturn.trainer.train_config import as_dict, load_named
from microturn.trainer.trained_run import MODEL_FILE, load_trained_run
from session_runs import TRAIN_STEPS, one_thread, trained_run_dir, user_audio

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TAG = f"step{TRAIN_STEPS}"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture
def run_copy(tmp_path):
    """A copy of the trained run (without the optimiser states, which inference never reads)."""
    out = tmp_path / "run"
    shutil.copytree(trained_run_dir(), out, ignore=shutil.ignore_patterns("*optim_states.pt"))
    return out


def _edit_config(run, edit) -> None:
    path = run / "checkpoints" / TAG / CONFIG_NAME
    saved = json.loads(path.read_text())
    edit(saved)
    path.write_text(json.dumps(saved))


def test_a_trained_run_loads_whole_and_a_session_steps_on_it():
    run = load_trained_run(trained_run_dir())
    cfg = load_named("tiny-cpu")
    assert run.tag == TAG and run.step == TRAIN_STEPS
    assert run.model == cfg.model and run.train.steps == TRAIN_STEPS
    model = InteractionModel(run.model, seed=1, dropless=True)
    model.load_state_dict(run.state_dict, strict=True)  # every weight, every expert, nothing else
    experts = [k for k in run.state_dict if ".deepspeed_experts." in k]
    assert len({k.split(".deepspeed_experts.")[1].split(".")[0] for k in experts}) == cfg.model.n_experts
    fresh = InteractionModel(run.model, seed=cfg.train.seed)
    assert not torch.equal(fresh.text_head.proj.weight, run.state_dict["text_head.proj.weight"])  # trained
    session = Session(trained_run_dir(), SessionConfig(flow_steps=1))
    out = session.step(user_audio(1)[0])
    assert out.chunk == 0 and out.dmel_TM.shape == (4, 80)


@pytest.mark.parametrize("where", ["config", "run_config"])
def test_a_layout_1_checkpoint_is_refused_naming_the_layout(run_copy, where):
    # Layout 1 runs saved no "layout" key, in config.json or in the checkpoint's run_config.json.
    config = run_copy / "config.json"
    saved = json.loads(config.read_text())
    saved.pop("layout")
    config.write_text(json.dumps(saved))
    if where == "run_config":
        _edit_config(run_copy, lambda saved: saved.pop("layout"))
        with pytest.raises(ValueError, match=f"sequence layout 1; this version decodes layout {SEQUENCE_LAYOUT}"):
            load_trained_run(str(run_copy))
        with pytest.raises(ValueError, match="sequence layout 1"):
            Session(str(run_copy))
        with pytest.raises(ValueError, match=f"layout 1, this trainer uses layout {SEQUENCE_LAYOUT}"):
            check_resume(str(run_copy / "checkpoints"), TAG, as_dict(load_named("tiny-cpu")))
    else:
        # config.json is what `microturn train` writes for people; the checkpoint's own
        # run_config.json is what decides.
        assert load_trained_run(str(run_copy)).tag == TAG


def test_settings_that_do_not_fit_the_weights_are_refused(run_copy):
    _edit_config(run_copy, lambda saved: saved["model"].update(dim=32))
    run = load_trained_run(str(run_copy))  # settings alone are valid
    with pytest.raises(ValueError, match="weights do not fit its model config: size mismatch"):
        Session(run)
    _edit_config(run_copy, lambda saved: saved["model"].update(dim=64, n_experts=8))
    with pytest.raises(ValueError, match="holds 8 expert file"):
        load_trained_run(str(run_copy))
    _edit_config(run_copy, lambda saved: saved["model"].update(n_experts=4, dimm=64))
    with pytest.raises(ValueError, match="dimm"):
        load_trained_run(str(run_copy))


def test_damaged_or_missing_files_are_refused(run_copy, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_trained_run(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no complete checkpoint"):
        load_trained_run(str(empty))
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        load_trained_run(str(run_copy), tag="step999")
    folder = run_copy / "checkpoints" / TAG
    expert = folder / "layer_1_expert_3_mp_rank_00_model_states.pt"
    data = expert.read_bytes()
    expert.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="layer_1_expert_3.*not a readable weights file"):
        load_trained_run(str(run_copy))
    expert.unlink()
    with pytest.raises(ValueError, match="holds 7 expert file"):
        load_trained_run(str(run_copy))
    os.remove(folder / MODEL_FILE)
    with pytest.raises(ValueError, match=f"no {MODEL_FILE}"):
        load_trained_run(str(run_copy))


class _Payload:
    """An object a pickle would rebuild by running code."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_weights_files_holding_code_are_not_run(run_copy, capsys):
    folder = run_copy / "checkpoints" / TAG
    torch.save({"module": {"x": _Payload()}}, folder / MODEL_FILE)
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_trained_run(str(run_copy))
    assert "code ran" not in capsys.readouterr().out
