"""What methods on a language model share: the template an example is read through, the head that scores it
(label words at the mask, a linear or the family's classification head), LM-BFF's label-word search,
demonstrations, and the content-free inputs of contextual calibration (OpenPrompt keeps template, verbalizer and
model apart in the same way). Every method but `tfidf` builds on `PromptedMethod`; `finetune`'s template is
the plain text.
"""

import logging
from typing import Any, ClassVar

import torch
from torch import nn

from prompttune.data.records import Example
from prompttune.data.tagging import TOKEN_CLASSIFICATION
from prompttune.errors import UserError
from prompttune.methods.core import AUTO, Method
from prompttune.methods.heads import ClassificationHead, LinearHead, VerbalizerHead
from prompttune.methods.probing import FACT_PROBING, ProbingHead
from prompttune.methods.tagging import TaggingHead, WordEncoder
from prompttune.models.backbone import pick
from prompttune.models.families import EncoderDecoder
from prompttune.models.memory import TRAINED_BYTES, check_fits
from prompttune.prompts import label_search
from prompttune.prompts.demonstrations import DemonstrationEncoder
from prompttune.prompts.encoding import EncodedExample, TemplateEncoder, collate
from prompttune.prompts.template import Template, parse_template
from prompttune.prompts.verbalizer import Verbalizer

log = logging.getLogger(__name__)
SEARCH_BATCH = 16


