"""`fastyolo bench` without --model: the untrained reference network, exported once and cached."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _bench_without_torch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # a CPU laptop without the [train] extra
        from fastyolo.cli import main
        sys.exit(main(["bench", "--frames", "2", "--warmup", "1", *{list(args)!r}]))
    """)
    env = {**os.environ, "FASTYOLO_CACHE": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_without_torch_bench_runs_the_packaged_model(tmp_path):
    run = _bench_without_torch(tmp_path)
    assert run.returncode == 0, run.stderr
    assert "roads-lite0.onnx" in run.stdout and "FPS" in run.stdout


def test_without_torch_the_untrained_reference_asks_for_a_model_in_one_line(tmp_path):
    run = _bench_without_torch(tmp_path, "--model", "untrained")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --model MODEL.onnx" in lines[0] and "fastyolo[train]" in lines[0]


def test_reference_model_is_exported_once_and_reused(untrained_r18):
    from fastyolo.model_file import read_onnx
    from fastyolo.reference_model import untrained_model

    before = untrained_r18.stat().st_mtime_ns
    assert untrained_model("resnet18", quiet=True) == untrained_r18
    assert untrained_r18.stat().st_mtime_ns == before
    model = read_onnx(untrained_r18)
    assert model.untrained and model.backbone == "resnet18" and model.precision == "fp32"
