r"""The :class:`~pipeline.distributed.comm.Comm` protocol over a torch.distributed process group.

Tensors travel on the backend's device, ``wire``: the rank's CUDA device for NCCL, the CPU for
gloo. Callers may pass tensors on any device; results come back on the caller's device
(``all_gather``, ``all_reduce``: the input's; ``exchange``: ``self.device``).

Collectives, per call (P ranks, n_r rows on rank r):

``all_gather``  2 collectives: counts ``[P]`` int64, then the rows padded to ``max_r n_r``
                (skipped padding when all counts agree).
``all_reduce``  1 collective, sum, in the input's dtype (float64 stays float64 on gloo and NCCL).
``exchange``    2 collectives: the send-count matrix ``C[src, dst]`` by an all-reduce of
                ``[P, P]`` int64 (each rank fills its row), then one ``all_to_all_single`` with
                split sizes ``C[r, :]`` out and ``C[:, r]`` in. Rows a rank sends itself never
                touch the wire. One collective for all pairs: no ordering of sends and receives,
                no deadlock.

Every rank must make the same sequence of calls (as for any collective), including ranks with
nothing to send.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

# dtypes gloo cannot reduce or move; sent as a same-size integer view
_WIRE_VIEW = {torch.bool: torch.uint8}


class TorchComm:
    """``Comm`` over ``group`` (default: the world group opened by :func:`launch`)."""

    def __init__(self, device: torch.device | str, backend: str | None = None, group: dist.ProcessGroup | None = None,
                 self_via_wire: bool = False):
        self.group = group
        self.self_via_wire = self_via_wire  # tests: send rows to oneself through the backend too
        self.device = torch.device(device)
        self.backend = backend or dist.get_backend(group)
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.wire = self.device if self.backend == "nccl" else torch.device("cpu")

    # -- helpers ---------------------------------------------------------------------------

    def _to_wire(self, t: Tensor) -> Tensor:
        t = t.to(self.wire)
        view = _WIRE_VIEW.get(t.dtype)
        return (t.view(view) if view is not None else t).contiguous()

    @staticmethod
    def _from_wire(t: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
        if t.dtype != dtype:
            t = t.view(dtype)
        return t.to(device)

    # -- Comm ------------------------------------------------------------------------------

    def all_gather(self, t: Tensor) -> list[Tensor]:
        """Every rank's ``t`` (``[n_r, *rest]``; ``rest`` and dtype equal on all ranks), in rank order.

        A 0-d ``t`` is gathered as one element; the results are 0-d again.
        """
        scalar = t.dim() == 0
        if scalar:
            t = t.reshape(1)
        w = self._to_wire(t)
        counts = torch.zeros(self.size, dtype=torch.int64, device=self.wire)
        counts[self.rank] = w.shape[0]
        dist.all_reduce(counts, group=self.group)
        n = counts.tolist()
        m = max(n)
        if m != w.shape[0]:
            pad = torch.zeros((m - w.shape[0], *w.shape[1:]), dtype=w.dtype, device=self.wire)
            w = torch.cat([w, pad])
        out = [torch.empty_like(w) for _ in range(self.size)]
        dist.all_gather(out, w, group=self.group)
        res = [self._from_wire(o[:k], t.dtype, t.device) for o, k in zip(out, n)]
        return [r[0] for r in res] if scalar else res

    def all_reduce(self, t: Tensor) -> Tensor:
        """Elementwise sum over ranks of ``t`` (same shape everywhere); a new tensor on ``t.device``.

        The sum's order is the backend's: equal to a single-process sum to rounding only. For
        results independent of the number of ranks, gather and sum in canonical order instead.
        """
        if t.dtype == torch.bool:
            raise TypeError("all_reduce of a bool tensor: convert to an integer dtype first")
        w = t.to(self.wire, copy=True).contiguous()
        dist.all_reduce(w, op=dist.ReduceOp.SUM, group=self.group)
        return w.to(t.device)

    def exchange(self, sends: dict[int, Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> dict[int, Tensor]:
        """Send ``sends[dst]`` (``[k, *shape]``, ``dtype``) to rank ``dst``; return arrivals by source.

        The result holds every source that sent this rank at least one row, and this rank itself
        when ``rank in sends``; tensors are on ``self.device``.
        """
        shape = tuple(shape)
        for dst, t in sends.items():
            if not 0 <= dst < self.size:
                raise ValueError(f"exchange: destination rank {dst} outside 0..{self.size - 1}")
            if tuple(t.shape[1:]) != shape or t.dtype != dtype:
                raise ValueError(f"exchange: sends[{dst}] is {tuple(t.shape)} {t.dtype}, expected [k, *{shape}] {dtype}")
        counts = torch.zeros((self.size, self.size), dtype=torch.int64, device=self.wire)
        local = self.rank in sends and not self.self_via_wire
        for dst, t in sends.items():
            if dst != self.rank or not local:
                counts[self.rank, dst] = t.shape[0]
        dist.all_reduce(counts, group=self.group)
        c = counts.tolist()
        out_splits = c[self.rank]
        in_splits = [c[src][self.rank] for src in range(self.size)]
        wire_dtype = _WIRE_VIEW.get(dtype, dtype)
        empty = torch.empty((0, *shape), dtype=wire_dtype, device=self.wire)
        parts = [self._to_wire(sends[d]) if out_splits[d] else empty for d in range(self.size)]
        send_buf = torch.cat(parts)
        recv_buf = torch.empty((sum(in_splits), *shape), dtype=wire_dtype, device=self.wire)
        if any(any(row) for row in c):  # all ranks see the same c: all join, or none does
            dist.all_to_all_single(recv_buf, send_buf, output_split_sizes=in_splits,
                                   input_split_sizes=out_splits, group=self.group)
        result: dict[int, Tensor] = {}
        for src, piece in enumerate(torch.split(recv_buf, in_splits)):
            if in_splits[src]:
                result[src] = self._from_wire(piece, dtype, self.device)
        if local:
            result[self.rank] = sends[self.rank].to(self.device)
        elif self.rank in sends and self.rank not in result:
            result[self.rank] = sends[self.rank][:0].to(self.device)
        return dict(sorted(result.items()))

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(group=self.group, device_ids=[self.device.index or 0])
        else:
            dist.barrier(group=self.group)
