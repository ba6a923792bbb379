"""sparsify(): which weights get a parametrization, and which threshold each one uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from adapmtl.sparsity import (
    GROUPINGS,
    is_sparsified,
    layer_components,
    sparse_layers,
    sparsify,
    thresholds,
)
from sparsity_toys import ConvMTL, conv_mtl, single_thread

_single_thread = pytest.fixture(autouse=True)(single_thread)


def _groups(model: nn.Module) -> dict[str, str | None]:
    return {path: p.group for path, _, p in sparse_layers(model)}


EXPECTED_GROUPS = {
    "component": {
        "backbone.0": "backbone",
        "backbone.3": "backbone",
        "heads.seg.0": "seg",
        "heads.seg.3": "seg",
        "heads.depth": "depth",
    },
    "global": dict.fromkeys(ConvMTL.PRUNABLE, "all"),
    "backbone_heads": {
        "backbone.0": "backbone",
        "backbone.3": "backbone",
        "heads.seg.0": "heads",
        "heads.seg.3": "heads",
        "heads.depth": "heads",
    },
    "layer": {path: path.replace(".", "/") for path in ConvMTL.PRUNABLE},
}


def test_every_grouping_mode_is_covered_here():
    assert set(EXPECTED_GROUPS) == set(GROUPINGS)


@pytest.mark.parametrize("grouping", sorted(EXPECTED_GROUPS))
def test_grouping_sets_number_of_thresholds_and_sharing(grouping):
    model = sparsify(conv_mtl(), grouping=grouping)
    expected = EXPECTED_GROUPS[grouping]
    assert _groups(model) == expected
    table = thresholds(model)
    assert sorted(table) == sorted(set(expected.values()))
    assert {"component": 3, "global": 1, "backbone_heads": 2, "layer": 5}[grouping] == len(table)
    # Layers in one group use the very same parameter object (one theta, not copies).
    for _, _, p in sparse_layers(model):
        assert p.theta is table[p.group]


@pytest.mark.parametrize("grouping", sorted(EXPECTED_GROUPS))
def test_moving_one_threshold_changes_exactly_its_layers(grouping):
    model = sparsify(conv_mtl(), grouping=grouping, init=-6.0)
    before = {path: module.weight.detach().clone() for path, module, _ in sparse_layers(model)}
    group = sorted(thresholds(model))[0]
    with torch.no_grad():
        thresholds(model)[group].fill_(-2.0)  # alpha = 0.12: prunes much more
    for path, module, p in sparse_layers(model):
        changed = not torch.equal(module.weight, before[path])
        assert changed == (p.group == group), path


def test_components_record_the_owner_of_each_layer():
    model = sparsify(conv_mtl(), grouping="global")
    assert layer_components(model) == {
        "backbone.0": "backbone",
        "backbone.3": "backbone",
        "heads.seg.0": "seg",
        "heads.seg.3": "seg",
        "heads.depth": "depth",
    }


def test_biases_and_norm_parameters_are_never_parametrized():
    model = sparsify(conv_mtl())
    for path, module in model.named_modules():
        assert not parametrize.is_parametrized(module, "bias"), path
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            assert not parametrize.is_parametrized(module), path
    parametrized = sorted(
        name for name, _ in model.named_parameters() if ".parametrizations." in name
    )
    assert parametrized == sorted(f"{p}.parametrizations.weight.original" for p in ConvMTL.PRUNABLE)


def test_exclude_by_prefix_and_by_pattern():
    model = sparsify(conv_mtl(), exclude=["heads.depth", r"re:backbone\.0"])
    assert sorted(_groups(model)) == ["backbone.3", "heads.seg.0", "heads.seg.3"]
    assert not parametrize.is_parametrized(model.heads.depth)
    assert not parametrize.is_parametrized(model.backbone[0])
    # Nothing of the excluded depth head is left, so it gets no threshold either.
    assert sorted(thresholds(model)) == ["backbone", "seg"]


class Flat(nn.Module):
    """No backbone/heads attributes: components must be given by the user."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(4, 4)
        self.layer10 = nn.Linear(4, 4)
        self.dec_a = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        self.dec_b = nn.Linear(4, 1)


def test_components_from_prefixes_and_patterns():
    model = sparsify(
        Flat(),
        components={
            "backbone": ["layer1", "layer10"],
            "a": r"re:dec_a\.\d+",
            "b": ["re:dec_b"],
        },
    )
    assert _groups(model) == {
        "layer1": "backbone",
        "layer10": "backbone",
        "dec_a.0": "a",
        "dec_a.2": "a",
        "dec_b": "b",
    }


