"""Give freed memory back to the operating system between the compile's big stages.

glibc's malloc keeps freed heap blocks for reuse instead of returning them, and after the first large
tensors are freed it raises its mmap threshold, so later tensors of tens of MB come from the heap too.
A stage that frees hundreds of MB (calibration's whole-set activations) then leaves the process that much
larger for the rest of the compile, and the next stage's peak stacks on top of it (EfficientFormer-L1:
lowering peaked at ~900 MB after calibration, ~700 MB after a trim).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os

__all__ = ["release_freed_memory", "large_blocks_mapped"]

_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_DYNAMIC_MMAP_THRESHOLD_MAX = 32 << 20  # where glibc's own adjustment tops out on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)


def _glibc(symbol: str):
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), symbol) if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None


_TRIM, _MALLOPT = _glibc("malloc_trim"), _glibc("mallopt")


def release_freed_memory() -> None:
    """Collect unreachable objects and return the heap's free pages to the OS (``malloc_trim(0)``); a few ms."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


@contextlib.contextmanager
def large_blocks_mapped(threshold_bytes: int = 8 << 20):
    """Inside, every allocation of at least ``threshold_bytes`` gets its own mapping, handed back to the OS the
    moment the tensor is freed, instead of a heap block that stays resident (and fragments the heap, so RSS
    keeps climbing while live tensors do not). For code that allocates and frees many tensors of tens of MB;
    small ones stay on the heap, where their reuse is cheap. Afterwards the threshold is left at glibc's own
    ceiling. Does nothing where glibc's ``mallopt`` is absent, or if the user set MALLOC_MMAP_THRESHOLD_."""
    if _MALLOPT is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        yield
        return
    _MALLOPT(_M_MMAP_THRESHOLD, threshold_bytes)
    try:
        yield
    finally:
        _MALLOPT(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_THRESHOLD_MAX)
