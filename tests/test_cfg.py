"""One validation for the options bench/detect/eval share; import-time robustness; README promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastyolo import cfg
from fastyolo.cli import main
from fastyolo.errors import UsageError

BAD = [
    (["--conf", "2"], "--conf must be between 0 and 1"),
    (["--iou", "5"], "--iou must be between 0 and 1"),
    (["--threads", "-3"], "--threads must be at least 1"),
    (["--backend", "onnxruntime", "--precision", "bf16"], "bf16 runs on OpenVINO only"),
    (["--backend", "tensorrt"], "runs a TensorRT engine"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_detect_eval_bench_reject_the_same_options_the_same_way(options, message, untrained_r18, kitti_dir,
                                                                kitti_images, capsys):
    m = str(untrained_r18)
    commands = {
        "detect": ["detect", str(kitti_images[0]), "--model", m, "--no-progress"],
        "eval": ["eval", m, "--data", str(kitti_dir)],
        "bench": ["bench", "--model", m, "--frames", "1"],
    }
    for name, argv in commands.items():
        assert main(argv + options) == 2, (name, options)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err == err.splitlines()[0] and err.startswith(f"fastyolo {name}: error:") and message in err, err
        assert "mAP" not in captured.out, "eval ran before checking its options"


def test_eval_min_size_and_batch(untrained_r18, kitti_dir, capsys):
    for options, message in ((["--min-size", "-3"], "--min-size must be at least 0"), (["--batch", "0"], "--batch")):
        assert main(["eval", str(untrained_r18), "--data", str(kitti_dir), *options]) == 2
        assert message in capsys.readouterr().err


def test_check_runtime_in_python_names_keywords():
    with pytest.raises(UsageError, match="^conf must be"):
        cfg.check_runtime(model=None, backend="auto", precision="fp32", conf=float("nan"), iou=0.5, threads=None,
                          flag=False)
    cfg.check_runtime(model="x.plan", backend="auto", precision="fp16", conf=0.5, iou=0.5, threads=2)


def test_cli_turns_os_errors_into_one_line(tmp_path, capsys):
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    assert main(["quantize", str(tmp_path / "m.onnx"), "--calib", str(tmp_path), "-o", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a folder" in err


def _copy_package(tmp_path: Path) -> Path:
    """fastyolo (and its kernels) copied where kernels/__pycache__ is a regular file: numba cannot cache
    beside the source even as root (chmod would not stop root)."""
    import fastyolo.kernels

    import fastyolo

    root = tmp_path / "site"
    pkg = root / "fastyolo"
    shutil.copytree(Path(fastyolo.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.mp4"))
    shutil.copytree(Path(fastyolo.kernels.__file__).parent, pkg / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "kernels" / "__pycache__").write_text("in the way")
    return root


@pytest.mark.parametrize("tmp_writable", [True, False])
def test_import_works_where_neither_package_nor_home_is_writable(tmp_path, tmp_writable):
    root = _copy_package(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(blocker / "home"), PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    code = textwrap.dedent(f"""
        import tempfile
        if not {tmp_writable}:
            tempfile.tempdir = {str(blocker / "tmp")!r}
        import numpy as np
        import fastyolo
        assert fastyolo.__file__.startswith({str(root)!r}), fastyolo.__file__
        from fastyolo.kernels import decode_nms_batch
        decode_nms_batch(np.zeros((1, 11, 11, 13), np.float32), np.array([[10.0, 10.0]]), 0.5, 0.5, 5)
        print(fastyolo.NUMBA_CACHE)
    """)
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    where = run.stdout.strip().splitlines()[-1]
    assert (where.startswith(tempfile_dir()) if tmp_writable else where == "off"), where


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_datasets_after_a_plain_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import fastyolo; "
            "assert callable(fastyolo.datasets.load_dataset)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_header_mix_up_is_reported_once_by_eval(untrained_r18, kitti_dir, tmp_path, capfd):
    data = tmp_path / "crowdai"
    shutil.copytree(kitti_dir / "images", data / "images")
    lines = (kitti_dir / "labels.csv").read_text().splitlines()
    assert lines[0].startswith("xmin,ymin,xmax,ymax")
    (data / "labels.csv").write_text("\n".join(["xmin,xmax,ymin,ymax,Frame,Label,Preview URL", *lines[1:40]]) + "\n")
    assert main(["eval", str(untrained_r18), "--data", str(data), "--threads", "1"]) == 0
    out, err = capfd.readouterr()
    assert (out + err).count("the header says xmin,xmax,ymin,ymax") == 1
