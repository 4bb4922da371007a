"""Mimi codec in MLX: 24 kHz PCM <-> 12.5 Hz codes, whole clip and streaming (one 80 ms frame).

Pipeline (Kyutai `MimiModel`): SEANet encoder (25 Hz) -> encoder transformer -> learnt stride-2
downsample (12.5 Hz) -> split RVQ; decode: RVQ -> depthwise transposed upsample (25 Hz) ->
decoder transformer -> SEANet decoder.

Streaming follows Kyutai's streaming mode exactly, including its transformer ring cache: after
`context` (250) latent steps, i.e. 10 s, the first of the two 25 Hz steps of each frame attends to
`context - 1` keys instead of `context`, so streaming and whole-clip results then differ slightly
(5e-4 relative on the PCM over 400 frames with random full-size weights, in Kyutai's code and
ours alike; the convolutions are exact).

The default follows Kyutai's fix of that ring (kyutai-labs/moshi #148). NVIDIA's PersonaPlex fork
predates it: there, once the ring is full, every query sees one key less still. `--compat nvidia`
reproduces that (`codec.weights.nvidia_ring`: the same ring with `context - 1` slots).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from rolekit.codec.config import MimiConfig
from rolekit.codec.conv import CausalConv1d, CausalConvTranspose1d
from rolekit.codec.quantizer import SplitRVQ
from rolekit.codec.seanet import SEANetDecoder, SEANetEncoder
from rolekit.codec.transformer import MimiTransformer
from rolekit.errors import AudioInputError
from rolekit.nn.kernels import OPS, Kernels

_CHUNK_FRAMES = 50  # whole-clip convolutions run in chunks of 4 s (exact, bounds memory)


class MimiState:
    """Everything a stream carries between calls: conv carries, transformer caches, offsets.

    `snapshot()` is a flat `dict[str, mx.array]` (savable with `mx.save_safetensors`); arrays are
    immutable, so it is a cheap shallow copy that `restore()` reinstates. A missing carry means
    "nothing seen yet" (zero or replicate padding, empty cache).
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.reset()

    def reset(self) -> None:
        self.enc: dict[str, mx.array | None] = {}  # encoder side: convs + transformer cache
        self.dec: dict[str, mx.array | None] = {}  # decoder side
        self.enc_offset = 0  # 25 Hz steps seen by the encoder transformer
        self.dec_offset = 0

    def snapshot(self) -> dict[str, mx.array]:
        snap = {f"enc.{k}": v for k, v in self.enc.items() if v is not None}
        snap.update({f"dec.{k}": v for k, v in self.dec.items() if v is not None})
        for name in ("batch", "enc_offset", "dec_offset"):
            snap[f"meta.{name}"] = mx.array(getattr(self, name), dtype=mx.int32)
        return snap

    def restore(self, snap: dict[str, mx.array]) -> None:
        batch = int(snap["meta.batch"].item())
        if batch != self.batch:
            raise ValueError(f"snapshot is for batch {batch}, state has batch {self.batch}")
        self.enc = {k[4:]: v for k, v in snap.items() if k.startswith("enc.")}
        self.dec = {k[4:]: v for k, v in snap.items() if k.startswith("dec.")}
        self.enc_offset = int(snap["meta.enc_offset"].item())
        self.dec_offset = int(snap["meta.dec_offset"].item())

    def arrays(self) -> list[mx.array]:
        """Every carried array (to `mx.eval` them together with a step's output)."""
        return [a for a in (*self.enc.values(), *self.dec.values()) if a is not None]

    def check_frame(self, pcm: mx.array, frame_size: int) -> None:
        """An encode step takes exactly one frame of this stream's batch: [B, 1, frame_size]."""
        b, _, n = pcm.shape
        if n != frame_size or b != self.batch:
            raise ValueError(f"encode_step needs [{self.batch}, 1, {frame_size}] samples, got {pcm.shape}")

    def check_codes(self, codes: mx.array) -> None:
        """A decode step takes one frame of codes of this stream's batch: [B, K, 1]."""
        b, _, t = codes.shape
        if t != 1 or b != self.batch:
            raise ValueError(f"decode_step needs codes [{self.batch}, K, 1], got {codes.shape}")


