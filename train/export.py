"""Export a YoloNet to ONNX with its layout in the metadata, and check the file against torch."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from fastyolo.train.model import YoloNet

from fastyolo.input_format import NORMALIZED, UINT8, convert_to_uint8
from fastyolo.layout import INPUT_NAME, INPUT_SIZE, OUTPUT_NAME, describe

OPSET = 18
VERIFY_TOLERANCE = 1e-4


def export_onnx(
    model: YoloNet,
    path: str | os.PathLike,
    *,
    untrained: bool,
    verify: bool = True,
    extra_metadata: dict[str, str] | None = None,
    input_format: str = NORMALIZED,
) -> float | None:
    """Write `model` as an fp32 ONNX with a dynamic batch axis; returns the verified max abs diff.

    input_format: NORMALIZED takes the training input ((N, 3, S, S) normalised RGB floats); UINT8
    takes resized uint8 BGR pixels (N, S, S, 3) and normalises in the graph (fastyolo.input_format:
    the std and BGR -> RGB folded into the first conv), so the host only resizes. Training is
    unchanged either way; a UINT8 export is verified against torch on normalised random pixels.
    The file is written to a temp name and renamed, so a failed export leaves nothing half-done.
    """
    if input_format not in (NORMALIZED, UINT8):
        raise ValueError(f"unknown input format {input_format!r}: choose {NORMALIZED} or {UINT8}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=256)
    # torch's exporter logs about optional torchvision ops and deprecations that are not ours.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.optimize()
    proto = program.model_proto
    metadata = {
        **describe(),
        "fastyolo.backbone": model.backbone_name,
        "fastyolo.head": model.head_name,
        "fastyolo.untrained": "true" if untrained else "false",
        "fastyolo.precision": "fp32",
        **(extra_metadata or {}),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "fastyolo"

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    folded = Path(f"{tmp}.uint8")
    try:
        onnx.save_model(proto, tmp)
        diff = verify_onnx(model, tmp) if verify else None
        if input_format == UINT8:
            convert_to_uint8(tmp, folded)
            diff = verify_uint8_onnx(model, folded) if verify else None
            os.replace(folded, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        folded.unlink(missing_ok=True)
        raise
    return diff


def verify_uint8_onnx(model: YoloNet, path: str | os.PathLike, batch: int = 2, seed: int = 0) -> float:
    """A UINT8-input ONNX on onnxruntime against torch on the same random pixels, normalised as on the host."""
    import onnxruntime as ort

    from fastyolo.preprocess import preprocess

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(preprocess(list(pixels)))).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]
    diff = float(np.abs(got - expected).max())
    if diff >= VERIFY_TOLERANCE:
        raise RuntimeError(f"exported uint8-input ONNX differs from torch by {diff:.2e} (limit {VERIFY_TOLERANCE:.0e})")
    return diff


def verify_onnx(model: YoloNet, path: str | os.PathLike, batch: int = 2, seed: int = 0) -> float:
    """Run the ONNX on onnxruntime against torch on the same random input; raise if they differ."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    diff = float(np.abs(got - expected).max())
    if diff >= VERIFY_TOLERANCE:
        raise RuntimeError(f"exported ONNX differs from torch by {diff:.2e} (limit {VERIFY_TOLERANCE:.0e})")
    return diff
