"""Files say what they hold (issue 14, items 6-8): export, bench, report and eval read the model,
tasks and options from a checkpoint or an export's metadata (flags only override); exports get
the mode of any other file; eval and report take a run directory; errors name the flag."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adapmtl.cli import main
from adapmtl.config import from_dict


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny AdapMTL run (scenes at 32x32, five heads)."""
    from tests.conftest import TINY

    from adapmtl.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("files") / "run"
    Trainer(from_dict(TINY), out, verbose=False).fit()
    return out


def _json(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _error(argv, capsys):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_export_needs_no_model_and_records_what_it_holds(run, tmp_path, capsys):
    from adapmtl.sparsity.export import read_metadata

    out = tmp_path / "model.safetensors"
    assert main(["export", str(run / "last.pt"), "-o", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["adapmtl.model"] == "deeplab_resnet34_cpu"
    assert meta["adapmtl.tasks"] == "seg:8,normal:3,depth:1,keypoint:1,edge:1"
    assert json.loads(meta["adapmtl.model_options"]) == {
        "width": 0.125,
        "head_channels": 16,
        "init_std": 0.01,
    }
    assert json.loads(meta["adapmtl.config"])["data"]["options"] == {"size": [32, 32]}
    # naming the model (as before) takes the tasks from the file instead of NYUv2's
    again = tmp_path / "again.safetensors"
    argv = ["export", str(run / "last.pt"), "--model", "deeplab_resnet34_cpu", "-o", str(again)]
    assert main(argv) == 0


def test_onnx_export_takes_tasks_and_input_size_from_the_run(run, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(out)]) == 0
    assert "input size 32x32" in capsys.readouterr().err  # the run's evaluation size
    graph = onnx.load(str(out)).graph
    shape = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", 3, 32, 32]
    assert [o.name for o in graph.output] == ["seg", "normal", "depth", "keypoint", "edge"]


def test_wrong_tasks_say_how_to_match_the_file(run, tmp_path, capsys):
    out = str(tmp_path / "x.safetensors")
    err = _error(["export", str(run / "last.pt"), "--tasks", "seg:40", "-o", out], capsys)
    assert "seg:40, as --tasks says" in err
    assert "give --model and --tasks NAME:CHANNELS" in err
    assert not Path(out).exists()


def test_report_and_eval_read_an_export_as_its_checkpoint(run, tmp_path, capsys):
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(run / "last.pt"), "-o", str(exported)]) == 0
    capsys.readouterr()
    from_checkpoint = _json(["report", str(run / "last.pt"), "--json"], capsys)
    from_export = _json(["report", str(exported), "--json"], capsys)
    # the export's exact zeros are the checkpoint's pruned weights, component by component
    for name, component in from_checkpoint["components"].items():
        assert from_export["components"][name]["nonzero"] == component["nonzero"], name
    evaluated = _json(["eval", str(exported), "--json"], capsys)
    reference = _json(["eval", str(run / "last.pt"), "--json"], capsys)
    for task, values in reference["metrics"].items():
        assert evaluated["metrics"][task] == pytest.approx(values, rel=1e-5), task


def test_bench_reads_the_export(run, tmp_path, capsys):
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(run / "last.pt"), "-o", str(exported)]) == 0
    capsys.readouterr()
    argv = ["bench", str(exported), "--input-size", "32x32", "--repeats", "1"]
    assert main([*argv, "--layer-repeats", "1", "--kernels", "csr"]) == 0
    assert capsys.readouterr().out.startswith("deeplab_resnet34_cpu, input 1x3x32x32")


def test_exported_file_mode_follows_the_umask(run, tmp_path):
    out = tmp_path / "model.safetensors"
    previous = os.umask(0o022)
    try:
        assert main(["export", str(run / "last.pt"), "--format", "dense", "-o", str(out)]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_eval_takes_a_run_directory_and_says_which_file(run, capsys):
    best = "best.pt" if (run / "best.pt").exists() else "last.pt"
    results = _json(["eval", str(run), "--json"], capsys)
    assert results["iteration"] == 12
    assert main(["report", str(run)]) == 0
    assert f"{run}: using {best}" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda:0", "tpu"])
def test_eval_device_errors_name_the_flag(run, device, capsys):
    err = _error(["eval", str(run / "last.pt"), "--device", device], capsys)
    assert "--device: " in err and "train.device" not in err


def test_eval_refuses_a_reference_from_another_split(run, tmp_path, capsys):
    # the run's own results.json is a reference measured on its val split
    err = _error(
        ["eval", str(run / "last.pt"), "--split", "test", "--reference", str(run / "results.json")],
        capsys,
    )
    assert "holds metrics on the 'val' split" in err
    # a reference measured on the test split is accepted
    on_test = _json(["eval", str(run / "last.pt"), "--split", "test", "--json"], capsys)
    assert on_test["split"] == "test"
    reference = tmp_path / "dense_test.json"
    own = {t: {m: v for m, v in ms.items() if v != 0} for t, ms in on_test["metrics"].items()}
    reference.write_text(json.dumps({"split": "test", "metrics": own}))
    argv = ["eval", str(run / "last.pt"), "--split", "test", "--reference", str(reference)]
    scored = _json([*argv, "--json"], capsys)
    assert scored["delta_t"]["overall"] == pytest.approx(0.0, abs=1e-9)


def test_report_cost_uses_the_run_input_size(run, capsys):
    from adapmtl.analysis import count_cost
    from adapmtl.checkpoint import load_checkpoint
    from adapmtl.loading import model_from_checkpoint

    cost = _json(["report", str(run / "last.pt"), "--cost", "--json"], capsys)
    model, _, _ = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    at_32 = json.loads(count_cost(model.eval(), (32, 32)).to_json())
    assert cost["overall"] == at_32["overall"]


def test_report_into_a_closed_pipe_ends_quietly(run):
    import adapmtl

    source = str(Path(adapmtl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "adapmtl", "report", str(run / "last.pt"), "--layers"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # the reader is gone before the first line is written
    err = child.stderr.read().decode()
    assert child.wait() == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_defaults_and_describes_every_argument(capsys):
    assert "(default: sparse)" in _help("export", capsys)
    bench = _help("bench", capsys)
    kernels = "among: direct, direct-wide, direct-block4, direct-block4-wide, csr"
    assert kernels in bench.replace("- ", "-")  # argparse wraps lines after hyphens
    assert "images per forward pass (default: 1)" in bench
    assert "end-to-end runs per model (default: 10)" in bench
    assert "(default: 1200)" in _help("demo", capsys)
    for command in ("eval", "report"):
        text = _help(command, capsys)
        assert "checkpoint a run's checkpoint (.pt), its run directory" in text
    assert "--device DEVICE auto (the first CUDA device" in _help("eval", capsys)