class Mimi(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.decoder = SEANetDecoder(cfg)
        self.encoder_transformer = MimiTransformer(cfg)
        self.decoder_transformer = MimiTransformer(cfg)
        s = cfg.downsample_stride
        self.downsample = CausalConv1d(
            cfg.dimension, cfg.dimension, 2 * s, stride=s, bias=False, replicate=True
        )
        self.upsample = CausalConvTranspose1d(
            cfg.dimension, cfg.dimension, 2 * s, stride=s, groups=cfg.dimension, bias=False
        )
        self.quantizer = SplitRVQ(cfg.total_codebooks, cfg.bins, cfg.quantizer_dim, cfg.dimension)

    @property
    def num_codebooks(self) -> int:
        return self.cfg.num_codebooks

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    def prepare(self) -> None:
        """Refresh derived tables (codebooks) after the weights changed."""
        self.quantizer.prepare()

    # ---- whole clip ----------------------------------------------------------------------
    def encode(self, pcm: mx.array) -> mx.array:
        """pcm [B, 1, N] float32 -> codes [B, K, ceil(N / 1920)] int32 (right-padded with zeros)."""
        b, _, n = pcm.shape
        if n == 0:
            raise AudioInputError("Mimi.encode: the audio is empty")
        fs = self.frame_size
        frames = -(-n // fs)
        x = pcm.reshape(b, n, 1).astype(mx.float32)  # channels-last
        if frames * fs != n:
            x = mx.concatenate([x, mx.zeros((b, frames * fs - n, 1), dtype=x.dtype)], axis=1)
        conv_state: dict = {}
        latents = []
        step = _CHUNK_FRAMES * fs
        for s in range(0, frames * fs, step):
            latents.append(self.encoder(x[:, s : s + step], conv_state))
            mx.eval(latents[-1], *[v for v in conv_state.values() if v is not None])
        emb = latents[0] if len(latents) == 1 else mx.concatenate(latents, axis=1)  # [B, 2T, D]
        emb = self.encoder_transformer(emb)
        emb = self.downsample(emb, {}, "downsample")  # [B, T, D]
        return self.quantizer.encode(emb, self.num_codebooks)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [B, K, T] -> pcm [B, 1, T * 1920] float32."""
        b, _, t = codes.shape
        emb = self.quantizer.decode(codes.astype(mx.int32))  # [B, T, D]
        emb = self.upsample(emb, {}, "upsample")  # [B, 2T, D]
        emb = self.decoder_transformer(emb)
        conv_state: dict = {}
        outs = []
        step = _CHUNK_FRAMES * self.cfg.downsample_stride
        for s in range(0, emb.shape[1], step):
            outs.append(self.decoder(emb[:, s : s + step], conv_state))
            mx.eval(outs[-1], *[v for v in conv_state.values() if v is not None])
        pcm = outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=1)  # [B, N, 1]
        return pcm.reshape(b, 1, -1)

    # ---- streaming -----------------------------------------------------------------------
    def make_state(self, batch: int) -> MimiState:
        return MimiState(batch)

    def encode_step(self, pcm: mx.array, state: MimiState, kernels: Kernels = OPS) -> mx.array:
        """One frame: pcm [B, 1, 1920] -> codes [B, K, 1]; `state` advances in place. `kernels`:
        its `conv` and `fused` fields choose those CUDA kernels."""
        state.check_frame(pcm, self.frame_size)
        b, _, n = pcm.shape
        x = pcm.reshape(b, n, 1).astype(mx.float32)
        if state.enc_offset == 0:  # nothing seen: the downsample replicates its first input (a
            state.enc.pop("downsample", None)  # compiled step's state holds zeros there)
        emb = self.encoder(x, state.enc, conv_kernel=kernels.conv)  # [B, 2, D]
        emb = self.encoder_transformer.step(emb, state.enc, state.enc_offset, "transformer", kernels.fused)
        state.enc_offset += emb.shape[1]
        emb = self.downsample(emb, state.enc, "downsample", conv_kernel=kernels.conv)  # [B, 1, D]
        return self.quantizer.encode(emb, self.num_codebooks)

    def decode_step(self, codes: mx.array, state: MimiState, kernels: Kernels = OPS) -> mx.array:
        """One frame: codes [B, K, 1] -> pcm [B, 1, 1920]; `state` advances in place (`kernels`: as
        for `encode_step`)."""
        state.check_codes(codes)
        b = codes.shape[0]
        emb = self.quantizer.decode(codes.astype(mx.int32))  # [B, 1, D]
        emb = self.upsample(emb, state.dec, "upsample")  # [B, 2, D]
        emb = self.decoder_transformer.step(emb, state.dec, state.dec_offset, "transformer", kernels.fused)
        state.dec_offset += emb.shape[1]
        pcm = self.decoder(emb, state.dec, conv_kernel=kernels.conv)  # [B, 1920, 1]
        return pcm.reshape(b, 1, -1)
