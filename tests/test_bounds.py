"""Bounds before allocation, and the overrides resume= and eval run= do not take: one line, exit 2."""

import logging
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig

from prompttune import cli
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.models import memory
from prompttune.models.loading import FAMILIES, fp32_bytes
from prompttune.runs.lifecycle import build
from tests.helpers import compose_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pet_tiny_bert_run"


def one_line_error(args: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "args",
    [
        ["method=prompt_tuning", "method.n_tokens=100000000"],
        ["method=ptuning_v1", "method.n_tokens=128"],
        ["method=ptuning_v2", "method.prefix=hidden_states", "method.n_tokens=500"],
    ],
)
def test_soft_tokens_that_leave_no_room_for_text_stop_before_anything_is_written(args, tmp_path, monkeypatch, capsys):
    err = one_line_error(["train", *args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, monkeypatch, capsys)
    assert "method.n_tokens=" in err and "model.max_length=128" in err
    assert not (tmp_path / "run").exists()


def test_prompt_parameters_beyond_memory_are_refused_before_they_are_allocated(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)  # 1 MiB
    cfg = compose_config("method=ptuning_v2", "method.n_tokens=100000", "model=tiny_bert", "trainer.device=cpu")
    with pytest.raises(UserError, match=r"method.n_tokens=100000 .* needs about .* GiB, more than the 0.0 GiB"):
        build(cfg, has_text_b=False)


def test_a_model_is_measured_on_the_meta_device_before_it_is_loaded():
    config = AutoConfig.for_model(
        "bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    built = FAMILIES["encoder"].auto_class.from_config(config)
    assert fp32_bytes(FAMILIES["encoder"], config) == 4 * sum(p.numel() for p in built.parameters())


def test_max_length_beyond_the_model_positions_is_capped_with_a_warning(caplog):
    cfg = compose_config("method=pet", "model=tiny_bert", "model.max_length=4096", "trainer.device=cpu")
    with caplog.at_level(logging.WARNING):
        setup = build(cfg, has_text_b=False)
    assert setup.method.max_length == 128
    assert "model.max_length=4096 exceeds what tiny_bert reads (128 positions)" in caplog.text
    (encoded,) = setup.method.encode([Example("long", "word " * 1000, 0)])
    assert len(encoded.input_ids) == 128


def test_resume_rejects_an_override_it_does_not_take(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    err = one_line_error(["train", f"resume={run_dir}", "method=pet"], tmp_path, monkeypatch, capsys)
    assert "drop method=pet" in err


def test_eval_of_a_run_rejects_overrides_it_does_not_take_and_writes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    args = ["eval", f"run={FIXTURE}", "method.pattern_id=1", "model=tiny_llama", f"hydra.run.dir={out}"]
    err = one_line_error(args, tmp_path, monkeypatch, capsys)
    assert "takes method.pattern_id, model from the run" in err
    assert not out.exists()
