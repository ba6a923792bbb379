"""Architecture tests: parameter counts against the reference implementations
(docs/reference_implementations.md), output resolutions, initialisation, registry errors. Full-size
models are built on the ``meta`` device (shapes only, no memory)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adapmtl.errors import UserError
from adapmtl.models import MODELS, ASPPHead, MultiTaskModel, build_model
from adapmtl.models.counts import component_counts, meta_model, prunable_count
from adapmtl.models.resnet import width_consistent_init_std

NYU = {"seg": 40, "normal": 3, "depth": 1}
TASKONOMY = {"seg": 17, "normal": 3, "depth": 1, "keypoint": 1, "edge": 1}

# Conv-weight counts of the reference implementations (docs/reference_implementations.md).
REFERENCE_COUNTS = {
    "deeplab_resnet34": {
        "backbone": 21_267_648,
        "heads": {40: 23_232_512, 17: 23_138_304, 3: 23_080_960, 1: 23_072_768},
        "totals": {"NYUv2": 90_653_888, "Taskonomy": 136_705_216},
        "all_params": {"NYUv2": 90_695_664, "Taskonomy": 136_763_292},
        "bn_params": 17_024,
    },
    "mobilenetv2": {
        "backbone": 2_189_760,
        "heads": {40: 51_544_064, 17: 51_449_856, 3: 51_392_512, 1: 51_384_320},
        "totals": {"NYUv2": 156_510_656, "Taskonomy": 259_185_088},
        "all_params": {"NYUv2": 156_569_520, "Taskonomy": 259_260_252},
        "bn_params": 34_112,
    },
}
DATASETS = {"NYUv2": NYU, "Taskonomy": TASKONOMY}
BACKBONE_OUT = {"deeplab_resnet34": 512, "mobilenetv2": 1280}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads competing with other
    processes make these small forwards several times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _within_1pct(value: int, expected: int) -> bool:
    return abs(value - expected) <= 0.01 * expected


@pytest.mark.parametrize("name", ["deeplab_resnet34", "mobilenetv2"])
@pytest.mark.parametrize("dataset", ["NYUv2", "Taskonomy"])
def test_full_size_prunable_counts_match_the_references(name: str, dataset: str) -> None:
    ref = REFERENCE_COUNTS[name]
    tasks = DATASETS[dataset]
    model = meta_model(name, tasks)
    counts = component_counts(model)
    assert _within_1pct(counts["backbone"], ref["backbone"])
    assert counts["backbone"] == ref["backbone"]
    for task, channels in tasks.items():
        assert counts[task] == ref["heads"][channels], task
        # The head formula: 4 * (9 * C_in * 1024 + 1024^2 + 1024 * C).
        c_in = BACKBONE_OUT[name]
        assert counts[task] == 4 * (9 * c_in * 1024 + 1024**2 + 1024 * channels)
    assert sum(counts.values()) == ref["totals"][dataset]
    assert sum(p.numel() for p in model.parameters()) == ref["all_params"][dataset]
    bn = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
    )
    assert bn == ref["bn_params"]


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        # Output stride 8 with the ceil-mode pool.
        ("deeplab_resnet34", (321, 321), (41, 41)),
        ("deeplab_resnet34", (480, 640), (61, 81)),
        ("deeplab_resnet34", (256, 256), (33, 33)),
        ("deeplab_resnet34", (224, 224), (29, 29)),
        # Output stride 32.
        ("mobilenetv2", (321, 321), (11, 11)),
        ("mobilenetv2", (224, 224), (7, 7)),
    ],
)
def test_full_size_output_resolution(name: str, size: tuple[int, int], expected: tuple) -> None:
    model = meta_model(name, TASKONOMY)
    with torch.no_grad():
        out = model(torch.empty(1, 3, *size, device="meta"))
    assert list(out) == list(TASKONOMY)
    for task, channels in TASKONOMY.items():
        assert tuple(out[task].shape) == (1, channels, *expected)


@pytest.mark.parametrize(
    ("name", "expected"), [("deeplab_resnet34_cpu", (41, 41)), ("mobilenetv2_cpu", (11, 11))]
)
def test_presets_compute_the_reference_resolution_for_real(name: str, expected: tuple) -> None:
    """The output grid depends on strides, paddings and dilations only, not on the width, so the
    CPU presets check the real (non-meta) computation at 321x321 cheaply."""
    model = build_model(name, {"depth": 1}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 321, 321))
    assert tuple(out["depth"].shape) == (1, 1, *expected)
    assert torch.isfinite(out["depth"]).all()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected"), [("deeplab_resnet34", 41), ("mobilenetv2", 11)])
def test_full_size_forward_at_321(name: str, expected: int) -> None:
    model = build_model(name, {"seg": 40}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 321, 321))
    assert tuple(out["seg"].shape) == (1, 40, expected, expected)
    assert torch.isfinite(out["seg"]).all()


def test_upsample_returns_bilinear_logits_at_input_size() -> None:
    torch.manual_seed(0)
    model = build_model("deeplab_resnet34_cpu", {"seg": 5, "depth": 1}, dropout=0.0).eval()
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        low = model(x)
        model.upsample = True
        high = model(x)
    assert tuple(low["seg"].shape) == (2, 5, 9, 12)
    for task in ("seg", "depth"):
        assert high[task].shape[-2:] == (70, 90)
        # Independent bilinear resize (align_corners=False) from the head-resolution output.
        expected = _bilinear(low[task], 70, 90)
        torch.testing.assert_close(high[task], expected, rtol=1e-4, atol=1e-5)


def _bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize with half-pixel centres written out with gathers (align_corners=False)."""

    def coords(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = ((torch.arange(out_size) + 0.5) * in_size / out_size - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=in_size - 1)
        hi = (lo + 1).clamp(max=in_size - 1)
        return lo, hi, src - lo

    y0, y1, wy = coords(height, x.shape[-2])
    x0, x1, wx = coords(width, x.shape[-1])
    top = x[..., y0, :][..., x0] * (1 - wx) + x[..., y0, :][..., x1] * wx
    bottom = x[..., y1, :][..., x0] * (1 - wx) + x[..., y1, :][..., x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def test_resnet_stage_layout() -> None:
    backbone = meta_model("deeplab_resnet34", {"depth": 1}).backbone
    stages = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert [s[0].conv1.stride[0] for s in stages] == [1, 2, 1, 1]
    for stage, dilation, channels in zip(stages, [1, 1, 2, 4], [64, 128, 256, 512], strict=True):
        for block in stage:
            for conv in (block.conv1, block.conv2):
                assert conv.dilation == (dilation, dilation)
                assert conv.padding == (dilation, dilation)
                assert conv.out_channels == channels
                assert conv.bias is None
    assert [s[0].downsample is not None for s in stages] == [False, True, True, True]
    assert all(b.downsample is None for s in stages for b in s[1:])
    assert backbone.maxpool.ceil_mode
    assert backbone.conv1.kernel_size == (7, 7) and backbone.conv1.stride == (2, 2)


def test_mobilenetv2_layout_uses_relu_and_ends_at_1280() -> None:
    backbone = meta_model("mobilenetv2", {"depth": 1}).backbone
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    # Stem + 17 inverted residuals (16 with a 1x1 expansion: 3 convs; the first: 2) + final 1x1.
    assert len(convs) == 1 + (16 * 3 + 2) + 1
    assert convs[-1].out_channels == 1280 and convs[-1].kernel_size == (1, 1)
    assert not any(isinstance(m, nn.ReLU6) for m in backbone.modules())
    assert any(isinstance(m, nn.ReLU) for m in backbone.modules())
    assert all(c.dilation == (1, 1) for c in convs)
    assert sum(c.stride[0] == 2 for c in convs) == 5  # output stride 2**5 = 32


def test_aspp_head_structure() -> None:
    head = ASPPHead(64, 7, rates=(2, 3), hidden=16, dropout=0.25)
    assert len(head.branches) == 2
    for branch, rate in zip(head.branches, (2, 3), strict=True):
        first, _, drop, _, _, _, last = branch
        assert first.dilation == (rate, rate) and first.padding == (rate, rate)
        assert first.bias is not None and last.out_channels == 7
        assert drop.p == 0.25
    assert prunable_count(head) == 2 * (9 * 64 * 16 + 16 * 16 + 16 * 7)


def test_aspp_sums_its_branches() -> None:
    torch.manual_seed(0)
    head = ASPPHead(8, 3, rates=(1, 2), hidden=4, dropout=0.0).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        expected = head.branches[0](x) + head.branches[1](x)
        torch.testing.assert_close(head(x), expected)


def _conv_weights(module: nn.Module) -> torch.Tensor:
    return torch.cat(
        [m.weight.detach().flatten() for m in module.modules() if isinstance(m, nn.Conv2d)]
    )


@pytest.mark.parametrize(("options", "expected_std"), [({}, 0.02), ({"init_std": 0.01}, 0.01)])
def test_resnet_initialisation(options: dict, expected_std: float) -> None:
    torch.manual_seed(0)
    backbone = build_model("deeplab_resnet34_cpu", {"depth": 1}, **options).backbone
    weights = _conv_weights(backbone)
    # Width 0.25: 0.01 / sqrt(0.25) = 0.02 by default. With n ~ 1.3e6 samples the std estimate
    # is within 0.1 % of its value.
    assert abs(weights.std().item() - expected_std) < 2e-2 * expected_std
    assert abs(weights.mean().item()) < 1e-4
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_mobilenetv2_he_normal_initialisation() -> None:
    torch.manual_seed(0)
    backbone = build_model("mobilenetv2", {"depth": 1}).backbone
    checked = 0
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 20_000:
            k_h, k_w = m.kernel_size
            expected = math.sqrt(2.0 / (k_h * k_w * m.out_channels))
            assert abs(m.weight.std().item() / expected - 1) < 0.03, m
            checked += 1
    assert checked > 20


def test_aspp_keeps_pytorch_default_initialisation() -> None:
    torch.manual_seed(0)
    head = ASPPHead(128, 4, hidden=256)
    for conv in (head.branches[0][0], head.branches[0][3]):
        bound = 1 / math.sqrt(conv.weight[0].numel())  # kaiming_uniform(a=sqrt(5))
        assert conv.weight.abs().max() <= bound
        assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


def test_components_name_backbone_and_each_head() -> None:
    model = meta_model("mobilenetv2", TASKONOMY)
    assert model.components() == {
        "backbone": ["backbone"],
        **{t: [f"heads.{t}"] for t in TASKONOMY},
    }
    assert model.out_channels == TASKONOMY
    assert model.tasks == list(TASKONOMY)


def test_multitask_model_rejects_bad_heads() -> None:
    backbone = nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match="at least one head"):
        MultiTaskModel(backbone, {})
    with pytest.raises(ValueError, match="'backbone' is reserved"):
        MultiTaskModel(backbone, {"backbone": nn.Conv2d(4, 1, 1)})
    with pytest.raises(ValueError, match="output channels of head 'seg'"):
        MultiTaskModel(backbone, {"seg": nn.ReLU()})
    model = MultiTaskModel(backbone, {"seg": nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU())})
    assert model.out_channels == {"seg": 6}


