"""`prompttune train`: a thin Hydra entry point."""

import hydra
from omegaconf import DictConfig

from prompttune.config import register_configs
from prompttune.experiment import run_train
from prompttune.jobs import run_job
from prompttune.paths import CONFIG_DIR

register_configs()


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, run_train)
