"""The `logger` group's schemas (configs/logger/<name>.yaml extends schema/logger/<name>); what each option
does is prompttune.runs.tracking."""

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from prompttune.config.schema import checked_node
from prompttune.errors import UserError


@dataclass
class TensorBoardConfig:
    name: str = MISSING


@dataclass
class MLflowConfig:
    name: str = MISSING
    # null: what MLflow itself would use (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db where the command runs);
    # or any MLflow URI (http://host:5000, sqlite:///path.db, databricks)
    tracking_uri: str | None = None
    experiment_name: str = "prompttune"
    log_checkpoint: bool = False  # true: also upload checkpoint/ (a full fine-tune's is the model's size)


@dataclass
class NoLoggerConfig:
    name: str = MISSING


# The schema of each `logger` group option (configs/logger/<name>.yaml extends schema/logger/<name>).
LOGGER_SCHEMAS: dict[str, type] = {"tensorboard": TensorBoardConfig, "mlflow": MLflowConfig, "none": NoLoggerConfig}


def checked_logger(cfg: DictConfig | None) -> DictConfig | None:
    """The `logger` node checked against its option's schema (unknown name or key, types), defaults filled."""
    if cfg is None:
        return None
    name = cfg.get("name")
    if name not in LOGGER_SCHEMAS:
        raise UserError(f"logger.name={name!r} is unknown; use logger=tensorboard, mlflow or none")
    return checked_node(LOGGER_SCHEMAS[name], cfg, "logger")[0]
