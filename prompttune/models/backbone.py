"""The interface every model family offers the methods and heads; each family (`models/families.py`) fills in
what differs: how the mask is laid out, how a sequence is pooled, how label words are scored, which modules
are the prompt layers, where the LM head is."""

import copy
import logging
from collections.abc import Callable
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prompttune.errors import UserError
from prompttune.models.prefix import ATTENTION, prefixes_from

log = logging.getLogger(__name__)

# A method's way of running the backbone: (input_ids, attention_mask, soft_positions) -> hidden [B, L, H]
HiddenFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def write_at(states: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Replace states [B, L, H] at positions [B, S] with vectors [S, H] (or [B, S, H]), in one scatter."""
    if positions.shape[1] == 0:
        return states
    batch, _, hidden = states.shape
    index = positions.unsqueeze(-1).expand(-1, -1, hidden)
    values = vectors.to(states.dtype).expand(batch, -1, -1)
    return states.scatter(1, index, values)


def pick(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H] at positions [B, T] -> [B, T, H]."""
    return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def _with_identity_at(module: nn.Module, path: list[str]) -> nn.Module:
    """A shallow copy of module whose submodule at path is nn.Identity; every parameter stays shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    name, rest = path[0], path[1:]
    clone._modules[name] = _with_identity_at(module._modules[name], rest) if rest else nn.Identity()
    return clone


class Backbone(nn.Module):
    """A pretrained model and its tokenizer. Subclasses are the families; this class holds what they share."""

    architectures: ClassVar[tuple[str, ...]] = ()  # class-name endings that select it for model.kind=auto
    auto_class: ClassVar[type]  # the transformers Auto class that loads it
    cut_at_mask: ClassVar[bool] = False  # the template ends at {mask}; the next token is scored
    has_lm_loss: ClassVar[bool] = False  # lm_loss is defined (PET's auxiliary LM loss)
    fp32_word_logits: ClassVar[bool] = True  # token_logits in fp32 under bf16 autocast too (issue 24)

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.lr_scale = 1.0  # model.lr_scale: the rate of its own weights, relative to the method's
        self.embeddings = model.get_input_embeddings()
        self.hidden_size = model.config.hidden_size
        self._derived: dict[str, nn.Module] = {}  # views of the model's modules, kept out of the module tree
        self._attention_sites: list[nn.Module] | None = None  # the attention modules, in the order they run
        self._segment_ids: torch.Tensor | None = None  # the current batch's token_type_ids (see segment_ids)
        self._rewriting_layer_inputs = False  # layer_inputs_rewritten is active (it indexes padded rows)

    # --- template layout (class-level: encoding needs no model) ---------------------------------

    @classmethod
    def mask_ids(cls, tokenizer: PreTrainedTokenizerBase, n_tokens: int) -> list[int]:
        """The tokens that stand in for {mask} when the word to predict has n_tokens tokens."""
        if tokenizer.mask_token_id is None:
            raise UserError("the tokenizer has no mask token, so a template with {mask} cannot be used")
        return [tokenizer.mask_token_id] * n_tokens

    # --- running the model ----------------------------------------------------------------------

    @property
    def body(self) -> nn.Module:
        """The transformer without its task head."""
        return self.model.base_model

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft_positions: torch.Tensor | None = None,
        soft_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds = self.embeddings(input_ids)
        if soft_embeds is not None:
            embeds = write_at(embeds, soft_positions, soft_embeds)
        return self.run_embedded(embeds, attention_mask)

    @torch.no_grad()
    def token_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The input vectors of these tokens as the layers receive them: the embedding module's output, with any
        scale it applies (Gemma multiplies by sqrt(hidden) there, not in its weights). Soft vectors written into
        `hidden_states` live in this space, so an initialisation from the vocabulary must read it here."""
        return self.embeddings(token_ids.to(self.embeddings.weight.device)).float()

    def run_embedded(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {}
        if self._segment_ids is not None and self._segment_ids.shape == embeds.shape[:2]:
            extra["token_type_ids"] = self._segment_ids
        return self.body(inputs_embeds=embeds, attention_mask=attention_mask, **extra).last_hidden_state

    @contextmanager
    def segment_ids(self, token_type_ids: torch.Tensor | None):
        """While active, the model gets these segment ids (sentence pairs), if it was trained with segments
        (BERT: type_vocab_size 2; RoBERTa has 1, causal LMs none)."""
        uses_segments = getattr(self.model.config, "type_vocab_size", 1) > 1
        self._segment_ids = token_type_ids if uses_segments else None
        try:
            yield
        finally:
            self._segment_ids = None

    # --- heads ----------------------------------------------------------------------------------

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence for a linear head ([B, L, H] -> [B, H]): the first token by default."""
        return hidden[:, 0]

    def sequence_classifier(self, num_labels: int) -> nn.Module:
        """The head AutoModelForSequenceClassification gives an encoder, on the pooled vector ([B, H] -> [B, labels]):
        the model's own pooler (dense + tanh, BERT) where the loaded model has one, else a new dense + tanh
        (RoBERTa's classification head; masked-LM checkpoints load without their pooler), then dropout and a
        linear classifier."""
        config, hidden = self.model.config, self.hidden_size
        dropout = getattr(config, "classifier_dropout", None) or getattr(config, "hidden_dropout_prob", 0.1)
        pooler = getattr(self.body, "pooler", None)
        if pooler is not None and hasattr(pooler, "dense"):
            transform = nn.Sequential(pooler.dense, pooler.activation)
        else:
            transform = nn.Sequential(nn.Dropout(dropout), self._new_linear(hidden, hidden), nn.Tanh())
        return nn.Sequential(transform, nn.Dropout(dropout), self._new_linear(hidden, num_labels))

    def token_classifier(self, num_labels: int) -> nn.Module:
        """The head AutoModelForTokenClassification gives BERT, RoBERTa and Llama alike, on every token's state
        ([..., H] -> [..., labels]): dropout (classifier_dropout, else the hidden dropout, else 0.1), then a new
        linear layer."""
        config = self.model.config
        rates = (getattr(config, key, None) for key in ("classifier_dropout", "hidden_dropout_prob", "hidden_dropout"))
        dropout = next((rate for rate in rates if rate is not None), 0.1)
        return nn.Sequential(nn.Dropout(dropout), self._new_linear(self.hidden_size, num_labels))

    def _new_linear(self, width_in: int, width_out: int, bias: bool = True) -> nn.Linear:
        """A new layer initialised as transformers initialises heads: normal(0, initializer_range), zero bias."""
        layer = nn.Linear(width_in, width_out, bias=bias)
        nn.init.normal_(layer.weight, std=getattr(self.model.config, "initializer_range", 0.02))
        if bias:
            nn.init.zeros_(layer.bias)
        return layer

    def word_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        """Scores [N, W] of every label word: the summed log-probabilities of its tokens at the mask positions;
        for one-token words, their logits alone (they differ from log-probabilities by the same normaliser
        for every word, which no softmax over the classes can see)."""
        hidden = pick(
            hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"]), batch["mask_positions"]
        )
        if verbalizer.max_tokens == 1:
            return self.token_logits(hidden[:, 0], verbalizer.word_ids[:, 0].to(hidden.device))
        return verbalizer.word_scores(self.lm_log_probs(hidden))

    @property
    def lm_head(self) -> nn.Module:
        heads = [m for n, m in self.model.named_children() if n != self.model.base_model_prefix]
        if len(heads) != 1:
            raise UserError(f"model {self.name}: cannot tell its LM head among {len(heads)} modules")
        return heads[0]

    def lm_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary log-probabilities for the given hidden states only ([..., H] -> [..., V])."""
        return self.lm_head(self.head_input(hidden)).float().log_softmax(-1)

    def head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """The hidden states as the LM head receives them (a family may rescale them first)."""
        return hidden

    def lm_loss(
        self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """The family's own language-modelling loss on a batch of unlabeled text (PET's auxiliary loss); None
        when the batch has nothing to predict. `generator` (None: torch's global one) draws which tokens to mask."""
        raise UserError(f"model {self.name} has no language-modelling loss here; set method.lm_weight=0")

    def token_logits(self, hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """LM logits of the given tokens only ([N, H], [K] -> [N, K]): the head's transform, then the
        output embeddings of those tokens, never the whole vocabulary. The product runs in fp32 under bf16 too
        (`fp32_word_logits`): it costs nothing for a few words, and rounding these logits to bf16 doubled the error
        of PET's class log-probabilities (docs/speed.md, issue 24)."""
        features = self._head_transform()(self.head_input(hidden))
        decoder = self.model.get_output_embeddings()
        if self.fp32_word_logits:
            with torch.autocast(features.device.type, enabled=False):
                logits = features.float() @ decoder.weight[token_ids].float().T
                return logits if decoder.bias is None else logits + decoder.bias[token_ids].float()
        logits = features @ decoder.weight[token_ids].T
        if decoder.bias is not None:
            logits = logits + decoder.bias[token_ids]
        return logits.float()

    def _head_transform(self) -> nn.Module:
        """The LM head with its vocabulary projection replaced by identity, sharing the head's parameters."""
        if "head_transform" not in self._derived:
            head, decoder = self.lm_head, self.model.get_output_embeddings()
            path = next((name for name, m in head.named_modules() if m is decoder), None)
            if path is None:
                raise UserError(f"model {self.name}: its output embeddings are not inside its LM head")
            self._derived["head_transform"] = _with_identity_at(head, path.split(".")) if path else nn.Identity()
        return self._derived["head_transform"]

    # --- prompt layers (deep prompts) -----------------------------------------------------------

    @property
    def max_positions(self) -> int | None:
        """The positions the model reads (None: no absolute limit, as T5's relative positions)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def fitting_length(self, wanted: int, key: str) -> int:
        """`wanted` tokens, or as many as the model has positions for, with a warning naming `key`."""
        limit = self.max_positions or wanted
        if wanted > limit:
            log.warning("%s=%d exceeds what %s reads (%d positions); using %d", key, wanted, self.name, limit, limit)
        return min(wanted, limit)

    def prompt_layers(self) -> list[nn.Module]:
        """The transformer layers, in order, that deep prompts enter."""
        n_layers = self.model.config.num_hidden_layers
        for module in self.body.modules():
            if isinstance(module, nn.ModuleList) and len(module) == n_layers:
                return list(module)
        raise UserError(f"model {self.name}: cannot find its {n_layers} transformer layers")

    def attention_shape(self) -> tuple[int, int, int]:
        """(prompt layers, key/value heads, head dimension) of the self-attention the prompt layers hold."""
        config = self.model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return len(self.prompt_layers()), heads, head_dim

    @contextmanager
    def layer_inputs_rewritten(self, rewrite: Callable[[int, torch.Tensor], torch.Tensor]):
        """While active, every prompt layer's input hidden states pass through rewrite(layer_index, states)."""

        def hook_for(index: int):
            def hook(_module, args, kwargs):
                if args:
                    return (rewrite(index, args[0]), *args[1:]), kwargs
                kwargs["hidden_states"] = rewrite(index, kwargs["hidden_states"])
                return args, kwargs

            return hook

        handles = [
            layer.register_forward_pre_hook(hook_for(i), with_kwargs=True)
            for i, layer in enumerate(self.prompt_layers())
        ]
        outer, self._rewriting_layer_inputs = self._rewriting_layer_inputs, True
        try:
            yield
        finally:
            self._rewriting_layer_inputs = outer
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def layer_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every prompt layer's input hidden states for one sequence [L] -> [layers, L, H]."""
        captured: list[torch.Tensor] = []

        def record(_index: int, states: torch.Tensor) -> torch.Tensor:
            captured.append(states[0])
            return states

        with self.layer_inputs_rewritten(record):
            self.hidden_states(input_ids[None], torch.ones_like(input_ids)[None])
        return torch.stack(captured)

    def attention_sites(self) -> list[nn.Module]:
        """The modules that call the attention function in one forward, in call order (one per layer for an
        encoder or decoder; a T5 decoder layer has two), found by running the model once."""
        if self._attention_sites is None:
            self._attention_sites = [module for module, _, _ in self._record_attention(self._probe_ids())]
        return self._attention_sites

    def key_values(self, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values each attention site computes for input_ids [B, L], as [B, kv_heads, L, head_dim]."""
        return [(key, value) for _, key, value in self._record_attention(input_ids)]

    @contextmanager
    def key_value_prefixes(self, prefix_of: Callable[[int], tuple[torch.Tensor, torch.Tensor]]):
        """While active, attention site i attends to prefix_of(i) = (keys, values) [B or 1, kv_heads, P, head_dim]
        before the text (see models/prefix.py)."""
        index = {id(module): i for i, module in enumerate(self.attention_sites())}
        self._use_prefix_attention()

        def prefix_fn(module, _keys, _values):
            return prefix_of(index[id(module)]) if id(module) in index else None

        with prefixes_from(prefix_fn):
            yield

    @torch.no_grad()
    def _record_attention(self, input_ids: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
        seen: dict[int, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}

        def record(module, keys, values):
            seen.setdefault(id(module), (module, keys, values))

        self._use_prefix_attention()
        # A probe is not a training step: without dropout and without drawing from the global generator, so a
        # run resumed mid-way (which probes again) draws exactly what the uninterrupted run draws.
        was_training = self.model.training
        with prefixes_from(record), torch.random.fork_rng(devices=[]):
            self.model.eval()
            try:
                self.hidden_states(input_ids, torch.ones_like(input_ids))
            finally:
                self.model.train(was_training)
        if not seen:
            raise UserError(f"model {self.name} does not run its attention through transformers' attention interface")
        return list(seen.values())

    def _probe_ids(self) -> torch.Tensor:
        return torch.ones(1, 2, dtype=torch.long, device=self.embeddings.weight.device)

    def _use_prefix_attention(self) -> None:
        """Route attention through prefix.ATTENTION: SDPA as before while no prefix is active."""
        if self.model.config._attn_implementation != ATTENTION:
            self.model.set_attn_implementation(ATTENTION)

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)


def layer_linears(layers: list[nn.Module]) -> list[nn.Linear]:
    """The linear maps inside the transformer layers: the weights whose matmuls dominate a forward."""
    return [m for layer in layers for m in layer.modules() if isinstance(m, nn.Linear)]
