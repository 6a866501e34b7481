"""fastyolo bench: JSON figures, threads reported, pipelined == sequential detections, --compare and --check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastyolo import Detector
from fastyolo.bench import STAGES, run_bench
from fastyolo.cli import main

FRAMES = 7  # with batch 3 the last batch is short, so padding is exercised


def _same(a, b) -> None:
    assert len(a) == len(b) == FRAMES
    for n, (x, y) in enumerate(zip(a, b, strict=True)):
        np.testing.assert_array_equal(x.boxes, y.boxes, err_msg=f"frame {n}")
        np.testing.assert_array_equal(x.scores, y.scores, err_msg=f"frame {n}")
        np.testing.assert_array_equal(x.class_ids, y.class_ids, err_msg=f"frame {n}")


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_pipelined_detections_equal_sequential(untrained_r18: Path, clip_path: Path, backend: str):
    detector = Detector(untrained_r18, backend=backend, threads=2, conf=0.1)
    sequential = run_bench(detector, clip_path, frames=FRAMES, warmup=2, progress=False, keep=True)
    assert sequential.mode == "latency" and sum(len(d) for d in sequential.outputs) > 0
    for batch in (1, 3):
        piped = run_bench(detector, clip_path, frames=FRAMES, warmup=2, progress=False, keep=True,
                          mode="throughput", batch=batch)
        assert (piped.mode, piped.batch, piped.frames) == ("throughput", batch, FRAMES)
        assert piped.in_flight >= 1 and piped.detections == sequential.detections
        _same(piped.outputs, sequential.outputs)
        assert all((piped.times_ms[s] > 0).all() for s in STAGES)  # every frame's every stage was timed
    # Nothing of a finished run stays alive (OpenVINO's async queue callback once kept every runner and its buffers).
    import gc

    from fastyolo.bench import _Runner

    gc.collect()
    assert not any(type(o) is _Runner for o in gc.get_objects())
    # And the library call the user makes gives the same boxes too.
    from fastyolo.bench import VideoReader

    reader = VideoReader(clip_path)
    frames = [reader.read() for _ in range(FRAMES)]
    reader.close()
    _same(detector.detect_batch(frames[:3]) + detector.detect_batch(frames[3:6]) + detector.detect_batch(frames[6:]),
          sequential.outputs)


def test_bench_cli_json_keys_modes_and_threads(untrained_r18: Path, clip_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(clip_path), "--model", str(untrained_r18), "--frames", "5", "--warmup", "1",
                 "--threads", "1", "--mode", "both", "--batch", "2", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "mode       latency: batch 1, one frame in flight" in text and "mode       throughput: batch 2" in text
    data = json.loads(out.read_text())
    for key in ("fps", "frames", "backend", "precision", "threads", "model", "untrained", "stages", "mode", "batch"):
        assert key in data, key
    assert data["frames"] == 5 and data["untrained"] is True and data["model"] == str(untrained_r18)
    assert set(data["stages"]) == set(STAGES) and all(set(v) == {"p50", "p90", "p99"} for v in data["stages"].values())
    assert [r["mode"] for r in data["runs"]] == ["latency", "throughput"] and data["runs"][1]["batch"] == 2
    assert data["mode"] == "latency" and data["batch"] == 1 and 0 <= data["overhead_share"] < 1
    # --threads reaches every library and is read back from each.
    assert data["threads"] == 1
    assert data["thread_settings"] == {"opencv": 1, "numba": 1, "openvino": 1}
    assert data["stages"]["total"]["p50"] >= data["stages"]["infer"]["p50"] > 0


def test_bench_cli_int8_and_bf16_report_what_ran(untrained_r18: Path, clip_path: Path, tmp_path: Path, monkeypatch,
                                                 kitti_dir: Path):
    from fastyolo.backends.openvino import cpu_has_bf16

    monkeypatch.setenv("FASTYOLO_CACHE", str(tmp_path))
    for precision, expected in (("int8", "int8"), ("bf16", "bf16" if cpu_has_bf16() else "fp32")):
        out = tmp_path / f"{precision}.json"
        assert main(["bench", str(clip_path), "--model", str(untrained_r18), "--precision", precision, "--frames", "2",
                     "--warmup", "1", "--threads", "2", "--calib", str(kitti_dir / "images"), "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert data["precision"] == expected and data["requested_precision"] == precision
    assert json.loads((tmp_path / "int8.json").read_text())["model"].endswith(".int8.onnx")


def test_bench_cli_bad_options_fail_in_one_line(untrained_r18: Path, clip_path: Path, capsys):
    assert main(["bench", str(clip_path), "--model", str(untrained_r18), "--backend", "onnxruntime",
                 "--precision", "bf16", "--frames", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bf16 runs on OpenVINO only" in err
    assert main(["bench", "--model", str(untrained_r18), "--batch", "0"]) == 2
    assert "--batch must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="latency mode is batch 1"):
        run_bench(Detector(untrained_r18, threads=1), clip_path, frames=1, batch=2)


def test_compare_interleaves_rows_and_reports_ratios(untrained_r18: Path, clip_path: Path, kitti_dir: Path):
    from fastyolo.compare import compare_json, compare_table, run_compare
    from fastyolo.quantize import quantize_int8

    int8 = quantize_int8(untrained_r18, untrained_r18.with_name("cmp.int8.onnx"), kitti_dir / "images", frames=2,
                         progress=False)
    combos = (("openvino", "int8"), ("onnxruntime", "fp32"))
    results = run_compare(untrained_r18, int8, clip_path, combos=combos, modes=("latency", "throughput"), batch=2,
                          frames=3, rounds=2, warmup=1, threads=2, progress=False)
    rows = [(r.info["backend"], r.info["precision"], r.mode) for r in results]
    assert rows == [("openvino", "int8", "latency"), ("openvino", "int8", "throughput"),
                    ("onnxruntime", "fp32", "latency"), ("onnxruntime", "fp32", "throughput")]
    assert all(r.frames == 6 and len(r.times_ms["total"]) == 6 for r in results)  # two rounds pooled
    data = compare_json(results, 2)
    ref = data["rows"][2]
    assert data["baseline"] == data["reference"] == "onnxruntime/fp32/latency" and ref["fps_ratio"] == 1.0
    assert ref["stage_ratio_p50"]["infer"] == 1.0
    for row, r in zip(data["rows"], results, strict=True):
        assert row["fps_ratio"] == pytest.approx(r.fps / results[2].fps, abs=1e-3)
    table = compare_table(results, 2)
    assert table.count("\n") == len(results) + 2 and "onnxruntime fp32      latency" in table


def test_check_scores_agreement_with_fp32(untrained_r18: Path, kitti_images, kitti_dir: Path, tmp_path: Path):
    import cv2

    from fastyolo.agreement import check_precisions, check_table
    from fastyolo.backends.openvino import cpu_has_bf16
    from fastyolo.quantize import quantize_int8

    int8 = quantize_int8(untrained_r18, tmp_path / "m.int8.onnx", kitti_dir / "images", frames=2, progress=False)
    frames = [cv2.imread(str(p)) for p in kitti_images[:3]]
    rows = check_precisions(untrained_r18, int8, frames, threads=2, progress=False,
                            combos=(("onnxruntime", "fp32"), ("openvino", "bf16"), ("openvino", "int8")))
    by = {(r["backend"], r["precision"]): r for r in rows}
    ort = by["onnxruntime", "fp32"]
    # same model, other runtime
    assert ort["baseline_boxes"] == ort["reference_boxes"] > 0 and ort["map50"] == 1.0 and ort["passed"]
    assert by["openvino", "bf16"]["ran"] == ("bf16" if cpu_has_bf16() else "fp32")
    low = by["openvino", "int8"]
    assert low["ran"] == "int8" and 0.0 <= low["map50"] <= 1.0 and low["grid_max_abs_diff"] > 0
    assert "mAP@0.5" in check_table(rows, 3, "kitti")
