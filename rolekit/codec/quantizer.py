"""Split residual vector quantizer of Mimi: `rvq_first` (1 semantic level) + `rvq_rest` (the others).

Both RVQs read the same latent through their own 1x1 input projection and quantize residually;
decoding sums each RVQ's codebook vectors, then applies its own output projection, then adds the
two. Codebook = embedding_sum / max(cluster_usage, 1e-5); nearest neighbour by Euclidean distance.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

_EPS = 1e-5


class Codebook(nn.Module):
    def __init__(self, bins: int, dim: int) -> None:
        super().__init__()
        self.embedding_sum = mx.zeros((bins, dim))
        self.cluster_usage = mx.ones((bins,))
        self._table: tuple[mx.array, mx.array] | None = None
        self._src: tuple[mx.array, mx.array] | None = None

    def prepare(self) -> None:
        """Cache the centroids and their squared norms (done lazily whenever the weights change)."""
        emb = self.embedding_sum / mx.maximum(self.cluster_usage, _EPS)[:, None]  # [bins, dim]
        self._table = (emb, (emb * emb).sum(axis=-1))
        self._src = (self.embedding_sum, self.cluster_usage)

    @property
    def table(self) -> tuple[mx.array, mx.array]:
        src = self._src
        if (
            self._table is None
            or src is None
            or src[0] is not self.embedding_sum
            or src[1] is not self.cluster_usage
        ):
            self.prepare()
        assert self._table is not None
        return self._table

    def distances(self, x: mx.array) -> mx.array:
        """Squared distance minus ||x||^2 (same argmin): x [N, dim] -> [N, bins]."""
        emb, norms = self.table
        return norms[None, :] - 2.0 * (x @ emb.T)

    def encode(self, x: mx.array) -> mx.array:
        return mx.argmin(self.distances(x), axis=-1).astype(mx.int32)  # [N]

    def decode(self, codes: mx.array) -> mx.array:
        return self.table[0][codes]  # [..., dim]


class ResidualVQ(nn.Module):
    def __init__(self, n_q: int, bins: int, dim: int, io_dim: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(io_dim, dim, bias=False)
        self.output_proj = nn.Linear(dim, io_dim, bias=False)
        self.layers = [Codebook(bins, dim) for _ in range(n_q)]
        self._stack: tuple[tuple[mx.array, ...], mx.array] | None = None

    def prepare(self) -> None:
        """Cache every codebook's centroids, and all of them stacked [n_q, bins, dim] for decode."""
        for layer in self.layers:
            layer.prepare()
        self._stacked()
        mx.eval(self._stack[1], *(layer.table for layer in self.layers))

    def _stacked(self) -> mx.array:
        tables = tuple(layer.table[0] for layer in self.layers)
        if self._stack is None or any(a is not b for a, b in zip(self._stack[0], tables, strict=True)):
            self._stack = (tables, mx.stack(tables))
        return self._stack[1]

    def encode(self, x: mx.array, n_q: int) -> mx.array:
        # x: [N, io_dim] -> codes [N, n_q]
        residual = self.input_proj(x)
        codes = []
        for layer in self.layers[:n_q]:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return mx.stack(codes, axis=-1)

    def decode(self, codes: mx.array) -> mx.array:
        # codes: [N, n_q] -> [N, io_dim]; one gather from the stacked tables, then one sum
        n = codes.shape[1]
        vectors = self._stacked()[mx.arange(n)[None, :], codes]  # [N, n_q, dim]
        return self.output_proj(vectors.sum(axis=1))


class SplitRVQ(nn.Module):
    def __init__(self, total: int, bins: int, dim: int, io_dim: int) -> None:
        super().__init__()
        self.rvq_first = ResidualVQ(1, bins, dim, io_dim)
        self.rvq_rest = ResidualVQ(total - 1, bins, dim, io_dim)

    def prepare(self) -> None:
        self.rvq_first.prepare()
        self.rvq_rest.prepare()

    def encode(self, x: mx.array, n_q: int) -> mx.array:
        # x: [B, T, io_dim] -> codes [B, n_q, T] int32
        b, t, d = x.shape
        flat = x.reshape(b * t, d)
        codes = self.rvq_first.encode(flat, 1)
        if n_q > 1:
            codes = mx.concatenate([codes, self.rvq_rest.encode(flat, n_q - 1)], axis=-1)
        return codes.reshape(b, t, n_q).transpose(0, 2, 1)

    def decode(self, codes: mx.array) -> mx.array:
        # codes: [B, K, T] -> latent [B, T, io_dim]
        b, k, t = codes.shape
        flat = codes.transpose(0, 2, 1).reshape(b * t, k)
        q = self.rvq_first.decode(flat[:, :1])
        if k > 1:
            q = q + self.rvq_rest.decode(flat[:, 1:])
        return q.reshape(b, t, -1)
