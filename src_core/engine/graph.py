"""An iteration's forward and backward pass as one CUDA graph, recorded once and replayed."""

from __future__ import annotations

import torch


class StepGraph:
    """An iteration's forward and backward pass, recorded once as a CUDA graph and then replayed.

    The first ``WARMUP`` iterations run eagerly on a side stream (autograd
    and cuDNN settle their streams, workspaces and kernel choices there, as
    capture requires), the next one is recorded and every later one replays
    the recording: the same kernels on the same memory, launched at once.
    The noise draw and the optimiser step stay outside, so the random
    streams, the guard and checkpoints behave exactly as in eager mode.  If
    recording fails, the run goes on eagerly with a note in its history.
    """

    WARMUP = 3

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.graph = None
        self.outputs = None
        self.calls = 0
        self.failed = False
        self.notes: list[str] = []

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def step(self, forward_backward, optimizer):
        """(out, per-member loss, loss) of this iteration, with the gradients in ``.grad``."""
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        optimizer.zero_grad(set_to_none=True)  # at recording: .grad then lives in the graph's memory
        if self.failed:
            return forward_backward()
        self.calls += 1
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        try:
            with torch.cuda.stream(self.stream):
                if self.calls <= self.WARMUP:
                    return forward_backward()
                return self._record(forward_backward, optimizer)
        finally:
            main.wait_stream(self.stream)

    def _record(self, forward_backward, optimizer):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                outputs = forward_backward()
        except Exception as exc:  # this iteration and the rest run eagerly
            self.failed = True
            self.notes.append(f"CUDA graph unavailable ({type(exc).__name__}: {str(exc)[:200]}); ran eager")
            optimizer.zero_grad(set_to_none=True)
            return forward_backward()
        graph.replay()  # recording ran nothing: this is the iteration's computation
        self.graph, self.outputs = graph, outputs
        return outputs
