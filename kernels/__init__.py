"""Decode of the network's (N, S, S, CELL_SIZE) output plus class-aware greedy NMS.

Three implementations with one meaning, tested element by element against each other:
`reference` (plain numpy, the specification), `cpu` (numba @njit) and `cuda` (numba.cuda).
"""

from fastyolo.kernels.cpu import decode_nms_batch, warmup
from fastyolo.kernels.reference import decode_nms_reference

__all__ = ["decode_nms_batch", "decode_nms_reference", "warmup"]
