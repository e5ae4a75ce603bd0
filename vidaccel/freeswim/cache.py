"""Per-layer store of the full branch's cross-attention outputs for FreeSwim (docs/methods.md section 2).

On a guide step the full branch computes every block's cross-attention output; between guide
steps the window branch reuses them. One entry per layer, held in the model dtype:

* ``offload=False``: entries stay on the model's device.
* ``offload=True`` (CUDA only): each entry is copied to a pinned host buffer on a side stream as
  soon as it is produced (the device copy is released right after the window branch of that
  layer used it), and on reuse steps layer ``i + 1`` is prefetched while layer ``i`` computes, so
  the device holds about two layers instead of all of them. On a CPU model there is nothing to
  offload and entries simply stay where they are.

Host buffers are kept between generations of the same shape (pinning 16 GB takes seconds) and
freed by `release`.
"""

from __future__ import annotations

import torch


class CrossAttentionCache:
    """Cross-attention outputs of the full branch, keyed by layer index."""

    def __init__(self, offload: bool = False):
        self.offload = offload
        self._device: dict[int, torch.Tensor] = {}  # entries resident on the model's device
        self._host: dict[int, torch.Tensor] = {}  # pinned host copies (offload on CUDA)
        self._stored: set[int] = set()  # layers holding a valid entry for the current key
        self._d2h: dict[int, torch.cuda.Event] = {}
        self._h2d: dict[int, tuple[torch.Tensor, torch.cuda.Event]] = {}
        self._stream = None
        self.key = None  # (shape, dtype, device) the entries were produced for

    # -- bookkeeping -------------------------------------------------------------------------
    def valid_for(self, key, num_layers: int) -> bool:
        """True when every layer holds an entry produced for `key` (shape, dtype, device)."""
        return self.key == key and len(self._stored) == num_layers

    def clear(self) -> None:
        """Forget all entries (a new generation or shape); pinned host buffers are kept for reuse."""
        self._device.clear()
        self._stored.clear()
        self._d2h.clear()
        self._h2d.clear()
        self.key = None

    def release(self) -> None:
        """Free everything, pinned host buffers included."""
        self.clear()
        self._host.clear()
        self._stream = None

    def nbytes(self) -> dict:
        """Bytes held now: on the model's device and in pinned host memory."""
        dev = sum(t.numel() * t.element_size() for t in self._device.values())
        dev += sum(t.numel() * t.element_size() for t, _ in self._h2d.values())
        host = sum(self._host[i].numel() * self._host[i].element_size() for i in self._stored if i in self._host)
        return {"device": dev, "host": host, "total": dev + host}

    def _offloading(self, tensor: torch.Tensor) -> bool:
        return self.offload and tensor.device.type == "cuda"

    def _copy_stream(self, device):
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=device)
        return self._stream

    # -- store / load ------------------------------------------------------------------------
    def store(self, layer: int, output: torch.Tensor, key) -> None:
        """Keep `output` (the full branch's cross-attention output of `layer`) for `key`."""
        if self.key != key:
            self.clear()
            self.key = key
        self._stored.add(layer)
        self._h2d.pop(layer, None)
        self._device[layer] = output  # used right away by this step's window branch
        if not self._offloading(output):
            return
        host = self._host.get(layer)
        if host is None or host.shape != output.shape or host.dtype != output.dtype:
            host = torch.empty(output.shape, dtype=output.dtype, pin_memory=True)
            self._host[layer] = host
        stream = self._copy_stream(output.device)
        stream.wait_stream(torch.cuda.current_stream(output.device))
        with torch.cuda.stream(stream):
            host.copy_(output, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        output.record_stream(stream)  # the allocator must not reuse `output` before the copy ran
        self._d2h[layer] = event

    def load(self, layer: int, num_layers: int) -> torch.Tensor:
        """The entry of `layer` on the model's device (prefetching the next layer when offloaded)."""
        if layer in self._device:
            out = self._device[layer]
            if self.offload and out.device.type == "cuda":
                del self._device[layer]  # guide step: its host copy is on the way, free the device one
            return out
        if layer not in self._stored:
            raise RuntimeError(f"FreeSwim cross-attention cache has no entry for layer {layer}.")
        out = self._fetch(layer)
        if layer + 1 < num_layers and layer + 1 in self._stored and layer + 1 not in self._device:
            self._prefetch(layer + 1)
        return out

    def _prefetch(self, layer: int) -> None:
        if layer in self._h2d:
            return
        host = self._host[layer]
        device = torch.device("cuda", torch.cuda.current_device())
        stream = self._copy_stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            if layer in self._d2h:
                stream.wait_event(self._d2h[layer])
            tensor = host.to(device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        self._h2d[layer] = (tensor, event)

    def _fetch(self, layer: int) -> torch.Tensor:
        self._prefetch(layer)
        tensor, event = self._h2d.pop(layer)
        current = torch.cuda.current_stream(tensor.device)
        current.wait_event(event)
        tensor.record_stream(current)  # allocated on the copy stream, consumed on the compute stream
        return tensor


__all__ = ["CrossAttentionCache"]
