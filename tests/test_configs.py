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


def test_scenes_presets_are_the_demo_settings():
    import argparse

    from adapmtl.commands.demo import demo_configs

    args = argparse.Namespace(overrides=[], iterations=None, target=0.9, out=Path("runs/demo"))
    dense, gmp, sparse = demo_configs(args)
    root = Path(__file__).parents[1] / "configs" / "scenes"
    assert load_config(root / "dense_cpu.yaml") == dense
    for name, config in (("gmp_cpu.yaml", gmp), ("adapmtl_cpu.yaml", sparse)):
        preset = load_config(root / name)
        preset.eval.reference = config.eval.reference
        assert preset == config, name


SUITES = sorted((Path(__file__).parents[1] / "configs" / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_suite_loads_and_plans_every_run_and_seed(path, tmp_path):
    from adapmtl.analysis.suite import load_suite, plan

    suite = load_suite(path, [])
    planned = plan(suite, tmp_path)
    assert {p.seed for p in planned} == set(suite.seeds)
    assert all(p.config.method.name in METHODS for p in planned)
    assert {r.name for r in suite.runs} <= {p.run_id.split("@")[0] for p in planned}
