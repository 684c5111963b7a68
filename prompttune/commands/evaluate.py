"""`prompttune eval`: re-evaluate a run (run=<dir>) or evaluate zero-shot; a thin Hydra entry point."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from prompttune.config.run import register_configs
from prompttune.paths import CONFIG_DIR
from prompttune.runs.jobs import run_job
from prompttune.runs.lifecycle import run_eval

register_configs()


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    overrides = list(HydraConfig.get().overrides.task)
    return run_job(cfg, lambda c, run_dir: run_eval(c, run_dir, overrides))
