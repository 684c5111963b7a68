"""How many torch threads a job may use when Hydra launches several jobs at once.

Parallel jobs that each let torch take every core oversubscribe the machine (n_jobs x cores threads) and
run slower than one job at a time. Call `torch_threads_for_job()` at job start and pass a non-None result
to `torch.set_num_threads`.
"""

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_TARGET_PREFIX = "hydra_plugins.hydra_submitit_launcher."


def torch_threads_for_job() -> int | None:
    """Threads for this job: the cores split between the joblib launcher's concurrent jobs, or the
    submitit launcher's cpus_per_task; None (leave torch's default) for a single run, another launcher,
    an unset cpus_per_task, or outside Hydra."""
    if not HydraConfig.initialized():
        return None
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:  # `hydra/launcher=...` is ignored without -m
        return None
    launcher = hydra_config.launcher
    target = str(launcher.get("_target_", ""))
    if target == JOBLIB_TARGET:
        return threads_per_joblib_job(int(launcher.n_jobs), available_cpus())
    if target.startswith(SUBMITIT_TARGET_PREFIX):
        cpus = launcher.get("cpus_per_task")
        return None if cpus is None else max(1, int(cpus))
    return None


def threads_per_joblib_job(n_jobs: int, cpus: int) -> int:
    """joblib's n_jobs: -1 means all cores, -2 all but one, ...; 0 is invalid for joblib and taken as 1."""
    concurrent_jobs = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, cpus // max(1, concurrent_jobs))


def available_cpus() -> int:
    """Cores this process may run on (respects taskset/cgroup CPU affinity, unlike os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