def test_registry_lists_the_presets() -> None:
    assert {"deeplab_resnet34", "mobilenetv2", "deeplab_resnet34_cpu", "mobilenetv2_cpu"} <= set(
        MODELS.names()
    )


def test_build_model_errors_name_the_problem() -> None:
    with pytest.raises(UserError, match="did you mean 'mobilenetv2'"):
        build_model("mobilenet_v2", NYU)
    with pytest.raises(UserError, match="unknown option 'widht'"):
        build_model("mobilenetv2_cpu", NYU, widht=0.5)
    with pytest.raises(UserError, match="task 'seg': output channels"):
        build_model("mobilenetv2_cpu", {"seg": 0})
    with pytest.raises(UserError, match="rates must be positive integers"):
        build_model("mobilenetv2_cpu", NYU, rates=(6, 0))
    with pytest.raises(UserError, match="width must be > 0"):
        build_model("deeplab_resnet34_cpu", NYU, width=0)


def test_overrides_change_the_architecture() -> None:
    model = meta_model(
        "deeplab_resnet34", {"depth": 1}, width=0.5, head_channels=32, rates=(1, 2), dropout=0.1
    )
    assert model.backbone.out_channels == 256
    head = model.heads["depth"]
    assert head.rates == (1, 2)
    assert prunable_count(head) == 2 * (9 * 256 * 32 + 32 * 32 + 32 * 1)
    assert prunable_count(model.backbone) == pytest.approx(21_267_648 / 4, rel=0.01)


