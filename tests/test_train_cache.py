"""The training input pipeline on real KITTI frames: the frame cache (memory and disk), augmentation of the
cached square copy, normalisation on the device, and the training precision settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from conftest import tiny_dataset, worker_batches_equal  # noqa: E402
from fastyolo.train.augment import augment, augment_square  # noqa: E402
from fastyolo.train.cache import build_cache  # noqa: E402
from fastyolo.train.data import YoloDataset  # noqa: E402
from fastyolo.train.engine import _loader, cpu_has_amx, pick_precision, to_network_input  # noqa: E402

from fastyolo.cli import main as cli  # noqa: E402
from fastyolo.datasets import load_dataset  # noqa: E402
from fastyolo.errors import FastYoloError  # noqa: E402
from fastyolo.layout import INPUT_SIZE  # noqa: E402
from fastyolo.preprocess import normalize, resize_rgb  # noqa: E402

FRAMES = 8


@pytest.fixture(scope="module")
def samples(cached_frames):
    return cached_frames[0][:FRAMES]


@pytest.fixture(scope="module")
def cache(cached_frames):
    return cached_frames[1]  # rows 0..FRAMES-1 are `samples`


def _items_equal(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y)
        else:
            assert x == y


def test_cached_unaugmented_items_are_the_decoded_ones(samples, cache):
    """Validation, BatchNorm and the clean epochs read the cache: bit for bit what decoding gives."""
    cached, decoded = YoloDataset(samples, cache=cache), YoloDataset(samples)
    for i in range(len(samples)):
        _items_equal(cached[i], decoded[i])
        assert np.array_equal(cached[i][0].numpy(), resize_rgb(samples[i].load_image()))


def test_network_input_on_the_device_equals_normalize(samples):
    """to_network_input (torch, on the training device) = preprocess.normalize (numpy, inference), every element."""
    rgb = np.stack([resize_rgb(s.load_image()) for s in samples[:4]])
    noise = np.random.default_rng(0).integers(0, 256, size=(2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    for batch in (rgb, noise):
        expected = np.stack([normalize(x) for x in batch])
        for channels_last in (False, True):
            got = to_network_input(torch.from_numpy(batch), channels_last)
            assert got.shape == expected.shape and got.dtype == torch.float32
            assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            assert np.array_equal(got.numpy(), expected)


def test_augmenting_the_cached_copy_keeps_boxes_and_matches_the_full_frame(samples, cache):
    """The same draws give exactly the same boxes; the pixels agree with augmenting the full frame up to
    resampling (a half-pixel or scale error in the composed matrix would show in the blurred difference)."""
    for i, s in enumerate(samples):
        image = s.load_image()
        for epoch in range(4):
            full, boxes, ids = augment(image, s.boxes, s.class_ids, np.random.default_rng([0, epoch, i]), aspect=1.8)
            small, boxes2, ids2 = augment_square(cache.large[i], s.width, s.height, s.boxes, s.class_ids,
                                                 np.random.default_rng([0, epoch, i]), INPUT_SIZE, aspect=1.8)
            assert np.array_equal(boxes, boxes2) and np.array_equal(ids, ids2)
            a = cv2.GaussianBlur(cv2.cvtColor(resize_rgb(full), cv2.COLOR_RGB2GRAY), (5, 5), 0).astype(float)
            b = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(float)
            inner = (slice(8, -8), slice(8, -8))  # the black border's edge resamples differently
            aligned = np.abs(a - b)[inner].mean()
            shifted = np.abs(np.roll(a, 2, axis=1) - b)[inner].mean()
            assert aligned < 3.0, (i, epoch, aligned)
            assert shifted > aligned, (i, epoch, aligned, shifted)


def test_cached_augmentation_is_reproducible_in_any_worker(samples, cache, kitti_dir: Path):
    """The images a seed and epoch give do not depend on the cache instance or on the worker process."""
    a = YoloDataset(samples, augment=True, seed=5, aspect=1.8, cache=cache)
    b = YoloDataset(samples, augment=True, seed=5, aspect=1.8, cache=build_cache(samples, mode="memory"))
    _items_equal(a[(3, 2, True)], b[(3, 2, True)])
    assert not torch.equal(a[(3, 2, True)][0], a[(3, 1, True)][0])  # another epoch, other draws
    found = worker_batches_equal(kitti_dir, FRAMES, on_device=False)
    assert found == {"batches": 6, "workers_used": 2, "equal": True, "equal_by_epoch": True}


def test_disk_cache_is_reused_and_invalidated_when_an_image_changes(kitti_dir: Path, tmp_path: Path):
    data = tiny_dataset(kitti_dir, tmp_path / "data", ["000001.jpg", "000002.jpg", "000003.jpg"])
    found, _ = load_dataset(data)
    said: list[str] = []
    first = build_cache(found, mode="disk", cache_dir=tmp_path / "cache", log=said.append)
    assert "writing" in said[-1] and first.path is not None and first.path.parent == tmp_path / "cache"
    again = build_cache(found, mode="disk", cache_dir=tmp_path / "cache", log=said.append)
    assert "reused" in said[-1] and again.path == first.path
    assert np.array_equal(again.exact, first.exact) and np.array_equal(again.large, first.large)
    # Another frame's pixels under the same name: a new cache, holding the new pixels.
    shutil.copyfile(kitti_dir / "images" / "000010.jpg", data / "images" / "000002.jpg")
    found, _ = load_dataset(data)
    changed = build_cache(found, mode="disk", cache_dir=tmp_path / "cache", log=said.append)
    assert "writing" in said[-1] and changed.path != first.path
    row = [s.image_path.name for s in found].index("000002.jpg")
    assert np.array_equal(changed.exact[row], resize_rgb(cv2.imread(str(data / "images" / "000002.jpg"))))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.path.name, changed.path.name])
    # A disk cache reaches spawned workers as its path (pickled), not as its pixels.
    import pickle

    blob = pickle.dumps(changed)
    assert len(blob) < 2000 and np.array_equal(pickle.loads(blob).large, changed.large)


def test_unwritable_cache_dir_is_one_line(kitti_dir: Path, tmp_path: Path, capsys):
    data = tiny_dataset(kitti_dir, tmp_path / "data", ["000001.jpg", "000002.jpg"])
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    found, _ = load_dataset(data)
    with pytest.raises(FastYoloError, match="cannot write the frame cache"):
        build_cache(found, mode="disk", cache_dir=blocker)
    code = cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--backbone", "resnet18", "--epochs", "1",
                "--val-split", "0", "--workers", "0", "--device", "cpu", "--cache", "disk", "--cache-dir", str(blocker)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write the frame cache" in err[0], err
    assert blocker.read_text().startswith("a file")


def test_precision_settings():
    cpu = torch.device("cpu")
    off = pick_precision("off", None, cpu)
    assert off.dtype is None and off.channels_last and off.name == "fp32, channels_last"
    assert pick_precision("off", False, cpu).name == "fp32"
    bf16 = pick_precision("bf16", None, cpu)
    assert bf16.dtype == torch.bfloat16 and bf16.channels_last
    assert not pick_precision("bf16", False, cpu).channels_last
    assert pick_precision("auto", None, cpu).dtype == (torch.bfloat16 if cpu_has_amx() else None)
    with pytest.raises(FastYoloError, match="needs a CUDA device"):
        pick_precision("fp16", None, cpu)
    with pytest.raises(FastYoloError, match="unknown --amp"):
        pick_precision("fp8", None, cpu)


@pytest.mark.parametrize("variable, cap, amx", [
    (None, None, True), ("ONEDNN_MAX_CPU_ISA", "ALL", True), ("ONEDNN_MAX_CPU_ISA", "avx512_core_amx", True),
    ("ONEDNN_MAX_CPU_ISA", "AVX10_1_512_AMX_FP16", True), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", False),
    ("ONEDNN_MAX_CPU_ISA", "avx2", False), ("DNNL_MAX_CPU_ISA", "AVX512_CORE", False),
])
def test_auto_precision_follows_the_onednn_isa_cap(monkeypatch, variable, cap, amx):
    """An AMX CPU whose oneDNN is capped below AMX (how a CPU without it is imitated) trains fp32 under auto."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    if variable:
        monkeypatch.setenv(variable, cap)
    assert cpu_has_amx() is amx
    assert pick_precision("auto", None, torch.device("cpu")).dtype == (torch.bfloat16 if amx else None)


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_BF16"])
def test_cpu_has_amx_agrees_with_the_isa_onednn_reports(cap):
    """oneDNN's own ISA line (ONEDNN_VERBOSE) in a fresh process names AMX exactly when cpu_has_amx() says so."""
    code = ("import torch\n"
            "from fastyolo.train.engine import cpu_has_amx\n"
            "torch.nn.functional.conv2d(torch.ones(1, 8, 8, 8).bfloat16(), torch.ones(8, 8, 3, 3).bfloat16())\n"
            "print('amx', cpu_has_amx())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env["ONEDNN_VERBOSE"] = "1"
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    isa = [line for line in out.stdout.splitlines() if line.startswith("onednn_verbose") and ",isa:" in line]
    if not isa:
        pytest.skip("this torch's oneDNN prints no ISA line")
    assert f"amx {'AMX' in isa[0]}" in out.stdout.splitlines(), (isa[0], out.stdout[-300:])


def test_bf16_autocast_outputs_fp32_close_to_fp32(samples):
    """Under bf16 autocast the network still returns fp32 probabilities (the loss stays fp32), near fp32's."""
    from fastyolo.train.model import YoloNet

    torch.manual_seed(0)
    model = YoloNet("resnet18").eval()
    images = to_network_input(torch.from_numpy(np.stack([resize_rgb(s.load_image()) for s in samples[:2]])))
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images)
    assert mixed.dtype == torch.float32
    assert (mixed - reference).abs().max() < 0.05


def test_training_reads_in_process_once_an_inference_runtime_is_loaded(samples, cache, monkeypatch):
    """Worker processes crash a process that ran OpenVINO (engine.safe_workers): there the loaders read in-process,
    and the run says so once."""
    import sys

    from fastyolo.train.engine import INFERENCE_RUNTIMES, safe_workers

    for name in INFERENCE_RUNTIMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    said: list[str] = []
    assert safe_workers(2, said.append) == 2 and not said
    dataset = YoloDataset(samples, cache=cache)
    assert _loader(dataset, 4, 2, torch.device("cpu")).num_workers == 2
    monkeypatch.setitem(sys.modules, "openvino", object())
    assert safe_workers(2, said.append) == 0 and len(said) == 1 and "openvino loaded in this process" in said[0]
    assert safe_workers(0, said.append) == 0 and len(said) == 1  # nothing to say without workers
    assert _loader(dataset, 4, 2, torch.device("cpu")).num_workers == 0
