"""Model families: one class per way a pretrained model reads a cloze and scores its answer.

A family decides how a template's {mask} is laid out, how a sequence is pooled for a linear head, how label
words are scored, which modules are the prompt layers and where the LM head is. `models/loading.py` maps a
model config to its family; methods, heads and encoding only ask the family.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

from prompttune.errors import UserError
from prompttune.models import packing
from prompttune.models.backbone import Backbone, HiddenFn, layer_linears, pick
from prompttune.models.prefix import ATTENTION, active_prefix, prefixes_from


class MaskedLM(Backbone):
    """BERT, RoBERTa: one mask token per token of the word, scored where it stands; the first token pools."""

    architectures = ("ForMaskedLM",)
    auto_class = AutoModelForMaskedLM
    mlm_probability = 0.15  # BERT's and PET's share of tokens chosen for masked-LM training
    has_lm_loss = True

    def lm_loss(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], generator: torch.Generator | None):
        """PET's masked-LM loss: the vocabulary is scored at the chosen positions only."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        corrupted, chosen = self.mask_tokens(ids, attention, generator)
        if not chosen.any():
            return None
        hidden = hidden_fn(corrupted, attention, batch["soft_positions"])[chosen]
        return F.nll_loss(self.lm_log_probs(hidden), ids[chosen])

    def mask_tokens(
        self, ids: torch.Tensor, attention: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's corruption, as PET applies it: 15% of the real, non-special tokens are chosen; 80% of them
        become the mask token, 10% a random token, 10% stay. Returns (corrupted ids, chosen positions)."""
        special = torch.tensor(self.tokenizer.all_special_ids, device=ids.device)
        draws = torch.rand((3, *ids.shape), generator=generator).to(ids.device)
        chosen = (draws[0] < self.mlm_probability) & attention.bool() & ~torch.isin(ids, special)
        to_mask = chosen & (draws[1] < 0.8)
        to_random = chosen & ~to_mask & (draws[2] < 0.5)
        random_ids = torch.randint(len(self.tokenizer), ids.shape, generator=generator).to(ids.device)
        corrupted = torch.where(to_mask, self.tokenizer.mask_token_id, torch.where(to_random, random_ids, ids))
        return corrupted, chosen


class CausalLM(Backbone):
    """Llama, GPT-2: the template is cut at {mask} and the label words are scored as the next tokens
    (a word of several tokens teacher-forced, all words in one batched forward); the last token pools."""

    architectures = ("ForCausalLM", "LMHeadModel")
    auto_class = AutoModelForCausalLM
    cut_at_mask = True
    packs = True  # less padding, a shared prefix run once (models/packing.py)
    min_shared = 4  # shorter shared prefixes are not worth a forward of their own

    def run_embedded(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self._may_pack(embeds.shape[1]):
            return super().run_embedded(embeds, attention_mask)
        shared = packing.shared_prefix(embeds, attention_mask) if self._may_share() else 0
        if shared >= self.min_shared:
            return self._run_after_shared_prefix(embeds, attention_mask, shared)
        return self._run_packed(embeds, attention_mask)

    def _run_packed(self, embeds: torch.Tensor, attention_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """The batch packed where that saves work; positions start at `offset` (after a shared prefix)."""
        plan = packing.plan(attention_mask, *self._layer_size())
        if plan is None:
            states, mask = embeds, attention_mask
            positions = torch.arange(offset, offset + embeds.shape[1], device=embeds.device).expand(len(embeds), -1)
        else:
            states, mask, positions = packing.pack(embeds, plan), plan.mask, plan.positions + offset
        hidden = self.body(inputs_embeds=states, attention_mask=mask, position_ids=positions).last_hidden_state
        return hidden if plan is None else packing.unpack(hidden, plan, embeds.shape)

    def _run_after_shared_prefix(self, embeds: torch.Tensor, attention_mask: torch.Tensor, shared: int):
        """The first `shared` positions, the same in every row, run once; the rest of every row attends to their
        keys and values after any prefix already in force (P-Tuning v2's), as it would to its own copy."""
        self._use_prefix_attention()
        outer = active_prefix()
        recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def record(module, keys, values):
            recorded[id(module)] = (keys, values)
            return outer(module, keys, values) if outer else None

        with prefixes_from(record):
            head = self.body(inputs_embeds=embeds[:1, :shared]).last_hidden_state

        def after_head(module, keys, values):
            before = [outer(module, keys, values)] if outer else []
            pieces = [p for p in before if p is not None] + [recorded[id(module)]]
            rows = max(k.shape[0] for k, _ in pieces)
            return tuple(torch.cat([p[i].expand(rows, -1, -1, -1) for p in pieces], 2) for i in (0, 1))

        with prefixes_from(after_head):
            rest = self._run_packed(embeds[:, shared:], attention_mask[:, shared:], offset=shared)
        return torch.cat([head.expand(len(embeds), -1, -1), rest], 1)

    def _may_pack(self, width: int) -> bool:
        # The packed mask is a boolean 4D mask, which SDPA reads (eager attention wants an additive one); hooks
        # that rewrite layer inputs index padded rows. Every layer gets that one mask, so a sliding-window layer
        # (Gemma 3: 5 of every 6, window 512) would see past its window: only rows no wider than it are packed.
        config = self.model.config
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        fits_window = window is None or width <= window
        attention = config._attn_implementation
        return self.packs and fits_window and not self._rewriting_layer_inputs and attention in ("sdpa", ATTENTION)

    def _may_share(self) -> bool:
        # A shared prefix computed once draws one dropout mask for all the rows that share it; without dropout
        # (Llama; any model in eval mode) it is exactly the padded computation.
        if not self.model.training:
            return True
        if not hasattr(self, "_has_dropout"):
            rates = [m.p for m in self.model.modules() if isinstance(m, nn.Dropout)]
            rates.append(getattr(self.model.config, "attention_dropout", 0.0) or 0.0)
            self._has_dropout = max(rates) > 0
        return not self._has_dropout

    def _layer_size(self) -> tuple[int, int]:
        """(weights of one layer's linear maps, hidden size): what packing.plan weighs."""
        if not hasattr(self, "_weights_per_layer"):
            layers = self.prompt_layers()
            self._weights_per_layer = sum(m.weight.numel() for m in layer_linears(layers)) // len(layers)
        return self._weights_per_layer, self.hidden_size

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        last = attention_mask.sum(1, keepdim=True) - 1
        return pick(hidden, last).squeeze(1)

    has_lm_loss = True

    def lm_loss(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], generator: torch.Generator | None):
        """The next-token loss over every real token after the first; the vocabulary is scored only there."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        predicted = attention[:, 1:].bool()  # position t predicts token t + 1 wherever that token is real
        if not predicted.any():
            return None
        hidden = hidden_fn(ids, attention, batch["soft_positions"])[:, :-1][predicted]
        return F.nll_loss(self.lm_log_probs(hidden), ids[:, 1:][predicted])

    def sequence_classifier(self, num_labels: int) -> nn.Module:
        """As LlamaForSequenceClassification and GPT2ForSequenceClassification: a plain linear `score`, no bias,
        on the last non-pad token."""
        return self._new_linear(self.hidden_size, num_labels, bias=False)

    def word_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        if verbalizer.max_tokens == 1:
            return super().word_scores(hidden_fn, batch, verbalizer)
        return self._teacher_forced_scores(hidden_fn, batch, verbalizer)

    def _teacher_forced_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        """Every word appended after the pattern: one row per (example, word), one forward for all."""
        ids = batch["input_ids"]
        n, width = ids.shape
        words, lengths = verbalizer.word_ids.to(ids.device), verbalizer.word_lengths.to(ids.device)
        n_words, t = words.shape
        steps = torch.arange(t, device=ids.device)
        end = batch["mask_positions"][:, 0] + 1  # prefix length [N]
        rows = torch.cat([ids, ids.new_zeros(n, t)], 1).unsqueeze(1).repeat(1, n_words, 1)  # [N, W, L + T]
        write = (end[:, None, None] + steps[None, None, :-1]).expand(-1, n_words, -1)
        rows = rows.scatter(2, write, words[None, :, :-1].expand(n, -1, -1))
        keep = (
            torch.arange(width + t, device=ids.device)[None, None, :] < (end[:, None] + lengths[None, :] - 1)[..., None]
        )
        soft = batch["soft_positions"].repeat_interleave(n_words, 0)
        hidden = hidden_fn(rows.flatten(0, 1), keep.flatten(0, 1).long(), soft)
        positions = (end[:, None] - 1 + steps[None, :]).repeat_interleave(n_words, 0)  # [N*W, T]
        log_probs = self.lm_log_probs(pick(hidden, positions))  # [N*W, T, V]
        own = words.repeat(n, 1).unsqueeze(-1)  # [N*W, T, 1]
        token_scores = log_probs.gather(2, own).squeeze(-1) * (steps[None, :] < lengths.repeat(n)[:, None])
        return token_scores.sum(1).view(n, n_words)


class EncoderOnly(Backbone):
    """A plain encoder (MiniLM sentence encoder): no LM head, so only linear heads; the first token pools."""

    auto_class = AutoModel

    @property
    def lm_head(self):
        raise UserError(
            f"model {self.name} has no LM head, so label words cannot be scored; use method.head=linear "
            "(or method=finetune), or a masked or causal LM"
        )


class EncoderDecoder(Backbone):
    """T5: {mask} is the sentinel <extra_id_0>, one token standing for the whole span, as in T5's span-corruption
    pretraining. The encoder reads the template; a label word is scored as what the decoder writes after the
    sentinel (decoder input: start token, sentinel, the word's tokens; score: the summed log-probabilities of
    the word's tokens), the encoder run once per example. A linear head pools the encoder's states (mean over
    the text). Deep prompts reach the encoder's and the decoder's attention, as PEFT's. T5 rescales the
    decoder's states by d_model**-0.5 before its tied LM head; so does this family."""

    architectures = ("ForConditionalGeneration",)
    auto_class = AutoModelForSeq2SeqLM
    sentinel = "<extra_id_0>"

    def __init__(self, model, tokenizer, name: str):
        super().__init__(model, tokenizer, name)
        self._decoder_ids: torch.Tensor | None = None  # set while label words are scored

    @classmethod
    def mask_ids(cls, tokenizer, n_tokens: int) -> list[int]:
        sentinel = tokenizer.convert_tokens_to_ids(cls.sentinel)
        if sentinel is None or sentinel == tokenizer.unk_token_id:
            raise UserError(f"the tokenizer has no sentinel token {cls.sentinel}, which stands for {{mask}} in T5")
        return [sentinel]

    @property
    def body(self) -> nn.Module:
        return self.model  # T5's base_model is the whole model

    def run_embedded(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's states; while decoding, the decoder's states for the decoder inputs, each example's
        encoding shared by its consecutive rows of decoder inputs."""
        encoded = self.model.encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        if self._decoder_ids is None:
            return encoded
        rows = self._decoder_ids.shape[0] // encoded.shape[0]
        return self.model.decoder(
            input_ids=self._decoder_ids,
            encoder_hidden_states=encoded.repeat_interleave(rows, 0),
            encoder_attention_mask=attention_mask.repeat_interleave(rows, 0),
        ).last_hidden_state

    @contextmanager
    def decoding(self, decoder_ids: torch.Tensor):
        outer, self._decoder_ids = self._decoder_ids, decoder_ids
        try:
            yield
        finally:
            self._decoder_ids = outer

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)

    def word_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        ids = batch["input_ids"]
        n = ids.shape[0]
        words, lengths = verbalizer.word_ids.to(ids.device), verbalizer.word_lengths.to(ids.device)
        n_words, t = words.shape
        start = ids.new_tensor([self.model.config.decoder_start_token_id, self.mask_ids(self.tokenizer, 1)[0]])
        if t == 1:  # every word is one token: one decoder row per example, the words' logits after the sentinel
            hidden = self._decoded(hidden_fn, batch, start.expand(n, -1))
            return self.token_logits(hidden[:, 1], words[:, 0])
        decoder_ids = torch.cat([start.expand(n_words, -1), words[:, :-1]], 1).repeat(n, 1)  # [N*W, T + 1]
        log_probs = self.lm_log_probs(self._decoded(hidden_fn, batch, decoder_ids)[:, 1:])  # [N*W, T, V]
        own = log_probs.gather(2, words.repeat(n, 1).unsqueeze(-1)).squeeze(-1)
        steps = torch.arange(t, device=ids.device)
        return (own * (steps[None, :] < lengths.repeat(n)[:, None])).sum(1).view(n, n_words)

    def _decoded(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], decoder_ids: torch.Tensor):
        with self.decoding(decoder_ids):
            return hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
            return hidden * config.d_model**-0.5
        return hidden

    def prompt_layers(self) -> list[nn.Module]:
        """The encoder's blocks: only the encoder's input holds prompt positions. Key/value prefixes reach every
        attention of the encoder and the decoder (attention_sites), as PEFT's prefixes do."""
        return list(self.model.encoder.block)

    def _record_attention(self, input_ids: torch.Tensor):
        # The decoder reads the same tokens, so that it runs and every attention site sees as many keys.
        with self.decoding(input_ids):
            return super()._record_attention(input_ids)
