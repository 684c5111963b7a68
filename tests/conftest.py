import pytest
import torch

from prompttune.config.run import register_configs

register_configs()  # the schemas configs/*.yaml extend


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
