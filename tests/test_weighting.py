"""Adaptive weighting (paper Eq. 6) and the official variant, on hand-computed loss histories."""

import pytest
import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.weighting import AdaptiveWeighting, EqualWeighting, build_weighting, param_ratio


def feed(weighting, rows):
    out = None
    for row in rows:
        out = weighting.update(torch.tensor(row, dtype=torch.float64))
    return out


def test_paper_formula_on_a_hand_computed_window():
    # a: losses 1, 3 -> mean 2, mean abs deviation 1, r_a = 1/3 (divided by the current loss 3)
    # b: losses 2, 4 -> mean 3, mean abs deviation 1, r_b = 1/4
    # mean r = 7/24 -> beta_a = (8/7)^-1 = 7/8, beta_b = (6/7)^-1 = 7/6; times lam * ratio = 0.5
    w = AdaptiveWeighting(["a", "b"], window=3, warmup=0, lam=2.0, param_ratio=0.25)
    beta = feed(w, [[1.0, 2.0], [3.0, 4.0]])
    assert beta.tolist() == pytest.approx([7 / 16, 7 / 12])


def test_the_more_stable_task_gets_the_larger_weight():
    w = AdaptiveWeighting(["stable", "noisy"], window=8, warmup=0, param_ratio=None)
    rows = [[1.0 + 0.01 * (i % 2), 1.0 + 0.5 * (i % 2)] for i in range(8)]
    beta = feed(w, rows)
    assert beta[0] > beta[1]


def test_window_forgets_old_losses():
    w = AdaptiveWeighting(["a", "b"], window=2, warmup=0, param_ratio=None)
    # the first row (a huge swing) leaves the window; what remains is the same as test 1
    beta = feed(w, [[100.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
    assert beta.tolist() == pytest.approx([7 / 8, 7 / 6])


def test_warmup_keeps_equal_weights():
    w = AdaptiveWeighting(["a", "b"], window=3, warmup=2, param_ratio=0.25, lam=2.0)
    assert feed(w, [[1.0, 2.0]]).tolist() == [1.0, 1.0]
    assert feed(w, [[3.0, 4.0]]).tolist() == [1.0, 1.0]
    # third update: window holds all three rows, adaptive weights now apply
    beta = feed(w, [[2.0, 3.0]])
    # a: 1,3,2 mean 2 MAD 2/3 r=1/3; b: 2,4,3 mean 3 MAD 2/3 r=2/9; mean r = 5/18
    assert beta.tolist() == pytest.approx([0.5 * (5 / 6), 0.5 * (5 / 4)])


def test_no_sliding_window_uses_adjacent_change():
    w = AdaptiveWeighting(["a", "b"], window=5, warmup=0, param_ratio=None, deviation="adjacent")
    # r_a = |2-1|/1 = 1, r_b = |4-2|/4 = 1/2; mean 3/4 -> beta = (4/3)^-1, (2/3)^-1
    beta = feed(w, [[2.0, 2.0], [1.0, 4.0]])
    assert beta.tolist() == pytest.approx([3 / 4, 3 / 2])


def test_official_variant_is_direct_and_sums_to_task_count():
    w = AdaptiveWeighting(["a", "b"], mode="official", window=2, warmup=1)
    assert feed(w, [[1.0, 2.0]]).tolist() == [1.0, 1.0]
    # d_a = |1-2|/2 = 1/2, d_b = |2-3|/3 = 1/3 -> beta = 2 * d / sum(d)
    beta = feed(w, [[2.0, 3.0]])
    assert beta.tolist() == pytest.approx([6 / 5, 4 / 5])
    # next: d_a = |2-1|/1 = 1, d_b = 0 -> window means .75 and 1/6
    beta = feed(w, [[1.0, 3.0]])
    assert beta.tolist() == pytest.approx([18 / 11, 4 / 11])
    assert float(beta.sum()) == pytest.approx(2.0)


def test_state_round_trip_continues_identically():
    rows = [[1.0 + 0.1 * i, 2.0 + 0.3 * (i % 3)] for i in range(12)]
    whole = AdaptiveWeighting(["a", "b"], window=4, warmup=3, param_ratio=0.5)
    expected = [whole.update(torch.tensor(row, dtype=torch.float64)) for row in rows][7:]
    first = AdaptiveWeighting(["a", "b"], window=4, warmup=3, param_ratio=0.5)
    feed(first, rows[:7])
    state = first.state_dict()
    second = AdaptiveWeighting(["a", "b"], window=4, warmup=3, param_ratio=0.5)
    second.load_state_dict(state)
    assert [second.update(torch.tensor(row, dtype=torch.float64)).tolist() for row in rows[7:]] == [
        whole_out.tolist() for whole_out in expected
    ]


def test_state_is_loadable_with_weights_only(tmp_path):
    w = AdaptiveWeighting(["a", "b"], window=4, warmup=0)
    feed(w, [[1.0, 2.0], [2.0, 1.0]])
    torch.save(w.state_dict(), tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert torch.equal(state["history"], w.history)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"window": 1}, "window"),
        ({"mode": "x"}, "mode"),
        ({"lam": 0.0}, "lam"),
        ({"deviation": "x"}, "deviation"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, word):
    with pytest.raises(ValueError, match=word):
        AdaptiveWeighting(["a"], **kwargs)


def test_rejects_wrong_length_and_nonpositive_losses():
    w = AdaptiveWeighting(["a", "b"])
    with pytest.raises(ValueError, match="expected 2 task losses"):
        w.update(torch.ones(3))
    for bad in (float("nan"), 0.0, -0.5):
        with pytest.raises(ValueError, match="positive"):
            w.update(torch.tensor([1.0, bad]))


def test_equal_weighting_and_builder():
    assert EqualWeighting(["a", "b"]).update(torch.tensor([3.0, 4.0])).tolist() == [1.0, 1.0]
    assert isinstance(build_weighting("adaptive", ["a"], window=10), AdaptiveWeighting)
    with pytest.raises(ValueError, match="unknown weighting"):
        build_weighting("dwa", ["a"])


def test_param_ratio_counts_backbone_over_heads():
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(4, 5)  # 25 parameters
    model.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(5, 1), "b": torch.nn.Linear(5, 3)})
    assert param_ratio(model) == pytest.approx(25 / (6 + 18))


