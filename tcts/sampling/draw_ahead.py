"""Reference-exact proposals with the random numbers drawn ahead, for models on a GPU.

The reference pipeline draws each step's proposals with ``torch.multinomial(probs, 1, generator=g)`` on the
CPU, one generator per image, so it copies the probabilities (positions x codebook) to the CPU every step and
draws there while the GPU waits. For one sample without replacement, ``torch.multinomial`` is the exponential
race (the "Gumbel-max" trick in its exponential form): it fills a tensor of the probabilities' shape with
Exp(1) draws from the generator and returns ``argmax(p / E)``; the generator ends in the same state either way
(``tests/test_draw_ahead.py`` checks both on the installed torch). The exponentials do not depend on the
probabilities, only on the generator's state, and between two steps nothing but the rule's own noise draws
from the generator. So:

1. as soon as a step's rule has drawn its noise (the generator stands where the reference's next
   ``multinomial`` would start), a worker thread per image fills the next step's exponentials from that
   image's CPU generator and copies them to the model's device;
2. meanwhile the GPU runs the next forward pass;
3. the proposal is ``argmax(p / E)`` on the device: the reference's tokens, without copying probabilities
   back to the CPU.

The serial CPU stream of exponentials is then the floor of a step (``lab/gpu_run.py speed`` measures it).
The main thread never touches a generator while a fill for it is pending: the next draw from it is the
proposal that waits for the fill.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

__all__ = ["DrawAhead"]


class DrawAhead:
    """Exponentials of the next step, one ``[positions, codebook]`` fp32 tensor per image, filled ahead from
    each image's CPU generator and placed on ``device``."""

    def __init__(self, generators: list[torch.Generator], device: torch.device | str, positions: int,
                 codebook: int) -> None:
        if any(g.device.type != "cpu" for g in generators):
            raise ValueError("drawing ahead reproduces the reference's CPU generators; got generators on "
                             f"{sorted({str(g.device) for g in generators})}")
        self.generators = generators
        self.device = torch.device(device)
        self.shape = (positions, codebook)
        self.pending: list[Future] | None = None
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(generators)), thread_name_prefix="tcts-draw-ahead")
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def prefetch(self) -> None:
        """Start filling the next step's exponentials from the generators as they stand now."""
        if self.pending is not None:
            raise RuntimeError("the previous step's exponentials were never used")
        self.pending = [self.pool.submit(self._fill, g) for g in self.generators]

    def _fill(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        exponentials = torch.empty(self.shape, dtype=torch.float32).exponential_(1, generator=generator)
        if self.copy_stream is None:
            return exponentials.to(self.device), None
        with torch.cuda.stream(self.copy_stream):     # off the compute stream: the copy overlaps the forward
            on_device = exponentials.pin_memory().to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        return on_device, copied

    def propose(self, probs: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` tokens: row b is ``argmax(probs[b] / E_b)``, what ``torch.multinomial(probs[b], 1,
        generator=g_b)`` returns on the CPU. Uses the prefetched exponentials (drawn now if none are)."""
        if tuple(probs.shape[1:]) != self.shape or probs.shape[0] != len(self.generators):
            raise RuntimeError(f"probabilities of shape {tuple(probs.shape)} but exponentials drawn for "
                               f"{len(self.generators)} x {self.shape}")
        if self.pending is None:
            self.prefetch()
        pending, self.pending = self.pending, None
        rows = []
        for p, future in zip(probs, pending):
            exponentials, copied = future.result()
            if copied is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(copied)
                exponentials.record_stream(stream)
            rows.append((p.float() / exponentials.to(p.device)).argmax(dim=-1))
        return torch.stack(rows)

    def close(self) -> None:
        """Wait for a pending fill (a run that ends or is cancelled leaves no thread drawing) and stop the pool."""
        pending, self.pending = self.pending, None
        for future in pending or ():
            future.cancel() or future.exception()
        self.pool.shutdown(wait=True)
