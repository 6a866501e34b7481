"""What a model's input holds, and the rewrite that moves normalisation from the host into the graph.

Two formats, named by the `fastyolo.input` metadata key (a model without the key is NORMALIZED,
as every model exported before the key existed):

- NORMALIZED ("nchw_float_normalized"): (N, 3, S, S) float32 RGB, (pixel / 255 - mean) / std. The
  host resizes, swaps BGR -> RGB, transposes and normalises (fastyolo.preprocess).
- UINT8 ("nhwc_uint8_bgr"): (N, S, S, 3) uint8 BGR, exactly what cv2.resize of a decoded frame
  gives. The host only resizes; the graph casts, transposes, subtracts the mean and runs the first
  convolution with 1/(255 std) and the BGR -> RGB swap folded into its weights.

Why the mean is an explicit Sub and not folded into the conv's bias: the first conv zero-pads its
input, and zero in normalised space is the mean in pixel space. Folding the mean into the bias
would treat the padded border as pixel value 0 (wrong by up to |mean / std| * the border taps);
subtracting it first keeps the zero padding where it was, so the rewrite is exact up to fp32
rounding. Scaling and permuting input channels commute with zero padding, so those fold exactly.
When the input does not feed exactly one plain Conv (e.g. EfficientNet-Lite's own input affine),
the rewrite falls back to an explicit Mul + Add with the host's own constants.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastyolo.layout import INPUT_NAME, INPUT_SIZE, MEAN, STD

KEY = "fastyolo.input"
NORMALIZED = "nchw_float_normalized"
UINT8 = "nhwc_uint8_bgr"
FORMATS = (NORMALIZED, UINT8)
FOLD_KEY = "fastyolo.input_fold"  # "conv": mean Sub + scale folded into the first conv; "affine": Mul + Add
PREFIX = "fastyolo_input_"  # names of the nodes the rewrite adds (quantize.py leaves them in fp32)


def format_of(metadata: dict[str, str]) -> str:
    """The model's input format; models exported before the key existed are NORMALIZED."""
    return metadata.get(KEY, NORMALIZED)


def input_shape(fmt: str, batch: int) -> list[int]:
    """The input tensor's shape for `batch` frames."""
    return [batch, 3, INPUT_SIZE, INPUT_SIZE] if fmt == NORMALIZED else [batch, INPUT_SIZE, INPUT_SIZE, 3]


def _bgr_constants() -> tuple[np.ndarray, np.ndarray]:
    """Per channel in BGR order: the mean in pixel units and the host's scale 1 / (255 std)."""
    mean = (255.0 * np.asarray(MEAN, np.float64))[::-1]
    scale = (1.0 / (255.0 * np.asarray(STD, np.float64)))[::-1]
    return mean.astype(np.float32), scale.astype(np.float32)


