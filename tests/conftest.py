import pytest
import torch
from hypothesis import settings

from prompttune.config.run import register_configs

register_configs()  # the schemas configs/*.yaml extend

# Property tests assert behaviour, never speed: hypothesis's 200 ms deadline per example failed one on a loaded
# machine (tests/test_data.py's quotas, beside a sweep), so no test has a deadline.
settings.register_profile("no_deadline", deadline=None)
settings.load_profile("no_deadline")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
