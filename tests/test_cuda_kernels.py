"""The numba.cuda kernels against the numpy reference, element by element, without a GPU.

numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs the kernels thread by thread in Python, but
it is process-global and must be chosen before numba.cuda is imported, so the simulated tests
run in a child pytest process (`test_kernels_under_simulator` starts it); in this process they
are skipped. The PTX tests compile the same kernels with NVVM, which type-checks what the
simulator cannot, and read the PTX for what the simulator cannot show: a plain multiply that
ptxas could fuse with the add after it (the simulator never fuses; real hardware did). The
simulator is slow (a call is about half a second): examples are few and small.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
in_simulator = pytest.mark.skipif(not SIMULATED, reason="runs in the CUDA-simulator child process")


@pytest.mark.skipif(SIMULATED, reason="this starts the simulator run")
def test_kernels_under_simulator(request):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    # real network outputs for the child: the untrained ResNet-18 ONNX (needs torch to export once)
    with contextlib.suppress(pytest.skip.Exception):
        env["FASTYOLO_TEST_ONNX"] = str(request.getfixturevalue("untrained_r18"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"],
        env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# ---------------------------------------------------------------- simulated: decode + NMS


def _compare(grids, sizes, conf, iou, top_k):
    from fastyolo.kernels.cuda import decode_nms_batch_cuda
    from fastyolo.kernels.reference import decode_nms_reference

    boxes, scores, classes = decode_nms_batch_cuda(grids, sizes, conf, iou, top_k)
    assert len(boxes) == len(grids)
    for n in range(len(grids)):
        ref_boxes, ref_scores, ref_classes = decode_nms_reference(grids[n], sizes[n, 0], sizes[n, 1], conf, iou, top_k)
        assert boxes[n].dtype == np.float32 and scores[n].dtype == np.float32 and classes[n].dtype == np.int32
        np.testing.assert_array_equal(boxes[n], ref_boxes)
        np.testing.assert_array_equal(scores[n], ref_scores)
        np.testing.assert_array_equal(classes[n], ref_classes)
    return [len(s) for s in scores]


def _random_grids(rng, n, mode):
    from fastyolo.layout import CELL_SIZE, GRID

    shape = (n, GRID, GRID, CELL_SIZE)
    if mode == "uniform":
        return rng.random(shape, dtype=np.float32)
    if mode == "wide":  # centres and sizes past the cell and the image: clipping; negative scores
        return rng.uniform(-0.5, 1.5, shape).astype(np.float32)
    if mode == "coarse":  # few distinct values: equal scores, zero-area and identical boxes
        return rng.choice(np.array([0.0, 0.25, 0.5, 1.0], np.float32), size=shape)
    # "sparse": a few confident cells in a quiet grid, like a trained network's output
    grids = rng.random(shape, dtype=np.float32) * np.float32(0.2)
    hot = rng.random(shape[:3]) < 0.1
    grids[hot] = rng.random((int(hot.sum()), CELL_SIZE), dtype=np.float32)
    return grids


if SIMULATED:
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    # A simulated image costs about a second: a few random draws, and every grid kind always, in batches of 1 to 3,
    # at the thresholds' extremes (conf 0 keeps every box; IoU 0 suppresses any overlap, 1 none; top_k 1 and 242).
    @in_simulator
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @example(seed=11, n=3, mode="uniform", conf=0.0, iou=0.45, top_k=242)
    @example(seed=12, n=2, mode="coarse", conf=0.25, iou=0.0, top_k=100)
    @example(seed=13, n=1, mode="sparse", conf=0.05, iou=1.0, top_k=7)
    @example(seed=14, n=2, mode="wide", conf=0.5, iou=0.3, top_k=1)
    @given(
        seed=st.integers(0, 2**32 - 1),
        n=st.integers(1, 3),
        mode=st.sampled_from(["uniform", "coarse", "sparse", "wide"]),
        conf=st.sampled_from([0.0, 0.05, 0.25, 0.5]),
        iou=st.sampled_from([0.0, 0.3, 0.45, 1.0]),
        top_k=st.sampled_from([1, 7, 100, 242]),
    )
    def test_decode_nms_matches_reference(seed, n, mode, conf, iou, top_k):
        rng = np.random.default_rng(seed)
        grids = _random_grids(rng, n, mode)
        sizes = np.stack([rng.integers(1, 2000, n), rng.integers(1, 1200, n)], axis=1).astype(np.float64)
        _compare(grids, sizes, conf, iou, top_k)


REAL_FRAMES = 8  # every one compared in test_real_outputs_every_frame (a simulated image is about a second)


@pytest.fixture(scope="module")
def real_grids(kitti_images) -> tuple[np.ndarray, np.ndarray]:
    """The untrained ResNet-18's outputs on REAL_FRAMES real KITTI frames (onnxruntime), with the frames' sizes."""
    path = os.environ.get("FASTYOLO_TEST_ONNX")
    if not path:
        pytest.skip("no ONNX handed to the simulator child (torch missing to export it)")
    import cv2
    import onnxruntime as ort

    from fastyolo.layout import INPUT_NAME, OUTPUT_NAME
    from fastyolo.preprocess import preprocess

    frames = [cv2.imread(str(p)) for p in kitti_images[:REAL_FRAMES]]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    grids = session.run([OUTPUT_NAME], {INPUT_NAME: preprocess(frames)})[0]
    sizes = np.array([(f.shape[1], f.shape[0]) for f in frames], np.float64)
    return grids, sizes


if SIMULATED:

    @in_simulator
    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
    @example(start=REAL_FRAMES - 2, n=3, conf=0.0, iou=0.7, top_k=242, scale=3.7)  # wraps past the last frame
    @given(
        start=st.integers(0, REAL_FRAMES - 1),
        n=st.integers(1, 3),
        conf=st.sampled_from([0.0, 0.05, 0.25, 0.4]),
        iou=st.sampled_from([0.0, 0.3, 0.45, 0.7]),
        top_k=st.sampled_from([1, 5, 100, 242]),
        scale=st.sampled_from([1.0, 0.5, 3.7]),
    )
    def test_decode_nms_matches_reference_on_real_outputs(real_grids, start, n, conf, iou, top_k, scale):
        grids, sizes = real_grids
        pick = [(start + i) % len(grids) for i in range(n)]
        _compare(grids[pick], sizes[pick] * scale, conf, iou, top_k)


@in_simulator
def test_real_outputs_every_frame(real_grids):
    grids, sizes = real_grids
    kept = _compare(grids, sizes, 0.1, 0.45, 100)  # an untrained network's scores are low (~0.1-0.3)
    assert sum(kept) > 0  # the comparison is not vacuous


@in_simulator
def test_no_boxes():
    from fastyolo.layout import CELL_SIZE, GRID

    grids = np.zeros((2, GRID, GRID, CELL_SIZE), np.float32)
    assert _compare(grids, np.array([[640.0, 480.0], [10.0, 10.0]]), 0.25, 0.45, 100) == [0, 0]
    rng = np.random.default_rng(1)
    assert _compare(rng.random((1, GRID, GRID, CELL_SIZE), dtype=np.float32), np.array([[100.0, 50.0]]),
                    1.01, 0.45, 100) == [0]


@in_simulator
def test_all_boxes_kept():
    from fastyolo.layout import MAX_BOXES

    rng = np.random.default_rng(2)
    grids = _random_grids(rng, 1, "uniform")
    # conf 0 makes every box a candidate; IoU can never exceed 1, so nothing is suppressed
    assert _compare(grids, np.array([[1224.0, 370.0]]), 0.0, 1.0, MAX_BOXES) == [MAX_BOXES]


@in_simulator
def test_equal_scores_keep_cell_order():
    from fastyolo.layout import BOX_OFFSET, CONF_OFFSET, MAX_BOXES

    rng = np.random.default_rng(3)
    grids = _random_grids(rng, 1, "uniform")
    grids[..., :BOX_OFFSET] = 0.5  # every class prob and confidence equal: one score for all boxes
    kept = _compare(grids, np.array([[960.0, 540.0]]), 0.1, 0.3, MAX_BOXES)
    assert 0 < kept[0] < MAX_BOXES
    grids[..., CONF_OFFSET:BOX_OFFSET] = 0.9
    _compare(grids, np.array([[960.0, 540.0]]), 0.1, 0.0, 20)


@in_simulator
def test_zero_area_boxes():
    from fastyolo.layout import BOX_OFFSET, BOX_VALUES, BOXES, CELL_SIZE, GRID

    grids = np.full((1, GRID, GRID, CELL_SIZE), 0.5, np.float32)
    for b in range(BOXES):  # w = h = 0 everywhere: IoU of two zero-area boxes is 0, nothing suppressed
        grids[..., BOX_OFFSET + BOX_VALUES * b + 2 : BOX_OFFSET + BOX_VALUES * (b + 1)] = 0.0
    assert _compare(grids, np.array([[300.0, 200.0]]), 0.2, 0.0, 242) == [242]


@in_simulator
@pytest.mark.parametrize("candidates", [63, 64, 65, 128, 129, 192, 241])
def test_candidate_counts_at_tile_edges(candidates):
    """n candidates exactly at and around the 64-rank words: the last word's valid bits and the walk's word jumps."""
    from fastyolo.layout import BOX_OFFSET, BOXES, CONF_OFFSET, GRID, MAX_BOXES

    rng = np.random.default_rng(candidates)
    grids = _random_grids(rng, 1, "uniform")
    grids[..., :CONF_OFFSET] = rng.random((1, GRID, GRID, CONF_OFFSET), dtype=np.float32) * 0.5 + 0.5
    conf = np.zeros(MAX_BOXES, np.float32)
    conf[rng.choice(MAX_BOXES, candidates, replace=False)] = 1.0  # scores >= 0.5 exactly for these boxes
    grids[..., CONF_OFFSET:BOX_OFFSET] = conf.reshape(1, GRID, GRID, BOXES)
    # IoU 1 keeps every candidate (the word walk reaches each one); a suppressing IoU, 0 or 0.3 by turns over the
    # counts, drops some (both thresholds on every word edge would double the simulated images for no other path).
    suppress = 0.0 if candidates % 2 else 0.3
    for iou in (suppress, 1.0):
        kept = _compare(grids, np.array([[960.0, 540.0]]), 0.5, iou, MAX_BOXES)
        assert kept[0] == candidates if iou == 1.0 else 0 < kept[0] <= candidates


@in_simulator
def test_batch_layout_with_mixed_sizes():
    rng = np.random.default_rng(4)
    grids = _random_grids(rng, 3, "sparse")
    grids[1] = 0.0  # an empty image between two with boxes
    kept = _compare(grids, np.array([[1224.0, 370.0], [960.0, 540.0], [32.0, 3000.0]]), 0.05, 0.45, 100)
    assert kept[1] == 0 and kept[0] > 0 and kept[2] > 0


# ---------------------------------------------------------------- simulated: normalisation


@in_simulator
def test_normalize_matches_host(kitti_images):
    import cv2
    from fastyolo.kernels.cuda import normalize_cuda

    from fastyolo.preprocess import normalize, resize_rgb

    # A real 224x224 input is 150k simulated threads (minutes); a 16x40 patch of two real frames
    # exercises the same index arithmetic (H != W, two images) in a second.
    rgb = np.stack([resize_rgb(cv2.imread(str(p)))[100:116, 60:100] for p in kitti_images[:2]])
    got = normalize_cuda(rgb)
    for i in range(len(rgb)):
        np.testing.assert_array_equal(got[i], normalize(rgb[i]))


# ---------------------------------------------------------------- real NVVM: PTX for two architectures


# A multiply that ptxas may contract with an add into one FMA: `mul.f32`/`mul.f64` without `.rn`,
# or an FMA/MAD already in the PTX. Integer multiplies (`mul.lo.s32`, `mad.lo.s64`) do not round.
PLAIN_FLOAT_MULTIPLY = re.compile(r"\b(?:mul(?:\.(?:ftz|sat))*\.f(?:16|32|64)|fma\.[\w.]*|mad\.(?:rn\.)?f\w*)\b")


@pytest.mark.skipif(SIMULATED, reason="NVVM is not used under the simulator")
@pytest.mark.parametrize("cc", [(7, 5), (8, 0), (9, 0)])
def test_kernels_compile_to_ptx(cc):
    pytest.importorskip("numba_cuda", reason="compiling PTX needs the [cuda] extra (numba-cuda)")
    from fastyolo.gpu.ptx import assemble, compile_kernels_ptx

    ptx = compile_kernels_ptx(cc)
    arch = f"sm_{cc[0]}{cc[1]}"
    for name, text in ptx.items():
        assert f".target {arch}" in text and ".entry" in text and name in text
        # Every float multiply is the never-fused `mul.rn`, so boxes, areas, IoUs and normalised
        # pixels are rounded as numpy rounds them, on any GPU.
        assert PLAIN_FLOAT_MULTIPLY.findall(text) == [], name
    assert "mul.rn.f64" in ptx["decode_nms_kernel"] and "mul.rn.f32" in ptx["decode_nms_kernel"]
    assert "mul.rn.f32" in ptx["normalize_kernel"]
    barriers = ptx["decode_nms_kernel"].count("bar.sync")
    assert 0 < barriers <= 5  # a fixed number of barriers, none per kept box
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas not on PATH: PTX compiled, not assembled")
    for text in ptx.values():
        figures = assemble(text, arch)
        assert figures["registers"] > 0
        assert figures["spill_stores"] == 0 and figures["spill_loads"] == 0


@pytest.mark.skipif(SIMULATED, reason="NVVM is not used under the simulator")
def test_plain_multiply_pattern():
    """The PTX check would see the instructions that made the hardware differ, and nothing else."""
    found = PLAIN_FLOAT_MULTIPLY.findall
    assert found("mul.f64 %fd3, %fd1, %fd2;") and found("mul.f32 %f3, %f1, 0f3F000000;")
    assert found("fma.rn.f64 %fd4, %fd1, %fd2, %fd3;") and found("mul.ftz.f32 %f1, %f2, %f3;")
    assert not found("mul.rn.f64 %fd3, %fd1, %fd2;") and not found("mul.rn.f32 %f3, %f1, %f2;")
    assert not found("mul.lo.s32 %r1, %r2, 11;") and not found("mad.lo.s64 %rd1, %rd2, 4, %rd3;")
    assert not found("mul.wide.s32 %rd1, %r1, 4;")


@pytest.mark.skipif(SIMULATED, reason="NVVM is not used under the simulator")
def test_kernels_compile_without_numpy_row_stack():
    """numpy 2.5 removed np.row_stack, which numba-cuda 0.30 registers: the kernels must still compile."""
    pytest.importorskip("numba_cuda", reason="compiling PTX needs the [cuda] extra (numba-cuda)")
    code = (
        "import numpy as np\n"
        "if hasattr(np, 'row_stack'): del np.row_stack\n"
        "assert not hasattr(np, 'row_stack')\n"
        "from fastyolo.gpu.ptx import compile_kernels_ptx\n"
        "ptx = compile_kernels_ptx((8, 0))\n"
        "print(sorted(ptx), np.row_stack is np.vstack)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[0] == "['decode_nms_kernel', 'normalize_kernel'] True"


@in_simulator
def test_simulated_kernels_run_without_numpy_row_stack():
    code = (
        "import numpy as np\n"
        "if hasattr(np, 'row_stack'): del np.row_stack\n"
        "from fastyolo.kernels.cuda import decode_nms_batch_cuda\n"
        "from fastyolo.layout import CELL_SIZE, GRID\n"
        "g = np.random.default_rng(0).random((1, GRID, GRID, CELL_SIZE), dtype=np.float32)\n"
        "print(len(decode_nms_batch_cuda(g, np.array([[64.0, 48.0]]), 0.5, 0.45, 10)[0]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout.strip() == "1", proc.stderr[-3000:]