class _Flat(nn.Module):
    """A user model without ``backbone`` / ``heads`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
        self.dec_a = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        self.dec_b = nn.Linear(4, 1)


def test_param_ratio_takes_the_components_of_a_sparsified_model():
    from adapmtl.sparsity import sparsify

    components = {"backbone": ["trunk"], "a": [r"re:dec_a\.\d+"], "b": "dec_b"}
    model = sparsify(_Flat(), components=components)
    # trunk: 2 x (4*4 + 4) Linear + 8 BatchNorm; dec_a: (4*3 + 3) + (3*2 + 2); dec_b: 4 + 1
    assert param_ratio(model) == pytest.approx((2 * 20 + 8) / (15 + 8 + 5))


def test_param_ratio_of_a_sparsified_model_equals_the_dense_one():
    from adapmtl.sparsity import sparsify
    from sparsity_toys import conv_mtl

    dense = conv_mtl()
    expected = sum(p.numel() for p in dense.backbone.parameters()) / sum(
        p.numel() for p in dense.heads.parameters()
    )
    assert param_ratio(dense) == pytest.approx(expected)
    assert param_ratio(sparsify(dense)) == pytest.approx(expected)  # thresholds not counted


def test_param_ratio_names_a_missing_shared_component():
    from adapmtl.sparsity import sparsify

    model = sparsify(_Flat(), components={"trunk": "trunk", "a": "dec_a", "b": "dec_b"})
    with pytest.raises(ValueError, match=r"no component 'backbone' \(components: trunk, a, b\)"):
        param_ratio(model)
    assert param_ratio(model, backbone="trunk") == pytest.approx(48 / 28)


def test_builder_makes_equal_weighting_and_rejects_options_for_it():
    weighting = build_weighting("equal", ["a", "b"])
    assert isinstance(weighting, EqualWeighting)
    assert weighting.update(torch.tensor([2.0, 5.0])).tolist() == [1.0, 1.0]
    with pytest.raises(UserError, match=r"unknown option 'weighting.options.window'; valid: none"):
        build_weighting("equal", ["a"], window=3, lam=1.0)
    with pytest.raises(UserError, match=r"'weighting.options.windw' \(did you mean 'window'"):
        build_weighting("adaptive", ["a"], windw=3)


def test_a_wrong_number_of_losses_names_the_tasks():
    for weighting in (EqualWeighting(["seg", "depth"]), AdaptiveWeighting(["seg", "depth"])):
        with pytest.raises(ValueError, match=r"expected 2 task losses \(seg, depth\), got 3"):
            weighting.update(torch.ones(3))


def test_equal_weighting_state_round_trip_checks_the_tasks():
    state = EqualWeighting(["a", "b"]).state_dict()
    EqualWeighting(["a", "b"]).load_state_dict(state)
    with pytest.raises(ValueError, match=r"for tasks \['a', 'b'\], not \['b', 'a'\]"):
        EqualWeighting(["b", "a"]).load_state_dict(state)


def test_adjacent_change_on_losses_where_the_sign_matters():
    w = AdaptiveWeighting(["a", "b"], window=5, warmup=0, param_ratio=None, deviation="adjacent")
    # r_a = |2-1|/1 = 1, r_b = |2-3|/3 = 1/3; mean 2/3 -> beta = (2/3)/1, (2/3)/(1/3)
    beta = feed(w, [[2.0, 2.0], [1.0, 3.0]])
    assert beta.tolist() == pytest.approx([2 / 3, 2.0])


def test_losses_may_be_a_plain_list_and_a_weighting_needs_a_task():
    assert EqualWeighting(["a", "b"]).update([0.5, 2.0]).tolist() == [1.0, 1.0]
    adaptive = AdaptiveWeighting(["a", "b"], window=2, warmup=5)
    assert adaptive.update([0.5, 2.0]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="a weighting needs at least one task"):
        EqualWeighting([])


def test_builder_passes_the_options_to_adaptive_weighting():
    # warmup 0 and window 2: the second update already weighs the tasks (the default warmup
    # would still give ones)
    weighting = build_weighting("adaptive", ["a", "b"], window=2, warmup=0, param_ratio=None)
    beta = feed(weighting, [[1.0, 2.0], [2.0, 3.0], [1.0, 2.0]])
    assert beta.tolist() != [1.0, 1.0]
    assert beta.tolist() == pytest.approx(
        feed(
            AdaptiveWeighting(["a", "b"], window=2, warmup=0, param_ratio=None),
            [[1.0, 2.0], [2.0, 3.0], [1.0, 2.0]],
        ).tolist()
    )


def _two_heads(backbone_out: int) -> nn.Module:
    model = nn.Module()
    model.backbone = nn.Linear(4, backbone_out)  # 5 * backbone_out parameters
    model.heads = nn.ModuleDict({"a": nn.Linear(1, 4), "b": nn.Linear(1, 4)})  # 8 + 8
    return model


def test_a_run_is_told_when_lambda_times_ratio_rescales_every_task_loss(recwarn):
    # ratio 5 / 16: lam 3 gives 0.94, inside [0.5, 2]: silent
    build_weighting("adaptive", ["a", "b"], _two_heads(1), lam=3.0)
    assert not [w for w in recwarn if "scales every task loss" in str(w.message)]
    # ratio 40 / 16 = 2.5: lam 3 gives 7.5
    with pytest.warns(UserWarning, match=r"3 \* 2\.5 = 7\.5 scales every task loss") as caught:
        build_weighting("adaptive", ["a", "b"], _two_heads(8), lam=3.0)
    assert "set it to 0.4 (scale 1)" in str(caught[0].message)
    # without the factor nothing is rescaled: the ablation's switch, or lam left out
    build_weighting("adaptive", ["a", "b"], _two_heads(8), lam=3.0, use_param_ratio=False)
    build_weighting("adaptive", ["a", "b"], _two_heads(8))
    assert len([w for w in recwarn if "scales every task loss" in str(w.message)]) == 0


def test_the_default_leaves_eq6_common_factor_out():
    # the window of test_paper_formula_on_a_hand_computed_window: r_a = 1/3, r_b = 1/4,
    # beta = (r / mean r)^-1 = 7/8, 7/6 with no lam * ratio factor, whatever the model's ratio
    # (40 / 16 here); their harmonic mean is 1: 2 / (8/7 + 6/7) = 1
    w = build_weighting("adaptive", ["a", "b"], _two_heads(8), window=3, warmup=0)
    assert w.lam is None and w.loss_scale is None
    beta = feed(w, [[1.0, 2.0], [3.0, 4.0]])
    assert beta.tolist() == pytest.approx([7 / 8, 7 / 6])
    # the paper's form on the same model: times lam * ratio = 3 * 2.5
    paper = build_weighting("adaptive", ["a", "b"], _two_heads(8), window=3, warmup=0, lam=3.0)
    assert feed(paper, [[1.0, 2.0], [3.0, 4.0]]).tolist() == pytest.approx(
        [7.5 * 7 / 8, 7.5 * 7 / 6]
    )
