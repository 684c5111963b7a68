"""Instruction prompting through a chat template (method=icl method.chat=true), and the budget keys the
paradigm curve relies on (trainer.min_epochs, trainer.evals)."""

import pytest
from omegaconf import OmegaConf

from prompttune.errors import UserError
from prompttune.prompts.chat import chat_turns, instruction_with_options
from prompttune.prompts.template import parse_template
from prompttune.training.loop import dev_interval, total_steps
from tests.helpers import build_method, toy_examples
from tests.test_cli import prompttune

SMOLLM2_TURN_END = "<|im_end|>\n<|im_start|>assistant\n"


def test_the_chat_template_is_cut_around_the_messages():
    method = build_method("method=icl", "model=tiny_llama")  # SmolLM2's tokenizer and chat template
    turns = chat_turns(method.backbone.tokenizer, "tiny_llama")
    assert turns.preamble.startswith("<|im_start|>system\n") and turns.preamble.endswith("<|im_start|>user\n")
    assert turns.to_answer == SMOLLM2_TURN_END
    assert turns.after_answer == "<|im_end|>\n<|im_start|>user\n"


def test_demonstrations_are_earlier_turns_and_the_label_word_is_the_answer():
    method = build_method("method=icl", "model=tiny_llama", "method.chat=true", "method.demos_per_class=1")
    train = toy_examples(8)
    method.fit_examples(train, train)
    query = toy_examples(3)[2:]
    (encoded,) = method.encode(query)
    text = method.backbone.tokenizer.decode(encoded.input_ids)
    instruction = "Classify the sentiment of this movie review. Answer with one word: terrible or great."
    assert text.startswith("<|im_start|>system\n") and text.count("<|im_start|>system") == 1
    assert text.count(instruction) == 3  # two demonstrations (one per label) and the query
    answers = [f"{SMOLLM2_TURN_END}{word}<|im_end|>" for word in ("terrible", "great")]
    assert all(answer in text for answer in answers)
    assert text.endswith(f"{query[0].text_a}{SMOLLM2_TURN_END}")  # the label words are scored right after it
    assert encoded.mask_positions == [len(encoded.input_ids) - 1]


@pytest.mark.slow
def test_a_model_without_a_chat_template_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="has no chat template"):
        build_method("method=icl", "model=tiny_bert", "method.chat=true")
    run_dir = tmp_path / "run"
    result = prompttune("train", "method=icl", "model=tiny_bert", "method.chat=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "has no chat template" in result.stderr
    assert not run_dir.exists()  # checked before the run dir is made


@pytest.mark.parametrize(
    "key, value", [("verbalizer", "auto"), ("template", "'{text_a} It was {mask}.'")], ids=["auto", "template"]
)
def test_chat_refuses_what_it_cannot_name_or_frame(key, value):
    with pytest.raises(UserError, match=f"method.{key}"):
        build_method("method=icl", "model=tiny_llama", "method.chat=true", f"method.{key}={value}")


def test_the_instruction_names_the_options():
    assert (
        instruction_with_options("Pick one.", ["Yes", "Maybe", "No"])
        == "Pick one. Answer with one word: Yes, Maybe or No."
    )


def test_a_newline_before_a_slot_stays_in_the_text_and_a_space_moves_to_the_slot():
    newline = parse_template("assistant\n{mask}")
    assert newline.segments[0].value == "assistant\n" and not newline.space_before_mask
    assert parse_template("It was {mask}.").space_before_mask


def trainer(**keys):
    return OmegaConf.create({"max_steps": 40, "epochs": 10, "batch_size": 8, "eval_every": 10} | keys)


@pytest.mark.parametrize(
    "keys, examples, steps",
    [({}, 512, 40), ({"min_epochs": 2}, 32, 40), ({"min_epochs": 2}, 512, 128), ({"max_steps": None}, 30, 40)],
)
def test_min_epochs_grows_a_step_budget_with_the_split(keys, examples, steps):
    assert total_steps(trainer(**keys), examples) == steps


def test_evals_spread_dev_evaluations_evenly():
    assert dev_interval(trainer(), 128) == 10
    assert dev_interval(trainer(evals=4), 128) == 32
    assert dev_interval(trainer(evals=4), 6) == 2
    assert dev_interval(trainer(eval_every=None), 50) == 50
