"""fp32 ONNX -> fp16 ONNX for TensorRT's strongly typed builds (`fastyolo export --precision fp16`).

TensorRT 11 has no FP16 builder flag: the precision is whatever the ONNX says. Weights and
activations become half, except the head's tail after its last Gemm (reshape, slices, softmax,
sigmoid, concat), so the class probabilities and box values are computed and returned in fp32,
and the I/O stays fp32 (the same buffers, preprocessing and kernels as every other model).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastyolo.errors import MissingDependencyError, ModelError
from fastyolo.fileio import atomic_path
from fastyolo.layout import INPUT_NAME, OUTPUT_NAME

# Ops after which nothing is kept in fp32: the head is fp32 from the last of these to the output.
_HEAVY_OPS = {"Gemm", "MatMul", "Conv"}
# Worst absolute difference of the final values (probabilities, sigmoid box values in [0, 1]).
FP16_TOLERANCE = 2e-2


def tail_nodes(graph) -> list[str]:
    """Names of the nodes between the last heavy op and the graph output (walked back from the output)."""
    producer = {out: node for node in graph.node for out in node.output}
    keep: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or node.op_type in _HEAVY_OPS:
            continue
        seen.add(node.name)
        keep.append(node.name)
        stack.extend(node.input)
    return keep


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _drop_cast_round_trips(graph, fp32_tensors: set[str]) -> int:
    """Remove the converter's Cast(fp16) -> Cast(fp32) pairs after kept-fp32 nodes, so the tail stays fp32
    from the last Gemm to the output instead of being rounded to half between every node. Returns pairs removed."""
    from onnx import TensorProto

    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    pairs = []
    for node in graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if (_cast_to(node) == TensorProto.FLOAT and first is not None and _cast_to(first) == TensorProto.FLOAT16
                and first.input[0] in fp32_tensors):
            pairs.append((node, node.output[0], first.input[0]))
    for cast, dropped, source in pairs:
        graph.node.remove(cast)
        if dropped in outputs:  # the graph output keeps its name: the fp32 source takes it
            for node in graph.node:
                node.input[:] = [dropped if i == source else i for i in node.input]
                node.output[:] = [dropped if o == source else o for o in node.output]
        else:
            for node in graph.node:
                node.input[:] = [source if i == dropped else i for i in node.input]
    # Drop what no longer feeds anything (the orphaned casts), until nothing changes.
    while True:
        used = {i for node in graph.node for i in node.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return len(pairs)
        for node in dead:
            graph.node.remove(node)


def _topological_sort(graph) -> None:
    """The converter appends its casts at the end; TensorRT's parser and onnx.checker need producers first."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ModelError("fp16 conversion produced a graph with a cycle or a missing input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if not any(n is r for r in ready)]
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, frames: list[np.ndarray] | None = None,
                 verbose: bool = True) -> float:
    """Write the fp16 version of the fp32 fastyolo ONNX `src` to `dst`; returns the max abs output difference.

    The difference is measured on onnxruntime (CPU) against `src` on real frames (`frames`, or six
    frames of the bundled highway clip) and must stay under FP16_TOLERANCE.
    """
    import onnx

    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError:
        raise MissingDependencyError("fp16 conversion needs onnxruntime.transformers: pip install onnxruntime") from None
    from fastyolo.model_file import read_onnx

    src, dst = Path(src), Path(dst)
    source = read_onnx(src)
    if source.precision != "fp32":
        raise ModelError(f"{src} is {source.precision}; convert the fp32 export to fp16")
    model = onnx.load_model(str(src))
    tail = tail_nodes(model.graph)
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST), node_block_list=tail,
    )
    _drop_cast_round_trips(half.graph, fp32_tensors={o for n in half.graph.node if n.name in tail for o in n.output})
    _topological_sort(half.graph)
    del half.graph.value_info[:]  # the converter's type annotations no longer match after the rewiring
    metadata = {p.key: p.value for p in half.metadata_props}
    metadata["fastyolo.precision"] = "fp16"
    del half.metadata_props[:]
    for key, value in metadata.items():
        half.metadata_props.add(key=key, value=value)

    with atomic_path(dst) as tmp:  # replaces dst only once every check below passed
        onnx.checker.check_model(half)
        onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True)  # every type consistent
        onnx.save_model(half, str(tmp))
        read_onnx(tmp)  # still our layout and I/O for every runtime
        diff = compare_outputs(src, tmp, frames if frames is not None else sample_frames())
        if not diff < FP16_TOLERANCE:
            raise ModelError(f"fp16 outputs differ from fp32 by {diff:.3g} (limit {FP16_TOLERANCE}): keep the fp32 model")
    if verbose:
        print(f"fp16: {len(tail)} head nodes kept in fp32 ({', '.join(tail)}); "
              f"max abs diff vs fp32 on onnxruntime, real frames: {diff:.2e}")
    return diff


def sample_frames(count: int = 6) -> list[np.ndarray]:
    """Real frames spread over the bundled highway clip."""
    from fastyolo import fileio

    return fileio.sample_frames(fileio.sample_video(), count)


def compare_outputs(reference: str | os.PathLike, candidate: str | os.PathLike, frames: list[np.ndarray]) -> float:
    """Max abs difference of two ONNX models' outputs on onnxruntime CPU for the same preprocessed frames."""
    import onnxruntime as ort

    from fastyolo.model_file import read_onnx
    from fastyolo.preprocess import preprocess_for

    if not frames:
        raise ValueError("no frames to compare the models on")
    outputs = []
    for path in (reference, candidate):
        images = preprocess_for(read_onnx(path).input_format, frames)  # each model's own input
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: images})[0].astype(np.float64))
    return float(np.abs(outputs[0] - outputs[1]).max())
