"""int8 post-training quantisation of an exported fp32 ONNX: explicit Q/DQ, calibrated on real frames.

onnxruntime's static quantiser writes a QDQ graph (QuantizeLinear/DequantizeLinear pairs around
Conv/Gemm/Add/MaxPool) with per-channel int8 weights and uint8 activations whose ranges come from
running the fp32 model on real frames, preprocessed exactly as at inference. OpenVINO and
onnxruntime both read that graph and run the quantised ops in int8. Needs no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fastyolo.errors import MissingDependencyError, ModelError
from fastyolo.fileio import atomic_path, sample_frames
from fastyolo.input_format import PREFIX as INPUT_PREFIX
from fastyolo.layout import INPUT_NAME
from fastyolo.model_file import read_onnx
from fastyolo.preprocess import preprocess_for

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Parts that can stay fp32: the last Gemm (writes the output grid, so its rounding lands directly
# on box coordinates) and the first conv (reads the raw normalised pixels).
KEEP_CHOICES = ("head", "first_conv")
DEFAULT_METHOD = "minmax"
DEFAULT_KEEP: tuple[str, ...] = ("head",)
DEFAULT_FRAMES = 64
# The tail after the last Gemm (Reshape/Slice/Softmax/Sigmoid/Concat) stays fp32: quantising the
# output would round every box coordinate to 8 bits.
# Entropy search: 2048-bin histograms, thresholds searched down to this many bins. Measured on a
# partly trained ResNet-18 (mAP@0.5 against fp32 on kitti_tiny): 128 (TensorRT's value for symmetric
# int8) 0.79, 256 0.96, 512 0.71; minmax 0.995, which is why minmax is the default.
QUANTIZED_BINS = 256
# 7-bit weights (onnxruntime's reduce_range): on CPUs without VNNI (AVX2 only, e.g. AMD Zen 3) the u8 x s8
# kernels add pairs of products in 16 bits, which saturate with full-range 8-bit weights (255 x 127 x 2 >
# 32767); 7-bit weights cannot. Off by default, measured on a Zen 3 (bench/RESULTS.md, "int8 without VNNI"):
# the packaged model's int8 agreement with fp32 there is mAP@0.5 0.994 with 8-bit weights and 0.998 with 7-bit,
# but mAP@.5:.95 0.68 -> 0.64, and on VNNI/AMX CPUs (no saturation) 7 bits only lose precision.
DEFAULT_REDUCE_RANGE = False
OPS_TO_QUANTIZE = ["Conv", "Gemm", "MatMul", "Add", "MaxPool", "Relu"]


def calibration_frames(source: str | os.PathLike, limit: int = DEFAULT_FRAMES) -> list[np.ndarray]:
    """Up to `limit` real BGR frames from a folder of images (searched recursively) or a video file."""
    return sample_frames(source, limit)


def _reader(frames: list[np.ndarray], progress: bool, input_format: str):
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        """Feeds the frames one at a time, preprocessed as at inference for the model's input format."""

        def __init__(self):
            self.index = 0
            self.bar = tqdm(total=len(frames), desc="calibrate", unit="frame", disable=not progress, leave=False)

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.index >= len(frames):
                self.bar.close()
                return None
            batch = preprocess_for(input_format, [frames[self.index]])
            self.index += 1
            self.bar.update()
            return {INPUT_NAME: batch}

        def rewind(self) -> None:
            self.index = 0

    return FrameReader()


def nodes_kept_fp32(model, keep: Sequence[str]) -> list[str]:
    """Names of the nodes `keep` ("head", "first_conv") refers to in `model` (an onnx.ModelProto)."""
    unknown = set(keep) - set(KEEP_CHOICES)
    if unknown:
        raise ValueError(f"unknown part(s) {sorted(unknown)} to keep in fp32: choose from {', '.join(KEEP_CHOICES)}")
    nodes = list(model.graph.node)
    names = []
    if "head" in keep:
        # The FC head's last Gemm; a convolutional head's last Conv (the one that writes the grid).
        heads = [n for n in nodes if n.op_type in ("Gemm", "MatMul")] or [n for n in nodes if n.op_type == "Conv"]
        if not heads:
            raise ModelError("no Gemm/MatMul/Conv in the model to keep as the fp32 head")
        names.append(heads[-1].name)  # the graph is topologically sorted: the last one writes the grid
    if "first_conv" in keep:
        convs = [n for n in nodes if n.op_type == "Conv"]  # topological order: the first one reads the pixels
        if not convs:
            raise ModelError(f"no Conv in the model after '{INPUT_NAME}': cannot keep the first conv in fp32")
        names.append(convs[0].name)
    # The input rewrite's cast/transpose/mean (fastyolo.input_format) stays fp32: quantising it would
    # only add a rounding before the first conv's own (quantised) input.
    names += [n.name for n in nodes if n.name.startswith(INPUT_PREFIX)]
    return names


