"""numba.cuda decode + NMS (and input normalisation) for the GPU; same semantics as `reference.decode_nms_reference`.

One block of THREADS threads per image, one thread per candidate box, five barriers in all:

1. decode: thread t decodes box t (cell t // BOXES, slot t % BOXES) into shared memory;
2. rank by counting: rank = #candidates with a higher score + #equal-score candidates with a
   lower index, which is the reference's stable order, computed in parallel without a sort;
3. suppression bitmasks (the form of torchvision's CUDA `nms` and TensorRT's EfficientNMS): for
   each rank r and each 64-rank tile w, one 64-bit word whose bit q says "rank w*64+q comes
   after r, has r's class and IoU(r, it) > iou_threshold"; the (rank, tile) words are spread
   over the block's threads, so every IoU of the image is computed once, in parallel;
4. greedy walk: one thread walks the ranks in order over TILES words of "removed" bits, jumping
   straight to the next live rank (lowest set bit); a kept rank ORs its words into "removed".
   This is exactly the sequential greedy result (a rank is kept iff no earlier kept rank of its
   class overlaps it), with no barrier per kept box;
5. compaction: the block reserves `kept` rows of one shared output with an atomic add, so the
   host copies back a small header and only the kept rows, whatever the batch.

Every floating-point multiply goes through `_mul_rn`/`_dmul_rn` (libdevice's `__fmul_rn`/
`__dmul_rn`, PTX `mul.rn`): NVVM and ptxas may contract a plain `a * b` and the add after it
(e.g. `cx - 0.5 * bw`) into one FMA, one rounding instead of numpy's two, and the boxes would
differ from the reference in the last bit on hardware (seen on an H200: 91 of 4,818 images). The
simulator never fuses, so tests/test_cuda_kernels.py also reads the PTX for plain multiplies.
Under NUMBA_ENABLE_CUDASIM=1 (tests without a GPU) they are plain numpy-scalar multiplies.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def _restore_row_stack() -> None:
    """numba-cuda 0.30 registers an overload of `np.row_stack`, which numpy 2.5 removed: its target
    registry then fails with AttributeError on the first compile. `row_stack` was an alias of
    `vstack`; restoring the alias (only where it is missing) before numba.cuda compiles anything is
    the one workaround, and every GPU module imports this one first."""
    vars(np).setdefault("row_stack", np.vstack)  # through vars(): numpy >= 2.5's __getattr__ would raise


_restore_row_stack()

from numba import cuda, float32, float64, int32, uint8, uint64  # noqa: E402 - after the numpy shim

from fastyolo.layout import (  # noqa: E402
    BOX_OFFSET,
    BOX_VALUES,
    BOXES,
    CLASS_OFFSET,
    CLASSES,
    CONF_OFFSET,
    GRID,
    INPUT_SIZE,
    MAX_BOXES,
)
from fastyolo.preprocess import NORMALIZE_SCALE, NORMALIZE_SHIFT  # noqa: E402, F401 - one definition, re-exported

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)
# One block per image is the design (242 boxes need one block, and a frame is one image); numba
# warns about any grid under 128 blocks, which would be every frame.
warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU under-utilization")
THREADS = 32 * ((MAX_BOXES + 31) // 32)  # one thread per candidate box, whole warps
TILE = 64  # ranks per suppression word
TILES = (MAX_BOXES + TILE - 1) // TILE  # 4 words cover the 242 candidates
ROW_VALUES = 6  # a kept box on the way back: x1, y1, x2, y2, score, class id (exact as float32)
NORMALIZE_THREADS = 256
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)

if SIMULATOR:

    def _mul_rn(a, b):
        return a * b

    _dmul_rn = _mul_rn
else:
    from numba.cuda import libdevice

    _mul_rn = libdevice.fmul_rn
    _dmul_rn = libdevice.dmul_rn


@cuda.jit(device=True, inline=True)
def _iou(boxes, areas, i, j):
    """IoU of boxes i (the earlier, kept one: the reference's `area + areas`) and j."""
    iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
    ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
    if not (iw > 0.0 and ih > 0.0):
        return 0.0  # what 0 / union gives: no fp64 division (slow on GeForce) for disjoint boxes
    inter = _dmul_rn(iw, ih)
    union = areas[i] + areas[j] - inter
    return inter / union if union > 0.0 else 0.0


@cuda.jit(cache=True)
def decode_nms_kernel(grids, sizes, conf_threshold, iou_threshold, top_k, rows, header):
    """grids (N, S, S, CELL_SIZE) f32, sizes (N, 2) f64 -> rows (R, ROW_VALUES) f32 and header (1 + 2N) i32.

    Launch with N blocks of THREADS threads; header[0] must be 0. Image n's kept boxes are
    rows[header[1 + n] : header[1 + n] + header[1 + N + n]], best first.
    """
    boxes = cuda.shared.array((MAX_BOXES, 4), float64)
    areas = cuda.shared.array(MAX_BOXES, float64)
    scores = cuda.shared.array(MAX_BOXES, float32)
    classes = cuda.shared.array(MAX_BOXES, int32)
    candidate = cuda.shared.array(MAX_BOXES, uint8)
    order = cuda.shared.array(MAX_BOXES, int32)  # order[rank] = box index
    masks = cuda.shared.array((MAX_BOXES, TILES), uint64)  # masks[rank, tile]: ranks it suppresses
    removed = cuda.shared.array(TILES, uint64)  # the walk's state, by rank
    kept = cuda.shared.array(MAX_BOXES, int32)  # kept box indices, best first
    shared_count = cuda.shared.array(1, int32)
    offset = cuda.shared.array(1, int32)

    image = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n_images = grids.shape[0]
    width = sizes[image, 0]
    height = sizes[image, 1]

    # 1. decode box t (every multiply rounded on its own, as numpy does)
    if t < MAX_BOXES:
        cell = t // BOXES
        slot = t - cell * BOXES
        row = cell // GRID
        col = cell - row * GRID
        best_class = 0
        best = grids[image, row, col, CLASS_OFFSET]
        for c in range(1, CLASSES):
            p = grids[image, row, col, CLASS_OFFSET + c]
            if p > best:
                best = p
                best_class = c
        score = _mul_rn(grids[image, row, col, CONF_OFFSET + slot], best)  # float32, as the reference
        base = BOX_OFFSET + BOX_VALUES * slot
        cx = _dmul_rn((col + float64(grids[image, row, col, base])) / GRID, width)
        cy = _dmul_rn((row + float64(grids[image, row, col, base + 1])) / GRID, height)
        half_w = _dmul_rn(0.5, _dmul_rn(float64(grids[image, row, col, base + 2]), width))
        half_h = _dmul_rn(0.5, _dmul_rn(float64(grids[image, row, col, base + 3]), height))
        x1 = min(max(cx - half_w, 0.0), width)
        y1 = min(max(cy - half_h, 0.0), height)
        x2 = min(max(cx + half_w, 0.0), width)
        y2 = min(max(cy + half_h, 0.0), height)
        boxes[t, 0] = x1
        boxes[t, 1] = y1
        boxes[t, 2] = x2
        boxes[t, 3] = y2
        areas[t] = _dmul_rn(x2 - x1, y2 - y1)
        scores[t] = score
        classes[t] = best_class
        candidate[t] = 1 if score >= conf_threshold else 0
    if t < TILES:
        removed[t] = uint64(0)
    cuda.syncthreads()

    # 2. stable rank by counting; every thread also counts the candidates
    n = 0
    rank = 0
    mine = t < MAX_BOXES and candidate[t] == 1
    my_score = scores[t] if mine else float32(0.0)
    for j in range(MAX_BOXES):
        if candidate[j] == 1:
            n += 1
            if mine and (scores[j] > my_score or (scores[j] == my_score and j < t)):
                rank += 1
    if mine:
        order[rank] = t
    cuda.syncthreads()

    # 3. one 64-bit suppression word per (rank, tile), the words spread over the threads
    n_tiles = (n + TILE - 1) // TILE
    for item in range(t, n * n_tiles, THREADS):
        r = item // n_tiles
        w = item - r * n_tiles
        bits = uint64(0)
        first = max(w * TILE, r + 1)  # only later ranks: a word wholly before r stays 0
        last = min(w * TILE + TILE, n)
        if first < last:
            i = order[r]
            for q in range(first, last):
                j = order[q]
                if classes[j] == classes[i] and _iou(boxes, areas, i, j) > iou_threshold:
                    bits |= uint64(1) << uint64(q - w * TILE)
        masks[r, w] = bits
    cuda.syncthreads()

    # 4. the greedy walk, one thread, no barrier: jump to the lowest live rank, keep it, OR its words
    if t == 0:
        count = 0
        w = 0
        while w < n_tiles and count < top_k:
            left = n - w * TILE
            valid = _ALL_BITS if left >= TILE else (uint64(1) << uint64(left)) - uint64(1)
            live = ~removed[w] & valid
            if live == uint64(0):
                w += 1
                continue
            low = live & (~live + uint64(1))  # the lowest set bit alone
            r = w * TILE + int32(cuda.popc(low - uint64(1)))
            kept[count] = order[r]
            count += 1
            removed[w] |= low
            for v in range(w, n_tiles):
                removed[v] |= masks[r, v]
        shared_count[0] = count
        offset[0] = cuda.atomic.add(header, 0, count)
        header[1 + image] = offset[0]
        header[1 + n_images + image] = count
    cuda.syncthreads()

    # 5. write the kept boxes in parallel into the rows reserved above
    count = shared_count[0]
    if t < count:
        index = kept[t]
        out = offset[0] + t
        rows[out, 0] = float32(boxes[index, 0])
        rows[out, 1] = float32(boxes[index, 1])
        rows[out, 2] = float32(boxes[index, 2])
        rows[out, 3] = float32(boxes[index, 3])
        rows[out, 4] = scores[index]
        rows[out, 5] = float32(classes[index])


@cuda.jit(cache=True)
def normalize_kernel(rgb, images, scale, shift):
    """rgb (N, H, W, 3) u8 -> images (N, 3, H, W) f32: (pixel * scale[c]) + shift[c], two roundings as on the host."""
    i = cuda.grid(1)
    n, height, width, channels = rgb.shape
    if i >= n * height * width * channels:
        return
    x = i % width
    rest = i // width
    y = rest % height
    rest //= height
    c = rest % channels
    image = rest // channels
    images[image, c, y, x] = _mul_rn(float32(rgb[image, y, x, c]), scale[c]) + shift[c]


# The host constants of fastyolo.preprocess, so device and host normalise identically.


def launch_decode_nms(grids, sizes, conf: float, iou: float, top_k: int, rows, header, stream=0) -> None:
    """Queue the decode + NMS kernel on `stream` (device arrays; header[0] must already be 0)."""
    blocks = int(grids.shape[0])
    decode_nms_kernel[blocks, THREADS, stream](
        grids, sizes, np.float32(conf), np.float64(iou), np.int32(min(int(top_k), MAX_BOXES)), rows, header
    )


def launch_normalize(rgb, images, scale, shift, stream=0) -> None:
    """Queue the normalisation of (N, H, W, 3) uint8 RGB into the (N, 3, H, W) float32 network input."""
    total = int(np.prod(rgb.shape))
    normalize_kernel[math.ceil(total / NORMALIZE_THREADS), NORMALIZE_THREADS, stream](rgb, images, scale, shift)


def split_rows(rows: np.ndarray, header: np.ndarray, n_images: int) -> tuple[list[np.ndarray], ...]:
    """Host side: the kernel's rows + header -> per-image (boxes f32 (K,4), scores f32 (K,), class_ids i32 (K,))."""
    boxes, scores, classes = [], [], []
    for n in range(n_images):
        start, count = int(header[1 + n]), int(header[1 + n_images + n])
        block = rows[start : start + count]
        boxes.append(block[:, :4].copy())
        scores.append(block[:, 4].copy())
        classes.append(block[:, 5].astype(np.int32))
    return boxes, scores, classes


def decode_nms_batch_cuda(
    grids: np.ndarray, sizes: np.ndarray, conf_threshold: float, iou_threshold: float, top_k: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Host arrays in, per-image (boxes, scores, class_ids) lists out: the kernel on one call (tests, examples)."""
    grids = np.ascontiguousarray(grids, dtype=np.float32)
    sizes = np.ascontiguousarray(sizes, dtype=np.float64)
    n = grids.shape[0]
    d_grids = cuda.to_device(grids)
    d_sizes = cuda.to_device(sizes)
    d_rows = cuda.device_array((max(n, 1) * MAX_BOXES, ROW_VALUES), np.float32)
    d_header = cuda.to_device(np.zeros(1 + 2 * n, np.int32))
    if n:
        launch_decode_nms(d_grids, d_sizes, conf_threshold, iou_threshold, top_k, d_rows, d_header)
    header = d_header.copy_to_host()
    rows = d_rows[: int(header[0])].copy_to_host() if header[0] else np.zeros((0, ROW_VALUES), np.float32)
    return split_rows(rows, header, n)


def normalize_cuda(rgb: np.ndarray) -> np.ndarray:
    """Host (N, H, W, 3) uint8 RGB -> host (N, 3, H, W) float32 through the device kernel (tests)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    d_out = cuda.device_array((rgb.shape[0], 3, rgb.shape[1], rgb.shape[2]), np.float32)
    launch_normalize(cuda.to_device(rgb), d_out, cuda.to_device(NORMALIZE_SCALE), cuda.to_device(NORMALIZE_SHIFT))
    return d_out.copy_to_host()


__all__ = [
    "INPUT_SIZE",
    "TILES",
    "ROW_VALUES",
    "THREADS",
    "decode_nms_batch_cuda",
    "decode_nms_kernel",
    "launch_decode_nms",
    "launch_normalize",
    "normalize_cuda",
    "normalize_kernel",
    "split_rows",
]
