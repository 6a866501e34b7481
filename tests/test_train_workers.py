"""DataLoader workers run OpenCV unthreaded: a worker forked while OpenCV's thread pool exists can hang in
its first warpAffine (a 25-epoch run sat an hour in epoch 1, the worker blocked in cv2.warpAffine)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from fastyolo.train.engine import _loader  # noqa: E402


class _OpenCVThreads(torch.utils.data.Dataset):
    """Each item: the OpenCV thread count inside the process that made it, after a threaded-size warp."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        frame = np.full((540, 960, 3), index, np.uint8)
        cv2.warpAffine(frame, np.eye(2, 3), (224, 224))
        return torch.tensor(cv2.getNumThreads())


def test_loader_workers_run_opencv_unthreaded():
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        cv2.warpAffine(np.zeros((1080, 1920, 3), np.uint8), np.eye(2, 3), (1920, 1080))  # the parent's pool exists
        loader = _loader(_OpenCVThreads(), batch=1, workers=1, device=torch.device("cpu"))
        seen = [int(item) for item in loader]
        del loader
    finally:
        cv2.setNumThreads(before)
    # getNumThreads reports 1 once threading is off (setNumThreads(0)); 2 means the worker used the inherited pool.
    assert seen == [1, 1]
