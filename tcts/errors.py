"""Errors the engine turns into messages a user can act on."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class OutOfMemory(RuntimeError):
    """A run needed more memory than the device has; the message names the work and what to lower."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors, Python's ``MemoryError`` and the CPU allocator's failure (a plain
    ``RuntimeError`` saying "can't allocate memory")."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


@contextlib.contextmanager
def explain_out_of_memory(what: str, advice: str) -> Iterator[None]:
    """Re-raise an out-of-memory error as :class:`OutOfMemory` saying what ran out (``what``) and what to
    lower (``advice``)."""
    try:
        yield
    except OutOfMemory:
        raise
    except BaseException as exc:
        if not is_out_of_memory(exc):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutOfMemory(f"out of memory while {what}. {advice} ({first_line})") from None
