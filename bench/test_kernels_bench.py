"""Decode + NMS microbenchmarks (pytest-benchmark), separate from the test suite:

    python -m pytest bench/test_kernels_bench.py --benchmark-columns=min,median,mean,rounds -q

Grids are random with the network's value ranges (softmax over the classes, the rest in [0, 1]); at
conf 0.25, 151 of the 242 boxes are candidates and 94 are kept: more work than a real frame gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastyolo.kernels import decode_nms_batch, decode_nms_reference, warmup

from fastyolo.layout import CELL_SIZE, CLASS_OFFSET, CLASSES, GRID

pytest.importorskip("pytest_benchmark", reason="needs pytest-benchmark (the [dev] extra)")

SIZE = (960.0, 540.0)


def _random_grids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = rng.random((n, GRID, GRID, CELL_SIZE), dtype=np.float32)
    logits = rng.standard_normal((n, GRID, GRID, CLASSES)).astype(np.float32) * 2
    e = np.exp(logits)
    grids[..., CLASS_OFFSET : CLASS_OFFSET + CLASSES] = e / e.sum(-1, keepdims=True)
    return grids


@pytest.fixture(scope="module", params=[1, 8], ids=lambda n: f"batch{n}")
def grids(request) -> np.ndarray:
    warmup()
    return _random_grids(request.param)


@pytest.mark.parametrize("conf", [0.25, 0.05])
def test_decode_nms_njit(benchmark, grids, conf):
    sizes = np.tile(np.array([SIZE]), (len(grids), 1))
    boxes, scores, classes, counts = benchmark(decode_nms_batch, grids, sizes, conf, 0.45, 100)
    ref = decode_nms_reference(grids[0], *SIZE, conf, 0.45, 100)
    np.testing.assert_array_equal(scores[0, : counts[0]], ref[1])  # timing the right thing


@pytest.mark.parametrize("conf", [0.25])
def test_decode_nms_numpy_reference(benchmark, grids, conf):
    benchmark(lambda: [decode_nms_reference(g, *SIZE, conf, 0.45, 100) for g in grids])