def _calibrate(prepared: Path, calibration, frames: list[np.ndarray], progress: bool, input_format: str,
               tmp: Path) -> Path:
    """Activation ranges of `prepared` over the calibration frames, saved as quantize_static's cache file.

    Computed here rather than inside quantize_static, which cannot pass the histogram sizes: its
    entropy search uses 128 bins for 128 quantised bins, so the only threshold it can pick is the
    full range (identical to minmax, measured). 2048 bins searched down to 128, as TensorRT's
    entropy calibrator does, make the search real.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    ranges = tmp / "ranges.json"
    calibrator = create_calibrator(
        prepared, OPS_TO_QUANTIZE, augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=calibration,
        extra_options={"num_bins": 2048, "num_quantized_bins": QUANTIZED_BINS, "percentile": 99.999, "symmetric": False},
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their settings
        calibrator.collect_data(_reader(frames, progress, input_format))
        save_tensors_data(calibrator.compute_data(), ranges)
    del calibrator
    return ranges


def _save_with_metadata(quantized: Path, out_onnx: Path, metadata: dict[str, str]) -> None:
    """`quantized` with its metadata replaced by `metadata`, written to `out_onnx` atomically and read back."""
    import onnx

    proto = onnx.load_model(str(quantized))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    # Temp name + rename, so a failure never leaves a half-written model behind.
    with atomic_path(out_onnx) as partial:
        onnx.save_model(proto, str(partial))
        read_onnx(partial)


def quantize_int8(
    fp32_onnx: str | os.PathLike,
    out_onnx: str | os.PathLike,
    calib: str | os.PathLike,
    *,
    method: str = DEFAULT_METHOD,
    frames: int = DEFAULT_FRAMES,
    keep_fp32: Sequence[str] = DEFAULT_KEEP,
    progress: bool = True,
    reduce_range: bool = DEFAULT_REDUCE_RANGE,
) -> Path:
    """Write an int8 Q/DQ copy of `fp32_onnx` to `out_onnx`, calibrated on frames from `calib`.

    calib: a folder of real images or a video file; `frames` of them, spread evenly, are used.
    method: how activation ranges are chosen from the calibration run (minmax, entropy, percentile).
    keep_fp32: parts left unquantised ("head": the last Gemm; "first_conv").
    reduce_range: 7-bit weights, which no CPU's 16-bit accumulation can saturate (see DEFAULT_REDUCE_RANGE).
    The fastyolo.* metadata is kept, with fastyolo.precision set to "int8".
    """
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data  # noqa: F401 (checked here)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise MissingDependencyError(f"int8 quantisation needs onnxruntime's quantisation tools: {exc}") from None
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    source = read_onnx(fp32_onnx)  # checks it is a fastyolo model of this layout
    if source.precision != "fp32":
        raise ModelError(f"{source.path} is already {source.precision}: quantise the fp32 export")
    out_onnx = Path(out_onnx)
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    calib_frames = calibration_frames(calib, frames)

    with tempfile.TemporaryDirectory(prefix="fastyolo-quant-") as tmp:
        # Shape inference + ORT's basic graph optimisations (BatchNorm folding, constant folding)
        # first, as onnxruntime recommends, so Q/DQ land on the ops that will actually run.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source.path), str(prepared), skip_symbolic_shape=False)
        keep_names = nodes_kept_fp32(onnx.load_model(str(prepared)), keep_fp32)
        quantized = Path(tmp) / "int8.onnx"
        calibration = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method]
        ranges = _calibrate(prepared, calibration, calib_frames, progress, source.input_format, Path(tmp))
        quantize_static(
            str(prepared),
            str(quantized),
            None,
            calibration_cache_path=ranges,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=OPS_TO_QUANTIZE,
            per_channel=True,
            activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the VNNI/AMX fast path
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_names,
            calibrate_method=calibration,
            reduce_range=reduce_range,
            extra_options={"WeightSymmetric": True},
        )
        _save_with_metadata(quantized, out_onnx, {
            **source.metadata,
            "fastyolo.precision": "int8",
            "fastyolo.int8.calibration": f"{method}, {len(calib_frames)} frames of {Path(calib).name}",
            "fastyolo.int8.fp32_parts": ",".join(keep_fp32) or "none",
            "fastyolo.int8.weight_bits": "7" if reduce_range else "8",
        })
    return out_onnx


def qdq_emulation(int8_onnx: str | os.PathLike, threads: int | None = None):
    """An onnxruntime session that runs a Q/DQ model as its graph reads, with no int8 kernels.

    With graph optimisations off, onnxruntime fuses no QuantizeLinear -> op -> DequantizeLinear into an
    integer kernel: each DequantizeLinear's output feeds the float op. That is the quantisation's own
    error, free of what a CPU's integer kernels add (the 16-bit saturation without VNNI), so a backend's
    int8 error can be judged against it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(int8_onnx), options, providers=["CPUExecutionProvider"])


def int8_model_for(model: str | os.PathLike, calib: str | os.PathLike | None = None, *,
                   method: str = DEFAULT_METHOD, keep_fp32: Sequence[str] = DEFAULT_KEEP,
                   frames: int = DEFAULT_FRAMES) -> Path:
    """An int8 model for `model`: itself if it is int8, its sibling `<stem>.int8.onnx` if that exists,
    else a quantised copy in the fastyolo cache (made once, calibrated on `calib`, by default the
    bundled real highway clip)."""
    from fastyolo.fileio import file_identity, sample_video
    from fastyolo.reference_model import cache_dir

    path = Path(model)
    if read_onnx(path).precision == "int8":
        return path
    sibling = path.with_name(f"{path.stem}.int8.onnx")
    if sibling.is_file():
        return sibling
    calib = Path(calib) if calib is not None else sample_video()
    # The cache key names the source model's and the calibration data's identity (path, size, mtime:
    # not just their names) and every choice that changes the result.
    key = f"{file_identity(path)}|{file_identity(calib)}|{method}|{'+'.join(keep_fp32) or 'all'}|{frames}"
    tag = f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    cached = cache_dir() / f"{tag}.int8.onnx"
    if not cached.is_file():
        print(f"quantising {path.name} to int8 ({method}, {frames} frames of {calib.name}) -> {cached} (once) ...",
              flush=True)
        quantize_int8(path, cached, calib, method=method, frames=frames, keep_fp32=keep_fp32)
    return cached
