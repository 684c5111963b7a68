"""Instruction prompting through a model's own chat template (the instruction-tuning era of prompting).

The template is rendered once with placeholder messages and cut into the text around them, so that a query and
its demonstrations become ordinary templates of this package's grammar: demonstrations are earlier user and
assistant turns, and the label words are scored as the assistant's answer to the last user turn.
"""

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from prompttune.errors import UserError

_USER, _ANSWER, _NEXT_USER = "\x00user\x00", "\x00answer\x00", "\x00next\x00"


@dataclass(frozen=True)
class ChatTurns:
    preamble: str  # before the first user message: e.g. a default system turn, then the user turn's opening
    to_answer: str  # from the end of a user message to the assistant's answer (the generation prompt)
    after_answer: str  # from the end of an answer to the next user message


def chat_turns(tokenizer: PreTrainedTokenizerBase, model: str) -> ChatTurns:
    """The pieces of the tokenizer's chat template around user messages and answers."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"model {model} has no chat template, so method.chat=true cannot format its prompts; "
            "use an instruction-tuned model (e.g. model=smollm2_135m) or method.chat=false"
        )
    messages = [
        {"role": "user", "content": _USER},
        {"role": "assistant", "content": _ANSWER},
        {"role": "user", "content": _NEXT_USER},
    ]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a template's own error (jinja): any type, one line
        problem = f"model {model}'s chat template cannot render a conversation ({err})"
        raise UserError(f"{problem}; use method.chat=false") from None
    if not all(text.count(piece) == 1 for piece in (_USER, _ANSWER, _NEXT_USER)):
        raise UserError(f"model {model}'s chat template does not keep messages verbatim; use method.chat=false")
    preamble, rest = text.split(_USER)
    _, rest = rest.split(_ANSWER)
    after_answer, to_answer = rest.split(_NEXT_USER)
    return ChatTurns(preamble, to_answer, after_answer)


def chat_template(turns: ChatTurns, instruction: str, body: str) -> str:
    """One user turn (the instruction, a blank line, the body's text slots) and the answer at {mask}, in the
    template grammar; `body` is already a template, everything else is literal text."""
    return f"{escape(instruction)}\n\n{body}{escape(turns.to_answer)}{{mask}}{escape(turns.after_answer)}"


def instruction_with_options(instruction: str, words: list[str]) -> str:
    """The task's instruction and the answers allowed: "... Answer with one word: terrible or great."."""
    options = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
    return f"{instruction.rstrip()} Answer with one word: {options}."


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
