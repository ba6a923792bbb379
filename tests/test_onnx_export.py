"""ONNX export (issue 15): baked weights with exact zeros, inputs and outputs named by task, a
dynamic batch, checked in onnxruntime against PyTorch; and onnxruntime beside our kernels in
``adapmtl bench``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from onnx import numpy_helper  # noqa: E402

from adapmtl.cli import main  # noqa: E402
from adapmtl.errors import UserError  # noqa: E402
from adapmtl.inference.onnx_export import check_against_torch, export_onnx, session  # noqa: E402
from adapmtl.models import build_model  # noqa: E402
from adapmtl.sparsity import dense_state_dict, is_sparsified, rescale_thresholds, sparsify  # noqa: E402

TASKS = {"seg": 4, "depth": 1}


def tiny_pruned() -> nn.Module:
    """A tiny DeepLab with soft thresholds set so that 70 % of its weights are pruned."""
    torch.manual_seed(0)
    model = build_model("deeplab_resnet34_cpu", tasks=TASKS, width=0.125, head_channels=16)
    model = sparsify(model)
    rescale_thresholds(model, 0.7)
    return model.eval()


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_a_pruned_model_runs_in_onnxruntime_as_in_torch(tmp_path):
    model = tiny_pruned()
    effective = dense_state_dict(model)
    path = tmp_path / "model.onnx"
    result = export_onnx(model, path, torch.randn(1, 3, 32, 32))
    assert is_sparsified(model)  # the model itself is not baked
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert dims(graph.input[0]) == ["batch", 3, 32, 32]
    assert [o.name for o in graph.output] == result.outputs == list(TASKS)
    assert [dims(o)[:2] for o in graph.output] == [["batch", 4], ["batch", 1]]

    # every prunable weight is in the graph with the same exact zeros (BN may be folded into it,
    # which scales each output channel and keeps the zeros)
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = {
        key.replace(".parametrizations.weight.original", ".weight"): value
        for key, value in effective.items()
        if key.endswith("weight") and value.dim() > 1
    }
    assert weights
    zeros = 0
    for key, value in weights.items():
        stored = torch.from_numpy(initializers[f"model.{key}"].copy())
        assert torch.equal(stored == 0, value == 0), key
        zeros += int((value == 0).sum())
    assert zeros >= 0.69 * sum(v.numel() for v in weights.values())

    # a batch of another size than the export's, in onnxruntime, against PyTorch
    image = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    names = [o.name for o in graph.output]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        names, {"image": image.numpy()}
    )
    with torch.no_grad():
        expected = model(image)
    for name, value in zip(names, got, strict=True):
        want = expected[name]
        assert value.shape == tuple(want.shape)
        scale = float(want.abs().max())
        assert float((torch.from_numpy(value) - want).abs().max()) <= 1e-4 * scale, name


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet_mtl", tasks={"left": 10, "right": 10}).eval()


def test_a_disagreeing_graph_is_refused_and_nothing_is_written(tmp_path):
    model = lenet()
    path = tmp_path / "model.onnx"
    image = torch.randn(2, 1, 28, 56)
    export_onnx(model, path, image)
    changed = lenet()
    with torch.no_grad():
        changed.heads["right"][-1].bias.add_(1.0)
    with pytest.raises(UserError, match="'right' relative error"):
        check_against_torch(session(path), changed, image)
    refused = tmp_path / "refused.onnx"
    with pytest.raises(UserError, match="nothing was written"):
        export_onnx(model, refused, image, rtol=-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_command_writes_onnx_for_a_grayscale_classifier(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    argv = ["export", "--model", "lenet_mtl", "--tasks", "left:10,right:10", "--prune", "0.8"]
    assert main([*argv, "--format", "onnx", "--input-size", "28x56", "-o", str(out)]) == 0
    assert "outputs left, right" in capsys.readouterr().out
    graph = onnx.load(str(out)).graph
    assert dims(graph.input[0]) == ["batch", 1, 28, 56]
    assert [(o.name, dims(o)) for o in graph.output] == [
        ("left", ["batch", 10]),
        ("right", ["batch", 10]),
    ]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"image": torch.randn(3, 1, 28, 56).numpy()})
    assert [v.shape for v in logits] == [(3, 10), (3, 10)]


def test_export_command_rejects_mismatched_names(tmp_path, capsys):
    base = ["export", "--model", "lenet_mtl", "--tasks", "left:10", "--prune", "0.5"]
    assert main([*base, "--format", "onnx", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "expected a .onnx file name for onnx" in capsys.readouterr().err
    assert main([*base, "--input-size", "28x56", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "--input-size is for --format onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bench_times_onnxruntime_beside_our_kernels(tmp_path, capsys):
    report = tmp_path / "bench.json"
    code = main(
        ["bench", "--model", "lenet_mtl", "--tasks", "left:10,right:10", "--prune", "0.9",
         "--input-size", "28x56", "--threads", "1", "--repeats", "2", "--layer-repeats", "1",
         "--kernels", "csr", "--onnxruntime", "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "onnxruntime running the dense graph (median of 2)" in out
    data = json.loads(report.read_text())["end_to_end"]
    assert data["onnxruntime_ms"] > 0
