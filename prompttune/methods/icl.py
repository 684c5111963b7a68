"""In-context learning (Brown et al. 2020, GPT-3): no training; demonstrations in the prompt.

`demos_per_class` training examples of each label, each written as the pattern filled with its label word,
come before the query; the query is scored like PET's (label words at the mask / next token). With
`selection: random` one set is drawn from the train split by the run's seed and shuffled by it, the same for
every query (and for the content-free input of contextual calibration, as Zhao et al. 2021 do it). With
`selection: similar` each query gets the training examples of each label nearest to it by the cosine of
mean-pooled backbone states (KATE, Liu et al. 2022), ordered least to most similar, so the nearest sits next
to the query. The query is cut to model.max_length, as PET's; the demonstrations share the rest of
`method.max_length` tokens (LM-BFF's GPT-3 runs used 512; SmolLM2 reads 8192), cut the same way before every
query, so a set drawn by seed is one fixed prompt, which a causal LM runs once for all queries.

`chat: true` writes the prompt as instruction-tuned models were trained to read it, through the model's own chat
template (`prompttune.prompts.chat`): each demonstration is a user turn (an instruction naming the task and the
label words as the options, then the text) answered by an assistant turn (its label word), and the query is the
last user turn; the label words are scored as the assistant's answer. The instruction is `method.instruction`,
else the dataset's `instruction`, else "Classify the text.".
"""

import random
from dataclasses import dataclass
from enum import StrEnum

import torch

from prompttune.config.schema import Invalid, bounded
from prompttune.data.records import Example
from prompttune.methods import register
from prompttune.methods.core import AUTO, Head, MethodConfig
from prompttune.methods.prompted import PromptedMethod
from prompttune.prompts.chat import ChatTurns, chat_template, chat_turns, instruction_with_options
from prompttune.prompts.demonstrations import by_label, draw_per_label
from prompttune.prompts.encoding import TemplateEncoder, collate
from prompttune.prompts.template import parse_template

EMBED_BATCH = 32
GENERIC_INSTRUCTION = "Classify the text."


class Selection(StrEnum):
    random = "random"  # one set by the seed, shuffled by it
    similar = "similar"  # nearest to each query by mean-pooled states


@dataclass
class IclConfig(MethodConfig):
    demos_per_class: int = bounded(1, ge=0)
    selection: Selection = Selection.random
    # tokens for demonstrations + query (the query: at most model.max_length); null: twice model.max_length
    max_length: int | None = bounded(512, ge=1)
    chat: bool = False  # through the model's chat template, demonstrations as earlier turns
    instruction: str | None = None  # chat: what the task asks; null: the dataset's instruction

    def check(self) -> None:
        super().check()
        if self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer (method=icl scores label words)")
        if self.chat and self.verbalizer == AUTO:
            raise Invalid("verbalizer", AUTO, "a fixed verbalizer with method.chat=true (the instruction names it)")
        if self.chat and self.template is not None:
            raise Invalid("template", self.template, "null with method.chat=true (the chat template frames the text)")


@register("icl")
class Icl(PromptedMethod):
    config_class = IclConfig
    trains = False

    def setup(self) -> None:
        self.backbone.freeze()
        wanted = self.cfg.max_length or 2 * self.max_length
        self.context_length = self._demonstration_context(wanted, "method.max_length")
        self.pool: list[Example] = []
        self.fixed: list[Example] = []

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        super().fit_examples(train, dev)  # verbalizer=auto first: the demonstrations are written with the words
        self.pool = list(train)
        rng = random.Random(self.task.seed)
        self.fixed = draw_per_label(by_label(train, len(self.task.labels)), self.cfg.demos_per_class, rng)
        rng.shuffle(self.fixed)
        if self.cfg.selection == "similar" and self.pool:
            self._pool_embeddings = self._embed(self.pool)

    def fitted_json(self) -> dict:
        fitted = super().fitted_json()
        return fitted | {"demonstrations": [e.guid for e in self.fixed]} if self.cfg.selection == "random" else fitted

    def template_source(self) -> str:
        if not self.cfg.chat:
            return super().template_source()
        self.chat_turns: ChatTurns = chat_turns(self.backbone.tokenizer, self.backbone.name)
        body = "{text_a}\n{text_b}" if self.task.has_text_b else "{text_a}"
        return chat_template(self.chat_turns, self.instruction(), body)

    def instruction(self) -> str:
        words = self.cfg.verbalizer or self.pattern()["verbalizer"]
        first_words = [words[label][0] for label in self.task.labels]
        return instruction_with_options(
            self.cfg.instruction or self.task.instruction or GENERIC_INSTRUCTION, first_words
        )

    def preamble(self) -> str:
        return self.chat_turns.preamble if self.cfg.chat else ""

    def _demonstration_separator(self) -> list[int]:
        return [] if self.cfg.chat else super()._demonstration_separator()

    def demonstrations_after_query(self) -> bool:
        return False

    def demonstrations(self, examples: list[Example]) -> list[list[Example]]:
        if self.cfg.selection == "random" or not self.pool or not self.cfg.demos_per_class:
            return [self.fixed] * len(examples)
        return self._nearest(examples)

    def _nearest(self, examples: list[Example]) -> list[list[Example]]:
        """Each query's demos_per_class nearest training examples of each label, least similar first."""
        similarity = self._embed(examples) @ self._pool_embeddings.T  # [Q, P]
        labels = torch.tensor([e.label for e in self.pool], device=similarity.device)
        chosen = []
        for label in range(len(self.task.labels)):
            of_label = similarity.masked_fill(labels[None, :] != label, float("-inf"))
            k = min(self.cfg.demos_per_class, int((labels == label).sum()))
            chosen.append(of_label.topk(k, dim=1).indices)
        picked = torch.cat(chosen, 1)  # [Q, k * C]
        order = similarity.gather(1, picked).argsort(1)
        picked = picked.gather(1, order).tolist()
        return [[self.pool[i] for i in row] for row in picked]

    @torch.no_grad()
    def _embed(self, examples: list[Example]) -> torch.Tensor:
        """Unit-length mean-pooled last hidden states of the plain texts, [N, H]."""
        template = parse_template(self.task.plain_template())
        encoder = TemplateEncoder(template, self.backbone.tokenizer, type(self.backbone), self.max_length)
        encoded = encoder.encode(examples)
        device = self.backbone.embeddings.weight.device
        out = []
        for start in range(0, len(encoded), EMBED_BATCH):
            batch = collate(encoded[start : start + EMBED_BATCH], self.pad_token_id)
            mask = batch["attention_mask"].to(device)
            hidden = self.backbone.hidden_states(batch["input_ids"].to(device), mask).float()
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)