def _single_conv_consumer(graph, initializers: dict):
    """The Conv that is the input's only consumer, with its weight an initializer, ungrouped; else None."""
    consumers = [n for n in graph.node if INPUT_NAME in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "Conv" or consumers[0].input[0] != INPUT_NAME:
        return None
    conv = consumers[0]
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group != 1 or conv.input[1] not in initializers:
        return None
    return conv


def to_uint8_input(proto) -> str:
    """Rewrite an fp32 NORMALIZED model (an onnx.ModelProto, in place) to take UINT8 input; returns the fold used."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    source = next(i for i in graph.input if i.name == INPUT_NAME)
    batch = source.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else "batch")
    mean, scale = _bgr_constants()
    conv = _single_conv_consumer(graph, initializers)
    pixels = f"{PREFIX}float"
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], [f"{PREFIX}cast"], name=f"{PREFIX}cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{PREFIX}cast"], [pixels], name=f"{PREFIX}nchw", perm=[0, 3, 1, 2]),
    ]
    if conv is not None:
        # x_rgb_norm[c] = (x_bgr[2 - c] - mean_bgr[2 - c]) * scale_bgr[2 - c]: Sub here, the rest into W.
        weight = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float64)
        folded = weight[:, ::-1, :, :] * scale.astype(np.float64)[None, :, None, None]
        name = f"{PREFIX}conv_weight"
        graph.initializer.append(numpy_helper.from_array(folded.astype(np.float32), name))
        graph.initializer.append(numpy_helper.from_array(mean.reshape(1, 3, 1, 1), f"{PREFIX}mean"))
        nodes.append(helper.make_node("Sub", [pixels, f"{PREFIX}mean"], [f"{PREFIX}centred"], name=f"{PREFIX}sub"))
        old = conv.input[1]
        conv.input[0], conv.input[1] = f"{PREFIX}centred", name
        _drop_if_unused(graph, old)
        fold = "conv"
    else:
        # The host's numbers exactly: x * scale + shift per RGB channel, after swapping BGR -> RGB.
        rgb_scale = scale[::-1].reshape(1, 3, 1, 1)
        rgb_shift = (-np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)).reshape(1, 3, 1, 1)
        graph.initializer.extend([
            numpy_helper.from_array(np.array([2, 1, 0], np.int64), f"{PREFIX}order"),
            numpy_helper.from_array(rgb_scale.astype(np.float32), f"{PREFIX}scale"),
            numpy_helper.from_array(rgb_shift.astype(np.float32), f"{PREFIX}shift"),
        ])
        nodes += [
            helper.make_node("Gather", [pixels, f"{PREFIX}order"], [f"{PREFIX}rgb"], name=f"{PREFIX}rgb", axis=1),
            helper.make_node("Mul", [f"{PREFIX}rgb", f"{PREFIX}scale"], [f"{PREFIX}scaled"], name=f"{PREFIX}mul"),
            helper.make_node("Add", [f"{PREFIX}scaled", f"{PREFIX}shift"], [f"{PREFIX}normalized"],
                             name=f"{PREFIX}add"),
        ]
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == INPUT_NAME:
                    node.input[k] = f"{PREFIX}normalized"
        fold = "affine"
    for node in reversed(nodes):
        graph.node.insert(0, node)
    source.type.tensor_type.elem_type = TensorProto.UINT8
    del source.type.tensor_type.shape.dim[:]
    for d in (batch_dim, INPUT_SIZE, INPUT_SIZE, 3):
        dim = source.type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    return fold


def _drop_if_unused(graph, name: str) -> None:
    """Remove initializer `name` (the original first-conv weight) once no node reads it."""
    if any(name in node.input for node in graph.node):
        return
    for k, tensor in enumerate(graph.initializer):
        if tensor.name == name:
            del graph.initializer[k]
            return


def convert_to_uint8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write `src` (an fp32 NORMALIZED fastyolo ONNX) as a UINT8-input model to `dst`, atomically."""
    import onnx

    from fastyolo.errors import ModelError
    from fastyolo.fileio import atomic_path
    from fastyolo.model_file import read_onnx

    model = read_onnx(src)
    if model.input_format != NORMALIZED:
        raise ModelError(f"{model.path} already takes {model.input_format} input")
    if model.precision != "fp32":
        raise ModelError(f"{model.path} is {model.precision}: rewrite the fp32 model's input, then quantise/convert it")
    proto = onnx.load_model(str(model.path))
    fold = to_uint8_input(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    metadata.update({KEY: UINT8, FOLD_KEY: fold})
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    with atomic_path(dst) as partial:
        onnx.save_model(proto, str(partial))
        read_onnx(partial)
    return Path(dst)


def uint8_model_for(model: str | os.PathLike) -> Path:
    """`model` if it already takes uint8 input, else its uint8-input rewrite, made once into the fastyolo cache
    (keyed by the source file's identity: path, size, modification time)."""
    import hashlib

    from fastyolo.fileio import file_identity
    from fastyolo.model_file import read_onnx
    from fastyolo.reference_model import cache_dir

    path = Path(model)
    if read_onnx(path).input_format == UINT8:
        return path
    tag = hashlib.sha256(file_identity(path).encode()).hexdigest()[:16]
    cached = cache_dir() / f"{path.stem}-{tag}.uint8.onnx"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        convert_to_uint8(path, cached)
    return cached
