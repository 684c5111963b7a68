"""Fact probing (`dataset.task: fact_probing`, data/facts.py), LAMA's way (Petroni et al. 2019; P-Tuning v1's first
experiment), shared by every method that declares it in `task_kinds`: pet (zero-shot with the hand-written pattern
through `prompttune eval method=pet`; trained, the manual prompt with the whole LM fine-tuned, P-Tuning's MP+FT),
prompt_tuning, ptuning_v1 (LM frozen, its default) and ptuning_v2.

A fact goes through its relation's one pattern (`The capital of {text_a} is {mask}.`); soft prompts sit where each
method puts them. The answer head scores the state at the mask (the last token before it on a causal LM) with the
LM head over the whole vocabulary, `dataset.candidates=vocabulary` (LAMA's precision@1), or over the relation's
objects that are one token for the model, `candidates=relation`. An encoded fact's label is its object's index
among those scores (its token id over the vocabulary), so training is cross-entropy over them at the answer
position (Method.training_loss) and the metrics rank the object among them (training/probing_metrics.py).

An object counts as one token when the tokenizer gives one token, not the unknown one, for it with the space the
pattern puts before the mask (` Athens`), as LAMA keeps single-token objects; a run keeps only those facts
(`ProbingHead.answers`, applied to the split), and the CLI counts them on the tokenizer alone before a run dir is
written (`require_answerable_facts`). `method.head` does not apply (every head is this one); a verbalizer,
calibration, demonstrations or PET's ensemble stop the run with one line (`check_probing_config`).

One prompt per relation: each relation is a dataset of its own, and a run trains on that relation's facts.
"""

from dataclasses import replace

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from prompttune.config.schema import message
from prompttune.data.facts import FACT_PROBING, facts_of, objects_of, require_enough
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods.core import CLASSIFICATION, Calibration, MethodConfig
from prompttune.models.backbone import Backbone, HiddenFn, pick
from prompttune.models.families import EncoderDecoder
from prompttune.prompts.encoding import EncodedExample
from prompttune.prompts.template import parse_template

# The `task_kinds` of a method that probes facts too (its head and labels come from here)
WITH_PROBING = frozenset({CLASSIFICATION, FACT_PROBING})
RELATION = "relation"  # dataset.candidates: the relation's objects only


def single_token_ids(objects: list[str], tokenizer: PreTrainedTokenizerBase, space_before: bool) -> list[int]:
    """Each object's token id where it is one token (with a leading space when the pattern puts one before the
    mask), -1 where it is more tokens or the unknown token; one tokenizer call."""
    if not objects:
        return []
    ids = tokenizer([f" {o}" if space_before else o for o in objects], add_special_tokens=False)["input_ids"]
    unknown = tokenizer.unk_token_id
    return [t[0] if len(t) == 1 and t[0] != unknown else -1 for t in ids]


class ProbingHead(nn.Module):
    """Scores [B, V] of every token of the vocabulary at the answer position, or [B, C] of the relation's one-token
    objects (`candidate_ids`, ascending token ids); `targets[label]` is an object's index among those scores, -1
    where it is not one token."""

    def __init__(self, backbone: Backbone, objects: list[str], space_before: bool, candidates: str):
        super().__init__()
        if isinstance(backbone, EncoderDecoder):
            raise UserError(
                f"fact probing scores one token at the mask of masked and causal LMs, not {backbone.name}'s decoder; "
                "use a masked or causal LM"
            )
        self.backbone = backbone
        backbone.lm_head  # noqa: B018 -- fails now, with a clear message, on a backbone without one
        token_ids = torch.tensor(single_token_ids(objects, backbone.tokenizer, space_before), dtype=torch.long)
        self.relation = candidates == RELATION
        if self.relation:
            candidate_ids = torch.unique(token_ids[token_ids >= 0])
            targets = torch.where(token_ids >= 0, torch.searchsorted(candidate_ids, token_ids), -1)
        else:
            candidate_ids, targets = torch.zeros(0, dtype=torch.long), token_ids
        self.register_buffer("candidate_ids", candidate_ids, persistent=False)
        self.targets = targets.tolist()

    def answers(self, fact: Example) -> bool:
        """Whether the fact's object is one token for this model (the facts a run keeps)."""
        return self.targets[fact.label] >= 0

    def relabel(self, encoded: list[EncodedExample], facts: list[Example]) -> list[EncodedExample]:
        """The encoded facts with their object's index among the scores as the label."""
        for fact in facts:
            if not self.answers(fact):
                raise UserError(
                    f"fact {fact.guid} ({fact.text_a}): its object is not one token for model {self.backbone.name}; "
                    "fact probing keeps single-token objects only"
                )
        return [replace(e, label=self.targets[fact.label]) for e, fact in zip(encoded, facts, strict=True)]

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
        answer = pick(hidden, batch["mask_positions"][:, :1])[:, 0]
        if self.relation:
            return self.backbone.token_logits(answer, self.candidate_ids)
        return self.backbone.lm_head(self.backbone.head_input(answer)).float()

    def answer_text(self, indices: list[int]) -> list[str]:
        """The tokens (or candidate objects) at these indices of the scores, as text."""
        ids = self.candidate_ids[indices].tolist() if self.relation else indices
        return [self.backbone.tokenizer.decode([i]).strip() for i in ids]


def check_probing_config(cfg: MethodConfig) -> None:
    """Settings that a fact's answer has no use for: one line each."""
    unsets = (("verbalizer", None), ("calibration", Calibration.none), ("demonstrations", False), ("mode", "single"))
    for key, unset in unsets:
        value = getattr(cfg, key, unset)
        if value != unset:
            shown = "null" if unset is None else str(unset).lower()
            allowed = f"{shown} on a fact_probing dataset (the answer is the fact's object, one token)"
            raise UserError(message(f"method.{key}", value, allowed))


def answer_space(dataset_cfg: DictConfig, method_cfg: DictConfig) -> bool:
    """Whether the template the method reads puts a space before the mask (method.template, else the pattern's)."""
    template = method_cfg.get("template")
    if template is None:
        patterns, pattern_id = dataset_cfg.patterns, int(method_cfg.get("pattern_id") or 0)
        template = patterns[min(pattern_id, len(patterns) - 1)].template
    return parse_template(str(template)).space_before_mask


def require_answerable_facts(
    dataset_cfg: DictConfig, method_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, model_name: str
) -> int:
    """How many of the relation's facts have a one-token object for the tokenizer; one line when too few."""
    facts = facts_of(dataset_cfg)
    objects = objects_of(facts)
    by_object = dict(
        zip(objects, single_token_ids(objects, tokenizer, answer_space(dataset_cfg, method_cfg)), strict=True)
    )
    kept = sum(by_object[obj] >= 0 for _, obj in facts)
    require_enough(kept, len(facts), str(dataset_cfg.name), model_name)
    return kept
