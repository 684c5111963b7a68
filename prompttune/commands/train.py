"""`prompttune train`: a thin Hydra entry point that picks the plan for the method's mode."""

from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from prompttune.config.run import register_configs
from prompttune.paths import CONFIG_DIR
from prompttune.plans.ensemble import run_ensemble
from prompttune.runs.jobs import run_job
from prompttune.runs.lifecycle import run_train
from prompttune.runs.record import RunRecord

register_configs()
PLANS: dict[str, Callable[[DictConfig, Path], RunRecord]] = {"ensemble": run_ensemble, "ipet": run_ensemble}


def plan_for(cfg: DictConfig) -> Callable[[DictConfig, Path], RunRecord]:
    """A single run, or a plan of several (PET's ensemble and iPET, by `method.mode`)."""
    return PLANS.get(cfg.method.get("mode"), run_train)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg, plan_for(cfg))