def test_prefix_is_a_module_path_prefix_not_a_string_prefix():
    # "layer1" must not claim "layer10": layer10 is then matched by no component.
    with pytest.raises(ValueError, match=r"layer10\.weight"):
        sparsify(Flat(), components={"backbone": ["layer1"], "a": ["dec_a"], "b": ["dec_b"]})


def test_pattern_must_match_the_whole_path():
    # "re:dec" matches no module path as a whole (re.fullmatch): a typo, named with the closest
    # module paths
    with pytest.raises(ValueError) as err:
        sparsify(Flat(), components={"backbone": ["layer1", "layer10", "dec_b"], "a": ["re:dec"]})
    message = str(err.value)
    assert message.startswith("component 'a': 're:dec' matches no module")
    assert "whole module path" in message
    assert "closest module paths: dec_b, dec_a" in message


def test_mistyped_prefix_names_the_closest_module_paths():
    with pytest.raises(ValueError) as err:
        sparsify(
            Flat(), components={"backbone": ["layer1", "layer10"], "a": ["dec_aa"], "b": "dec_b"}
        )
    assert str(err.value).startswith("component 'a': 'dec_aa' matches no module")
    assert "closest module paths: dec_a, " in str(err.value)


def test_mistyped_exclude_pattern_is_named():
    with pytest.raises(
        ValueError, match=r"^exclude: 'heads\.dept' matches no module.*heads\.depth"
    ):
        sparsify(conv_mtl(), exclude=["heads.dept"])


def test_pattern_matching_a_parent_only_leaves_its_weights_unclaimed():
    # "re:dec_a" matches the container dec_a, not its layers dec_a.0 / dec_a.2
    with pytest.raises(ValueError, match=r"dec_a\.0\.weight.*matches no component"):
        sparsify(Flat(), components={"backbone": ["layer1", "layer10", "dec_b"], "a": ["re:dec_a"]})


@pytest.mark.parametrize("grouping", ["global", "layer"])
def test_groupings_that_ignore_components_need_none(grouping):
    model = sparsify(Flat(), grouping=grouping)
    assert set(layer_components(model).values()) == {"all"}
    expected = 1 if grouping == "global" else 5
    assert len(thresholds(model)) == expected


def test_weight_matched_by_no_component_is_named():
    with pytest.raises(ValueError, match=r"heads\.depth\.weight.*matches no component"):
        sparsify(conv_mtl(), components={"backbone": ["backbone"], "seg": ["heads.seg"]})


def test_weight_matched_by_two_components_is_named():
    components = {"backbone": ["backbone"], "seg": ["heads"], "depth": ["re:heads\\.depth"]}
    with pytest.raises(ValueError, match=r"heads\.depth\.weight.*several components"):
        sparsify(conv_mtl(), components=components)


def test_failed_sparsify_leaves_the_model_untouched():
    model = conv_mtl()
    keys = list(model.state_dict())
    with pytest.raises(ValueError):
        sparsify(model, components={"backbone": ["backbone"]})
    assert not is_sparsified(model)
    assert list(model.state_dict()) == keys


def test_model_without_components_asks_for_them():
    with pytest.raises(ValueError, match="components"):
        sparsify(Flat())


def test_sparsifying_twice_is_an_error():
    model = sparsify(conv_mtl())
    with pytest.raises(ValueError, match="already sparsified"):
        sparsify(model)


def test_unknown_grouping_is_an_error():
    with pytest.raises(ValueError, match="grouping"):
        sparsify(conv_mtl(), grouping="per_task")


def test_backbone_heads_needs_a_backbone_component():
    with pytest.raises(ValueError, match="backbone"):
        sparsify(Flat(), grouping="backbone_heads", components={"enc": [""]})


def test_init_per_group():
    model = sparsify(conv_mtl(), init={"backbone": -7.0, "seg": -6.0, "depth": -5.0})
    assert {k: v.item() for k, v in thresholds(model).items()} == {
        "backbone": -7.0,
        "seg": -6.0,
        "depth": -5.0,
    }


def test_init_accepts_any_real_scalar():
    model = sparsify(conv_mtl(), init=np.float32(-5.5))
    assert {v.item() for v in thresholds(model).values()} == {-5.5}


def test_init_missing_a_group_is_named():
    model = conv_mtl()
    with pytest.raises(ValueError, match="depth"):
        sparsify(model, init={"backbone": -7.0, "seg": -6.0})
    assert not is_sparsified(model)


def test_mask_mode_has_no_thresholds_and_is_dense_until_masked():
    model = conv_mtl()
    dense = {path: model.get_submodule(path).weight.detach().clone() for path in ConvMTL.PRUNABLE}
    sparsify(model, mode="mask")
    assert len(thresholds(model)) == 0
    for path, module, p in sparse_layers(model):
        assert p.group is None
        assert torch.equal(module.weight, dense[path])
