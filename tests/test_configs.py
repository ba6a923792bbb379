"""Every shipped config loads strictly and names registered components."""

from pathlib import Path

import pytest

from adapmtl.config import load_config
from adapmtl.methods import METHODS
from adapmtl.models import MODELS
from adapmtl.tasks import TASK_SETS

CONFIGS = sorted(
    p
    for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml")
    if p.name != "base.yaml" and "suites" not in p.parts
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_loads_and_names_registered_parts(path):
    config = load_config(path)
    assert config.model.name in MODELS
    assert config.method.name in METHODS
    assert config.tasks.preset in TASK_SETS
