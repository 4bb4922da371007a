"""LM: the PersonaPlex language model (summed embeddings, temporal transformer, text head, depformer).

Module names follow NVIDIA's `model.safetensors` (`emb.3`, `transformer.layers.0.gating.linear_in`,
`depformer.layers.1.gating.15`, ...) so weight mapping is a handful of renames (see weights.py).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rolekit.lm import depformer_cuda
from rolekit.lm.config import LmConfig
from rolekit.lm.depformer import Depformer, StepKV
from rolekit.lm.sampling import SamplingParams, sample, split_keys
from rolekit.lm.temporal import LmCache, Transformer
from rolekit.nn import embed_cuda, fused
from rolekit.nn.attention import MIN_RING, RingKV, ring_capacity
from rolekit.nn.kernels import OPS, Blocks, Kernels
from rolekit.nn.norm import RMSNorm


def embed_tokens(emb: nn.Embedding, tokens: mx.array) -> mx.array:
    """tokens [...] -> [..., D]; token -1 gives an exact zero vector (Kyutai ScaledEmbedding)."""
    y = emb(mx.maximum(tokens, 0))  # in the table's dtype: a 16-bit table meets fp32 at the residual
    return mx.where((tokens == -1)[..., None], mx.zeros((1,), dtype=y.dtype), y)


class LM(nn.Module):
    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.text_emb = nn.Embedding(cfg.text_card + 1, cfg.dim)
        self.emb = [nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)]
        self.transformer = Transformer(cfg)
        self.out_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.text_linear = nn.Linear(cfg.dim, cfg.text_card, bias=False)
        self.depformer_in = [nn.Linear(cfg.dim, cfg.depformer_dim, bias=False) for _ in range(cfg.dep_q)]
        self.depformer_text_emb = nn.Embedding(cfg.text_card + 1, cfg.depformer_dim)
        self.depformer_emb = [nn.Embedding(cfg.card + 1, cfg.depformer_dim) for _ in range(cfg.dep_q - 1)]
        self["depformer"] = Depformer(cfg)  # item, not attribute: `depformer` is also the method
        self.linears = [nn.Linear(cfg.depformer_dim, cfg.card, bias=False) for _ in range(cfg.dep_q)]

    @property
    def dtype(self) -> mx.Dtype:
        """Activation dtype: chosen at load (`lm.precision`), else that of the embeddings."""
        return getattr(self, "activation_dtype", None) or self.text_emb.weight.dtype

    @property
    def context(self) -> int:
        """Positions a temporal query sees (its own and the context - 1 before it)."""
        return self.cfg.context

    def make_cache(self, batch: int, floor: int | None = None) -> LmCache:
        """An empty ring KV cache that grows with the conversation (`LmCache.reserve`): `floor`
        slots per layer at first (default `ring_floor`, else `MIN_RING`; at most the context),
        doubling before the ring would wrap, up to the context. `floor` >= context: full size now."""
        cfg = self.cfg
        floor = self._ring_floor(floor)
        cap = ring_capacity(0, cfg.context, floor)
        rings = [
            RingKV.empty(batch, cfg.num_heads, cap, cfg.head_dim, self._cache_dtype())
            for _ in range(cfg.num_layers)
        ]
        return LmCache(rings=rings, offset=0, context=cfg.context, floor=floor)

    def kv_bytes(self, batch: int, positions: int, floor: int | None = None) -> int:
        """Bytes (device memory) of the temporal ring KV cache that `make_cache(batch, floor)` holds
        once `reserve(positions)` has grown it for global positions 0 .. positions - 1: layers x
        (keys, values) x batch x heads x `ring_capacity(positions)` slots x head_dim x the cache
        dtype's size. Linear in `batch`. The depformer's cache is not counted: it is rebuilt for
        every frame and holds dep_q steps per layer (a few hundred KB per conversation on the 7B)."""
        cfg = self.cfg
        slots = ring_capacity(positions, cfg.context, self._ring_floor(floor))
        per_layer = 2 * batch * cfg.num_heads * slots * cfg.head_dim * self._cache_dtype().size
        return cfg.num_layers * per_layer

    def _cache_dtype(self) -> mx.Dtype:
        """The ring KV cache's dtype: chosen at load (`lm.precision.cache_dtype`), else the activations'."""
        return getattr(self, "cache_dtype", None) or self.dtype

    def _ring_floor(self, floor: int | None) -> int:
        """A growing ring's first size: `floor`, else `ring_floor` (set on the model), else `MIN_RING`."""
        return floor or getattr(self, "ring_floor", MIN_RING)

    def embed(self, tokens: mx.array, kernels: Kernels = OPS) -> mx.array:
        """tokens [B, 17, T] int32 -> summed embeddings [B, T, D] (audio streams first, then text).

        Same sums as `embed_tokens` per stream, with fewer kernels: the clamp and the -1 test run
        once for all streams, the indices are laid out stream-major once (so each stream's row
        is a view, not a copy), and the zeroing folds into the fused sum. `kernels.embed`: one
        CUDA kernel with the same sums where it covers the tables."""
        tables = [self.text_emb.weight, *(e.weight for e in self.emb)]
        if kernels.embed and embed_cuda.covers(tables, tokens):
            return embed_cuda.embed_sum(tables, tokens, (*range(1, len(tables)), 0)).astype(self.dtype)
        b, _, t = tokens.shape
        idx = mx.contiguous(mx.maximum(tokens, 0).transpose(1, 0, 2))  # [S, B, T]
        keep = (tokens != -1)[..., None]  # [B, S, T, 1]
        zero = mx.zeros((1,), dtype=self.dtype)

        def stream(emb: nn.Embedding, i: int) -> mx.array:  # a 16-bit table is cast at lookup
            rows = emb(idx[i : i + 1].reshape(b, t)).astype(self.dtype)
            return mx.where(keep[:, i], rows, zero)  # [B, T, D]

        x = None
        for i, emb in enumerate(self.emb):
            e = stream(emb, 1 + i)
            x = e if x is None else x + e
        text = stream(self.text_emb, 0)
        return text if x is None else x + text

    def temporal(
        self, x: mx.array, cache: LmCache, blocks: Blocks = Blocks.NONE
    ) -> tuple[mx.array, mx.array]:
        """x [B, T, D] -> (hidden [B, T, D] after out_norm, text_logits [B, T, text_card]).

        Whole-sequence (prefill) and one-step calls give the same result for the same positions.
        `blocks`: how a sequence's block products run (`Kernels.prompt_blocks`: DEQUANT, equal up
        to float rounding; default the modules' own ops).
        """
        h = self.out_norm(self.transformer(x, cache, blocks))
        return h, self.text_linear(h)

    def _dep_step(
        self,
        step: int,
        hidden: mx.array,
        token: mx.array,
        kv: StepKV | None,
        fused_kernel: Blocks | bool = False,
    ) -> tuple[mx.array, StepKV]:
        """hidden [B, D], token [B] (text for step 0, codebook step-1 after) -> (logits [B, card], kv)."""
        emb = self.depformer_text_emb if step == 0 else self.depformer_emb[step - 1]
        x = fused.linear_residual(
            hidden, self.depformer_in[step], embed_tokens(emb, token), use_kernel=fused_kernel
        )  # [B, Dd]
        y, kv = self["depformer"].step(x[:, None, :], step, kv, fused_kernel)  # [B, 1, Dd]
        return self.linears[step](y[:, 0]), kv

    def depformer(
        self,
        hidden: mx.array,
        text: mx.array,
        provided: mx.array,
        params: SamplingParams,
        key: mx.array | None,
        steps: int | None = None,
        kernels: Kernels = OPS,
    ) -> mx.array:
        """Sample the audio codebooks of one frame: -> [B, dep_q] int32.

        hidden [B, D] (temporal output), text [B] (this frame's text token), provided [B, dep_q]
        (-1 = not provided). Step k conditions on the text (k = 0) or on codebook k-1, taken from
        `provided` where given, else the sampled one; provided entries are returned as given.
        `key`: one key [2], per-row keys [B, 2] (row b's draws depend on its key alone, so one
        batched call equals B batch-1 calls), or None. `steps` < dep_q stops early (8 = agent codebooks only, exact when the user stream is
        provided); the columns not run hold `provided`. `kernels.depformer` (a packed LM,
        `depformer_cuda.pack`): the frame as one CUDA kernel where it applies; `kernels.blocks`: the
        layers' block products through `nn.fused`'s kernels.
        """
        n = self.cfg.dep_q if steps is None else steps
        if kernels.depformer and depformer_cuda.covers(self, hidden, params, key, n):
            drawn, _ = depformer_cuda.launch(
                self, hidden, text, provided, params, key, n, kernels.depformer_threads
            )  # [B, n]
            return mx.concatenate([drawn, provided[:, n:].astype(mx.int32)], axis=1)
        keys = split_keys(key, n)
        token = text.astype(mx.int32)
        kv: StepKV | None = None
        out = []
        for k in range(n):
            logits, kv = self._dep_step(k, hidden, token, kv, kernels.blocks)
            if params.greedy:
                drawn = mx.argmax(logits, axis=-1).astype(mx.int32)
            else:
                drawn = sample(logits, params.audio_temperature, params.audio_top_k, keys[k])
            given = provided[:, k]
            token = mx.where(given >= 0, given, drawn).astype(mx.int32)
            out.append(token)
        if n < self.cfg.dep_q:
            out.extend(provided[:, k] for k in range(n, self.cfg.dep_q))
        return mx.stack(out, axis=1).astype(mx.int32)

    def depformer_logits(self, hidden: mx.array, text: mx.array, audio_in: mx.array) -> mx.array:
        """Teacher-forced: hidden [B, D], text [B], audio_in [B, dep_q] -> logits [B, dep_q, card].

        Step k > 0 conditions on audio_in[:, k - 1] (the last column is never an input).
        """
        kv: StepKV | None = None
        token = text.astype(mx.int32)
        out = []
        for k in range(self.cfg.dep_q):
            logits, kv = self._dep_step(k, hidden, token, kv)
            out.append(logits)
            token = audio_in[:, k].astype(mx.int32)
        return mx.stack(out, axis=1)
