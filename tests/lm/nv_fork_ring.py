"""A test oracle for NVIDIA's fork: Kyutai's moshi 0.2.13 with the fork's RingKVCache positions.

The fork's transformer is Kyutai's before fix #148 (moshi.md P5): once the ring is full, the oldest
slot (index end_offset % capacity, end_offset = keys written so far) is reported at position
end_offset, a future one, so attention masks it out. `fork_ring()` patches moshi's
`RingKVCache.complete` to report exactly that; everything else is Kyutai's code.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def fork_ring():
    import torch
    from moshi.modules import transformer as T

    original = T.RingKVCache.complete

    def complete(self, k, v, exec_mask):
        res = original(self, k, v, exec_mask)
        end = self.end_offset.view(-1, 1)  # keys written, after this call
        slots = torch.arange(self.capacity, device=end.device)
        oldest = (slots == end % self.capacity) & (end >= self.capacity)
        positions = torch.where(oldest, end.expand_as(res.positions), res.positions)
        return T.KVCacheResult(res.keys, res.values, positions)

    T.RingKVCache.complete = complete
    try:
        yield
    finally:
        T.RingKVCache.complete = original
