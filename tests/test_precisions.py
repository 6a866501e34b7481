"""The table of precisions (fastyolo.precisions) is consistent and is what every reader uses."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from fastyolo import cfg, precisions
from fastyolo.cli import build_parser, main


def _choices(command: str, option: str = "--precision") -> tuple:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_table_is_consistent():
    assert len(precisions.NAMES) == len(set(precisions.NAMES)) == len(precisions.TABLE)
    assert set(precisions.RUNTIMES) == {*cfg.CPU_BACKENDS, "tensorrt", "torch"}
    for p in precisions.TABLE:
        assert p.runtimes and set(p.runtimes) <= set(precisions.RUNTIMES), p.name
        assert p.file_precision in precisions.NAMES and precisions.get(p.file_precision).converter, p.name
        assert 0.9 <= p.target <= 1.0, p.name
        assert (p.openvino_hint is not None) == ("openvino" in p.runtimes), p.name
        if p.converter is None:
            with pytest.raises(ValueError, match="no file of its own"):
                p.convert()
            continue
        if p.name == "fp32":  # the fp32 converter is the torch export
            pytest.importorskip("torch")
        assert callable(p.convert()), p.converter
    assert precisions.targets() == {"fp32": 0.99, "bf16": 0.98, "fp16": 0.98, "int8": 0.95}  # the targets
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        precisions.get("fp8")


def test_every_reader_takes_its_list_from_the_table():
    from fastyolo import agreement, compare
    from fastyolo.backends.openvino import _HINTS
    from fastyolo.gpu.runtime import ENGINE_PRECISIONS
    from fastyolo.gpu.torch_engine import TORCH_PRECISIONS

    cpu = precisions.for_runtime(*cfg.CPU_BACKENDS)
    assert cfg.PRECISIONS == cpu == ("fp32", "bf16", "int8")
    assert _HINTS == {"fp32": "f32", "bf16": "bf16", "int8": "f32"} == precisions.openvino_hints()
    assert ENGINE_PRECISIONS == precisions.for_runtime("tensorrt") == ("fp32", "fp16", "int8")
    assert set(TORCH_PRECISIONS) == {"fp32", "fp16", "bf16"}
    assert precisions.targets() == agreement.TARGETS
    assert agreement.BASELINE not in agreement.CHECKED
    assert set(agreement.CHECKED) | {agreement.BASELINE} == set(compare.DEFAULT_COMBOS) == set(precisions.cpu_combos())
    assert compare.BASELINE[:2] == compare.DEFAULT_COMBOS[0] == precisions.COMPARE_BASELINE
    # The command lines offer exactly the table's names.
    assert _choices("export") == precisions.exportable() == ("fp32", "fp16", "int8")
    for command in ("bench", "detect", "eval"):
        assert _choices(command) == cpu, command


def test_runtimes_refuse_what_the_table_does_not_give_them(untrained_r18: Path, capsys):
    from fastyolo import Detector

    with pytest.raises(ValueError, match="bf16 runs on OpenVINO only"):
        Detector(untrained_r18, backend="onnxruntime", precision="bf16")
    # --combos is checked against the table before any model is quantised or timed: one line, exit 2.
    assert main(["bench", "--model", str(untrained_r18), "--compare", "--combos", "onnxruntime:bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--combos item 'onnxruntime:bf16'" in err and "openvino:bf16" in err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_runs_the_hint_of_the_table(untrained_r18: Path, clip_path: Path, precision: str):
    from fastyolo import Detector
    from fastyolo.backends.openvino import cpu_has_bf16
    from fastyolo.fileio import VideoReader

    det = Detector(untrained_r18, backend="openvino", precision=precision, threads=1)
    session = det.pipeline.session
    ran = precision if precision != "bf16" or cpu_has_bf16() else "fp32"  # no bf16 instructions: fp32, and it says so
    assert session.config["INFERENCE_PRECISION_HINT"] == precisions.get(ran).openvino_hint
    assert det.info["precision"] == ran
    with VideoReader(clip_path) as reader:
        frame = reader.read()
    assert np.isfinite(det.raw_outputs([frame])).all()