def test_width_consistent_init_keeps_the_full_size_ratio_to_the_heads() -> None:
    # PyTorch's default conv init is U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in). Thinning backbone
    # and heads together (head_channels = 1024 * width) scales every head fan-in by width.
    def head_std(width: float) -> float:
        fan_in = round(512 * width) * 9
        return 1 / math.sqrt(3 * fan_in)

    full = width_consistent_init_std(1.0) / head_std(1.0)
    assert width_consistent_init_std(1.0) == 0.01
    for width in (0.5, 0.25, 0.125):
        assert width_consistent_init_std(width) / head_std(width) == pytest.approx(full)
    torch.manual_seed(0)
    model = build_model("deeplab_resnet34", {"depth": 1}, width=0.125, head_channels=128)
    measured = _conv_weights(model.backbone).std() / _conv_weights(model.heads).std()
    reference = build_model(
        "deeplab_resnet34", {"depth": 1}, width=0.125, head_channels=128, init_std=0.01
    )
    measured_reference = (
        _conv_weights(reference.backbone).std() / _conv_weights(reference.heads).std()
    )
    assert measured / measured_reference == pytest.approx(math.sqrt(8), rel=0.02)


def test_mobilenet_takes_no_resnet_init_option() -> None:
    with pytest.raises(UserError, match="unknown option 'init_std'; valid: width"):
        build_model("mobilenetv2_cpu", {"depth": 1}, init_std=0.01)