class PromptedMethod(Method):
    soft_tokens_allowed: ClassVar[bool] = False

    def prepare(self) -> None:
        # tokens for a query and its demonstrations: the query is cut to max_length, they share the rest
        self.context_length = self.max_length  # methods with demonstrations widen it in setup()
        if self.backbone is not None:
            self.template = self._checked_template(self.template_source())
            self.head = self._build_head()
            if self.cfg.freeze_backbone:
                self.backbone.freeze()

    # --- what methods override ----------------------------------------------------------------
    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        """Receive the training examples before training or evaluation (demonstrations, closed-form fits).
        Called again on a restored method (`self.restored`), which keeps what its checkpoint gave it.
        Overrides call super() first: here verbalizer=auto searches its label words."""
        if self.cfg.verbalizer == AUTO and not self.restored:
            self._search_label_words(train, dev)

    def fitted_json(self) -> dict[str, Any]:
        """What fit_examples learnt that is not a tensor (saved as checkpoint/fitted.json)."""
        return dict(self.label_search) if self.cfg.verbalizer == AUTO else {}

    def load_fitted_json(self, fitted: dict[str, Any]) -> None:
        """Restore what fitted_json saved."""
        if self.cfg.verbalizer == AUTO:
            if not isinstance(fitted.get("label_words"), dict):
                raise UserError("the run has no searched label words (checkpoint/fitted.json); retrain it")
            self.label_search = fitted
            self.head = self._verbalizer_head(fitted["label_words"])

    def template_source(self) -> str:
        if self.cfg.template is not None:
            return self.cfg.template
        verbalized = (self.cfg.head == "verbalizer" or self.probes_facts) and not self.tags_words
        return self.pattern()["template"] if verbalized else self.task.plain_template()

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask)

    def demonstrations(self, examples: list[Example]) -> list[list[Example]] | None:
        """The training examples put in each example's context, as the pattern filled with their label word;
        None: no demonstrations."""
        return None

    def preamble(self) -> str:
        """Text before everything else, demonstrations included (a chat's system turn); "": none."""
        return ""

    def demonstrations_after_query(self) -> bool:
        """LM-BFF appends demonstrations after the query on masked LMs; a causal LM reads them before it."""
        return not self.backbone.cut_at_mask

    # --- shared machinery ---------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.segment_ids(batch.get("token_type_ids")):
            return self.head(self.hidden_states, batch)

    @property
    def pad_token_id(self) -> int:
        return self.backbone.tokenizer.pad_token_id

    def pattern(self) -> dict[str, Any]:
        patterns = self.task.patterns
        if self.cfg.pattern_id >= len(patterns):
            raise UserError(
                f"method.pattern_id={self.cfg.pattern_id} but dataset {self.task.name} has {len(patterns)} "
                f"patterns; use 0..{len(patterns) - 1}"
            )
        return patterns[self.cfg.pattern_id]

    @property
    def tags_words(self) -> bool:
        """A token-classification task: the tag head on every word (methods/tagging.py), no pattern."""
        return self.task.kind == TOKEN_CLASSIFICATION

    @property
    def probes_facts(self) -> bool:
        """A fact-probing task: the pattern's answer over the vocabulary (methods/probing.py), whatever the head."""
        return self.task.kind == FACT_PROBING

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        if self.tags_words:
            family, unspaced = type(self.backbone), self.task.unspaced
            encoder = WordEncoder(self.template, self.backbone.tokenizer, family, self.max_length, unspaced)
            return encoder.encode(examples)
        mask_tokens = self.head.verbalizer.max_tokens if isinstance(self.head, VerbalizerHead) else 1
        family, tokenizer = type(self.backbone), self.backbone.tokenizer
        encoder = TemplateEncoder(self.template, tokenizer, family, self.max_length, mask_tokens, self.preamble())
        if self.probes_facts:  # the label: the object's index among the head's scores
            return self.head.relabel(encoder.encode(examples), examples)
        demonstrations = self.demonstrations(examples)
        if demonstrations is None:
            return encoder.encode(examples)
        words, separator = self.head.verbalizer.first_words(), self._demonstration_separator()
        after_query, budget = self.demonstrations_after_query(), self.context_length - self.max_length
        return DemonstrationEncoder(encoder, words, separator, after_query, budget).encode(examples, demonstrations)

    def _demonstration_context(self, wanted: int, key: str) -> int:
        """`wanted` tokens for a query and its demonstrations, or as many as the backbone has positions for (with
        a warning naming `key`); an error when that leaves the demonstrations no room beside the query."""
        context = self.backbone.fitting_length(wanted, key)
        if context <= self.max_length:
            raise UserError(
                f"{key}={context} leaves no room for demonstrations beside a query of "
                f"model.max_length={self.max_length} tokens; raise {key} or lower model.max_length"
            )
        return context

    def _demonstration_separator(self) -> list[int]:
        tokenizer = self.backbone.tokenizer
        if not self.backbone.cut_at_mask and tokenizer.sep_token_id is not None:
            return [tokenizer.sep_token_id]
        return tokenizer("\n", add_special_tokens=False)["input_ids"]

    def content_free_examples(self) -> list[Example]:
        """The inputs of contextual calibration (Zhao et al. 2021): "N/A", "" and the mask token, in every
        text slot (a tokenizer without a mask token gets the literal "[MASK]", as Zhao et al. gave GPT-3)."""
        mask = self.backbone.tokenizer.mask_token or "[MASK]"
        texts = ["N/A", "", mask]
        return [Example(f"content-free-{i}", t, 0, t if self.task.has_text_b else None) for i, t in enumerate(texts)]

    def _checked_template(self, source: str) -> Template:
        template = parse_template(source)
        if "text_b" in template.text_slots and not self.task.has_text_b:
            raise UserError(f"template {source!r} uses {{text_b}} but dataset {self.task.name} has only text_a")
        needs_mask = (self.cfg.head == "verbalizer" and not self.tags_words) or self.probes_facts
        if needs_mask and not template.has_mask:
            raise UserError(f"template {source!r} has no {{mask}}, which the verbalizer head needs; add one")
        if template.n_soft and not self.soft_tokens_allowed:
            raise UserError(
                f"template {source!r} has soft tokens but method={self.cfg.name} trains none; "
                "use method=prompt_tuning or ptuning_v1, or drop the {soft} slots"
            )
        kinds = [s.kind for s in template.segments]
        after_mask = template.segments[kinds.index("mask") + 1 :] if template.has_mask else ()
        unread = sorted({s.value for s in after_mask if s.kind == "text"})
        if unread and self.backbone.cut_at_mask:
            log.warning(
                "template %r: a causal LM reads it only up to {mask}, so it never sees {%s}; choose a pattern that "
                "ends with {mask} (method.pattern_id, method.ensemble_patterns) or a masked LM",
                source,
                "}, {".join(unread),
            )
        return template

    def _build_head(self) -> nn.Module:
        if self.tags_words:
            return TaggingHead(self.backbone, len(self.task.labels))
        if self.probes_facts:
            space = self.template.space_before_mask
            return ProbingHead(self.backbone, self.task.labels, space, self.task.candidates)
        if self.cfg.head == "linear":
            return LinearHead(self.backbone, len(self.task.labels))
        if self.cfg.head == "classification":
            return ClassificationHead(self.backbone, len(self.task.labels))
        words = self.cfg.verbalizer or self.pattern()["verbalizer"]
        if words == AUTO:
            words = self.pattern()["verbalizer"]  # until fit_examples has searched
        return self._verbalizer_head(words)

    def _verbalizer_head(self, words: dict[str, list[str]]) -> VerbalizerHead:
        verbalizer = Verbalizer(
            {k: list(v) for k, v in words.items()},
            self.task.labels,
            self.backbone.tokenizer,
            space_before=self.template.space_before_mask,
            reduce=self.cfg.verbalizer_reduce,
        )
        return VerbalizerHead(self.backbone, verbalizer)

    def _search_label_words(self, train: list[Example], dev: list[Example]) -> None:
        if isinstance(self.backbone, EncoderDecoder):
            raise UserError(
                "method.verbalizer=auto scores words at the mask of masked and causal LMs, not T5's decoder; "
                "give T5 its words"
            )
        tokenizer, space = self.backbone.tokenizer, self.template.space_before_mask
        train_lp, dev_lp = self._mask_log_probs(train), self._mask_log_probs(dev)
        train_labels, dev_labels = torch.tensor([e.label for e in train]), torch.tensor([e.label for e in dev])
        n_labels, k = len(self.task.labels), self.cfg.auto_candidates
        per_class = label_search.candidates(train_lp, train_labels, n_labels, tokenizer, space, k, self.task.unspaced)
        ranked = label_search.search(train_lp, train_labels, dev_lp, dev_labels, per_class, self.cfg.auto_assignments)

        def words(assignment) -> dict[str, list[str]]:
            texts = tokenizer.batch_decode([[t] for t in assignment.token_ids])
            return {label: [text.strip()] for label, text in zip(self.task.labels, texts, strict=True)}

        top = [
            {"label_words": words(a), "train_accuracy": a.train_accuracy, "dev_accuracy": a.dev_accuracy}
            for a in ranked[:10]
        ]
        self.label_search = {
            **top[0],
            "candidates": [tokenizer.batch_decode([[t] for t in c]) for c in per_class],
            "top": top,
        }
        self.head = self._verbalizer_head(top[0]["label_words"])
        log.info(
            "label words found: %s (train %.3f, dev %.3f)",
            top[0]["label_words"],
            top[0]["train_accuracy"],
            top[0]["dev_accuracy"],
        )

    @torch.no_grad()
    def _mask_log_probs(self, examples: list[Example]) -> torch.Tensor:
        """The vocabulary's log-probabilities at the mask of every example through the template, [N, V]."""
        family, tokenizer = type(self.backbone), self.backbone.tokenizer
        encoder = TemplateEncoder(self.template, tokenizer, family, self.max_length, preamble=self.preamble())
        encoded = encoder.encode(examples)
        device, was_training = self.backbone.embeddings.weight.device, self.training
        self.eval()
        out = []
        for start in range(0, len(encoded), SEARCH_BATCH):
            batch = {
                k: v.to(device) for k, v in collate(encoded[start : start + SEARCH_BATCH], self.pad_token_id).items()
            }
            hidden = self.hidden_states(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
            out.append(self.backbone.lm_log_probs(pick(hidden, batch["mask_positions"][:, :1]))[:, 0].cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.backbone.tokenizer))


class SoftPromptMethod(PromptedMethod):
    """A method that trains soft tokens placed at the template's {soft} slots (trained at trainer.prompt_lr)."""

    soft_tokens_allowed = True

    def prepare(self) -> None:
        super().prepare()
        check_fits(
            self.prompt_numbers() * TRAINED_BYTES,
            f"method.n_tokens={self.cfg.n_tokens} (its prompt parameters, gradients and AdamW moments)",
            "lower method.n_tokens",
        )

    def prompt_numbers(self) -> int:
        """About how many numbers the prompt parameters hold: estimated before they are allocated."""
        return self.template.n_soft * self.backbone.hidden_size


def soft_prefixed(template: str, n_tokens: int) -> str:
    """The template with `n_tokens` soft tokens before it, unless it places its own {soft} slots."""
    return template if "{soft" in template else f"{{soft:{n_tokens}}}{template}"
