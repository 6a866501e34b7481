"""Compile the CUDA kernels to PTX without a GPU and assemble it with ptxas for register/spill figures."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path


def kernel_signatures() -> dict[str, tuple]:
    """The argument types every kernel is launched with (C-contiguous device arrays)."""
    from numba import float32, float64, int32, uint8

    return {
        "decode_nms_kernel": (float32[:, :, :, ::1], float64[:, ::1], float32, float64, int32,
                              float32[:, ::1], int32[::1]),
        "normalize_kernel": (uint8[:, :, :, ::1], float32[:, :, :, ::1], float32[::1], float32[::1]),
    }


def compile_kernels_ptx(cc: tuple[int, int]) -> dict[str, str]:
    """PTX text of each kernel for compute capability `cc` (NVVM from the numba-cuda wheels; no GPU needed)."""
    from numba import cuda

    from fastyolo.kernels import cuda as kernels

    return {
        name: cuda.compile_ptx(getattr(kernels, name).py_func, sig, cc=cc)[0]
        for name, sig in kernel_signatures().items()
    }


def _run_ptxas(ptxas: str, ptx: str, arch: str) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(Path(tmp) / "kernel.cubin")],
                              capture_output=True, text=True)
    return proc.stdout + proc.stderr, proc.returncode == 0


def assemble(ptx: str, arch: str, ptxas: str | None = None) -> dict[str, int]:
    """Run `ptxas -v` on one kernel's PTX; returns registers, spill stores/loads (bytes), shared memory (bytes).

    NVVM may emit a newer PTX ISA than the installed ptxas reads; the `.version` line is then lowered
    to what ptxas accepts (these kernels use no instruction newer than PTX 7.x).
    """
    ptxas = ptxas or shutil.which("ptxas")
    if ptxas is None:
        raise FileNotFoundError("ptxas not found on PATH (it comes with the CUDA toolkit)")
    log, ok = _run_ptxas(ptxas, ptx, arch)
    newest = re.search(r"Unsupported \.version [\d.]+; current version is '([\d.]+)'", log)
    if not ok and newest:
        ptx = re.sub(r"^\.version \d+\.\d+", f".version {newest.group(1)}", ptx, count=1, flags=re.M)
        log, ok = _run_ptxas(ptxas, ptx, arch)
    if not ok:
        raise RuntimeError(f"ptxas -arch={arch} failed: {log.strip().splitlines()[-1] if log.strip() else 'no output'}")
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    smem = re.search(r"(\d+) bytes smem", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    return {
        "registers": int(regs.group(1)) if regs else -1,
        "spill_stores": int(spills.group(1)) if spills else 0,
        "spill_loads": int(spills.group(2)) if spills else 0,
        "stack_bytes": int(stack.group(1)) if stack else 0,
        "shared_bytes": int(smem.group(1)) if smem else 0,
    }
