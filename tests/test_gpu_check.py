"""bench/gpu_check.py, the one prepared command for a GPU machine, without a GPU: it must stop in one
line, import a plain copy through its symlink tree, and complete its simulated dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.skipif(SIMULATED, reason="starts its own processes")


def _gpu_here() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(_gpu_here(), reason="a GPU is present: the check would run")
def test_without_a_gpu_it_stops_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(tmp_path / "x.json")], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench/gpu_check.py: error:") and "--simulate" in lines[0]
    assert not (tmp_path / "x.json").exists()


def test_plain_copy_imports_through_the_symlink_tree():
    """No installed fastyolo (python -S: no .pth, so no editable finder): the tree maps kernels/ and train/."""
    site = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path.append({site!r})\n"
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(SCRIPT)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(mod.ensure_importable().split()[0])\n"
        "import fastyolo.kernels.reference, fastyolo.gpu.torch_engine, fastyolo.train\n"
        "print(fastyolo.kernels.reference.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    how, reference = proc.stdout.split()[:2]
    assert how == "symlink" and reference.endswith("fastyolo/kernels/reference.py") and "fastyolo-tree-" in reference


def test_simulated_dry_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("numba_cuda")
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--simulate", "--json", str(out)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["simulate"] is True and "no figure here is a GPU measurement" in report["note"]
    check = report["kernels_vs_reference"]
    assert check["pass"] is True and check["random"]["images"] > 0 and check["real"]["images"] > 0
    assert check["random"]["elements_differ"] == 0 and check["real"]["elements_differ"] == 0
    assert report["engines"]["resnet18"]["graph_equals_eager"] is True
    assert report["tensorrt"]["present"] in (True, False)
