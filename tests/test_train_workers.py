"""DataLoader workers run OpenCV unthreaded: a worker forked while OpenCV's thread pool exists can hang in
its first warpAffine (a 25-epoch run sat an hour in epoch 1, the worker blocked in cv2.warpAffine)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

# In a fresh interpreter: the suite's own process has loaded OpenVINO by now, where safe_workers (rightly) turns
# workers off, and the items would then come from this process, not from a forked worker.
_CHILD = textwrap.dedent("""
    import cv2, numpy as np, torch
    from fastyolo.train.engine import _loader

    class OpenCVThreads(torch.utils.data.Dataset):
        # Each item: the OpenCV thread count inside the process that made it, after a threaded-size warp.
        def __len__(self):
            return 2

        def __getitem__(self, index):
            cv2.warpAffine(np.full((540, 960, 3), index, np.uint8), np.eye(2, 3), (224, 224))
            return torch.tensor([cv2.getNumThreads(), torch.utils.data.get_worker_info() is not None])

    cv2.setNumThreads(2)
    cv2.warpAffine(np.zeros((1080, 1920, 3), np.uint8), np.eye(2, 3), (1920, 1080))  # the parent's pool exists
    loader = _loader(OpenCVThreads(), batch=1, workers=1, device=torch.device("cpu"))
    print([item.flatten().tolist() for item in loader])
""")


def test_loader_workers_run_opencv_unthreaded():
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # [threads, made in a worker]: getNumThreads reports 1 once threading is off (setNumThreads(0)); 2 means the
    # worker used the pool it inherited.
    assert done.stdout.strip().splitlines()[-1] == "[[1, 1], [1, 1]]"
