"""One Detector shared by 4 threads gives exactly what a sequential run gives, on both CPU backends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from fastyolo import Detector


@pytest.fixture(scope="module")
def frames(kitti_images) -> list[np.ndarray]:
    """8 real KITTI frames (widths 1224-1242: different sizes in flight at once)."""
    return [cv2.imread(str(p)) for p in kitti_images[:8]]


def _same(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_four_threads_match_a_sequential_run(backend, untrained_r18, frames):
    detector = Detector(untrained_r18, backend=backend, conf=0.01, threads=1)
    expected = [detector.detect(f) for f in frames]
    assert sum(len(d) for d in expected) > 0, "low conf: the untrained net gives boxes to compare"
    jobs = [i % len(frames) for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: detector.detect(frames[i]), jobs))
    for i, dets in zip(jobs, got, strict=True):
        _same(dets, expected[i])


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_threads_with_different_batch_sizes(backend, untrained_r18, frames):
    """Batches of 1, 2 and 3 at once: OpenVINO compiles each size once, each thread has its own request."""
    detector = Detector(untrained_r18, backend=backend, conf=0.01, threads=1)
    expected = [detector.detect(f) for f in frames]
    chunks = [list(range(s, s + n)) for s, n in [(0, 1), (1, 2), (3, 3), (6, 2)] * 4]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda idx: detector.detect_batch([frames[i] for i in idx]), chunks))
    for idx, result in zip(chunks, got, strict=True):
        for i, dets in zip(idx, result, strict=True):
            _same(dets, expected[i])


def test_openvino_pins_threads_only_when_they_take_every_cpu(untrained_r18):
    """Pinned, every process's threads went to the same first cores: two --threads 1 processes (two Ray workers)
    shared one core of two. A session of fewer threads than CPUs is left unpinned; one of them all may pin."""
    from fastyolo.pipeline import default_threads

    def pinned(threads: int) -> bool:
        session = Detector(untrained_r18, backend="openvino", threads=threads).pipeline.session
        return bool(session._compiled[1].get_property("ENABLE_CPU_PINNING"))

    if default_threads() > 1:
        assert not pinned(1)
    assert pinned(default_threads())