@pytest.mark.parametrize(
    ("output_stride", "size", "expected"),
    [
        (32, (321, 321), (11, 11)),
        (16, (321, 321), (21, 21)),
        (8, (321, 321), (41, 41)),
        (8, (48, 48), (6, 6)),
    ],
)
def test_mobilenetv2_output_stride_keeps_larger_maps(
    output_stride: int, size: tuple[int, int], expected: tuple
) -> None:
    model = build_model("mobilenetv2", {"depth": 1}, width=0.25, output_stride=output_stride)
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, *size))
    assert tuple(out["depth"].shape) == (1, 1, *expected)


def test_mobilenetv2_output_stride_dilates_later_depthwise_convs_without_new_weights() -> None:
    """DeepLabv3's rule: a stage whose stride would pass the output stride keeps stride 1; its
    first block uses the dilation so far, the blocks after it that dilation times the stride."""
    plain = build_model("mobilenetv2", {"depth": 1}, width=0.25).backbone
    dilated = build_model("mobilenetv2", {"depth": 1}, width=0.25, output_stride=8).backbone
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in dilated.parameters()
    )
    depthwise = [
        (m.stride[0], m.dilation[0])
        for m in dilated.modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1
    ]
    # Blocks per stage 1, 2, 3, 4, 3, 3, 1; stride 2 (stem) * 2 * 2 = 8 after the third stage.
    expected = (
        [(1, 1)]
        + [(2, 1), (1, 1)]
        + [(2, 1), (1, 1), (1, 1)]
        + [(1, 1)]
        + [(1, 2)] * 3  # 64 channels: stride 2 given up, dilation 2 after its first
        + [(1, 2)] * 3  # 96 channels, stride 1
        + [(1, 2)]
        + [(1, 4)] * 2  # 160 channels: stride 2 given up
        + [(1, 4)]
    )
    assert depthwise == expected
    for m in dilated.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
            assert m.padding[0] == m.dilation[0]


def test_mobilenetv2_rejects_an_unsupported_output_stride() -> None:
    with pytest.raises(UserError, match=r"mobilenetv2.*output_stride must be one of"):
        build_model("mobilenetv2", {"depth": 1}, output_stride=4)
