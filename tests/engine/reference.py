"""Reference loop: Kyutai's PyTorch modules + NVIDIA PersonaPlex's prompt phases and step (greedy).

The LM and Mimi are `moshi` 0.2.13 modules (`LMModel`, `MimiModel`); the token bookkeeping is the
literal LMGen transcription in `nv_lmgen.py`. Everything is fp32, batch 1, greedy, as documented
in NVIDIA's `lm.py` / `offline.py` (one Mimi instance, reset after the prompts).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.engine.nv_lmgen import NvLMGenTokens  # noqa: E402

torch.set_num_threads(1)

SILENCE = np.array([948, 243, 1178, 546, 1736, 1030, 1978, 2008])
SINE = np.array([430, 1268, 381, 1611, 1095, 1495, 56, 472])
PAD = 3


def build_lm(lm_kwargs: dict, seed: int) -> torch.nn.Module:
    """A random Kyutai LMModel whose weights are exactly representable in bf16."""
    from moshi.models.lm import LMModel

    torch.manual_seed(seed)
    kwargs = dict(lm_kwargs)
    lm = LMModel(device="cpu", dtype=torch.float32, **kwargs)
    with torch.no_grad():
        for p in lm.parameters():
            p.copy_(p.bfloat16().float())
    return lm.eval()


def load_mimi(path: Path, mimi_config: dict) -> torch.nn.Module:
    from moshi.models.loaders import get_mimi

    return get_mimi(str(path), mimi_config, device="cpu", num_codebooks=8).eval()


class TorchPersonaPlex:
    """NVIDIA's LMGen on Kyutai modules: prompt phases, then one step per 1920-sample frame."""

    def __init__(self, lm: torch.nn.Module, mimi: torch.nn.Module) -> None:
        self.lm, self.mimi = lm, mimi
        self.stack = ExitStack()
        self.stack.enter_context(torch.no_grad())
        self.stack.enter_context(lm.streaming(1))
        self.stack.enter_context(mimi.streaming(1))
        self.tok = NvLMGenTokens(1, lm.text_card, lm.card, dep_q=lm.dep_q)
        self.inputs: list[np.ndarray] = []  # every token column fed to the transformer
        self.saved_embeddings: list[torch.Tensor] = []

    def close(self) -> None:
        self.stack.close()

    def embed(self, inp: torch.Tensor) -> torch.Tensor:
        """NVIDIA `embed_codes`: audio embeddings summed, then the text one: [1, 17, 1] -> [1, 1, D]."""
        x = None
        for k in range(self.lm.n_q):
            e = self.lm.emb[k](inp[:, k + 1])
            x = e if x is None else x + e
        return x + self.lm.text_emb(inp[:, 0])

    def call(self, user=None, agent=None, text=None, embedding=None, save=False):
        """One LMGen.step (or step_embeddings when `embedding` is given); returns [17] or None."""
        prepared = self.tok.prepare(
            None if user is None else np.asarray(user)[None],
            None if agent is None else np.asarray(agent)[None],
            None if text is None else np.array([text]),
        )
        if prepared is None:
            return None
        inp = torch.tensor(prepared[0], dtype=torch.long)[:, :, None]  # [1, 17, 1]
        if embedding is None:
            self.inputs.append(prepared[0][0].copy())
            x = self.embed(inp)
            if save:
                self.saved_embeddings.append(x.clone())
        else:
            x = embedding.reshape(1, 1, -1)
        hidden = self.lm.out_norm(self.lm.transformer(x))  # [1, 1, D]
        text_logits = self.lm.text_linear(hidden)
        sampled_text = np.array([int(text_logits[0, 0].argmax())])
        next_text, dep_target, dep_prov = self.tok.forced(prepared, sampled_text)
        audio = []
        prev = torch.tensor(next_text, dtype=torch.long)
        with self.lm.depformer.streaming(1):
            for k in range(self.lm.dep_q):
                logits = self.lm.forward_depformer(k, prev[:, None, None], hidden)
                drawn = int(logits[0, 0, 0].argmax())
                audio.append(drawn)
                forced = dep_target[0, k] if dep_prov[0, k] else drawn
                prev = torch.tensor([forced], dtype=torch.long)
        out = self.tok.process(sampled_text, np.array([audio]))
        return None if out is None else out[0]

    # ---- prompt phases (LMGen.step_system_prompts) ----------------------------------------
    def voice_from_codes(self, codes: np.ndarray, save: bool = False) -> None:
        for t in range(codes.shape[1]):
            self.call(user=SINE, agent=codes[:, t], text=PAD, save=save)

    def voice_from_embeddings(self, embeddings: torch.Tensor, cache: torch.Tensor) -> None:
        dummy = np.array([self.lm.card] * 8)
        for e in embeddings:
            if self.tok.offset == 0:
                self.tok.prepare(dummy[None], dummy[None], np.array([PAD]))
            self.call(user=dummy, agent=dummy, text=PAD, embedding=e)
        self.tok.cache[:] = cache.numpy().reshape(self.tok.cache.shape)

    def silence(self, n: int) -> None:
        for _ in range(n):
            self.call(user=SINE, agent=SILENCE, text=PAD)

    def text_prompt(self, ids: list[int]) -> None:
        for i in ids:
            self.call(user=SINE, agent=SILENCE, text=int(i))

    def prompts(self, text_ids: list[int], silence: int = 6, codes=None, embeddings=None, cache=None) -> None:
        if embeddings is not None:
            self.voice_from_embeddings(embeddings, cache)
        else:
            self.voice_from_codes(codes)
        self.silence(silence)
        self.text_prompt(text_ids)
        self.silence(silence)
        self.mimi.reset_streaming()

    def encode_voice(self, pcm: np.ndarray) -> np.ndarray:
        """Streaming Mimi encode, frame by frame, last frame zero-padded: [8, T]."""
        n = -(-pcm.size // 1920)
        pcm = np.pad(pcm.astype(np.float32), (0, n * 1920 - pcm.size))
        codes = [
            self.mimi.encode(torch.from_numpy(pcm[i * 1920 : (i + 1) * 1920])[None, None]) for i in range(n)
        ]
        return torch.cat(codes, dim=-1)[0].numpy()

    # ---- conversation ---------------------------------------------------------------------
    def step(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1920 user samples -> (tokens [9], user codes [8], agent pcm [1920])."""
        codes = self.mimi.encode(torch.from_numpy(np.asarray(pcm, np.float32))[None, None])[0, :, 0].numpy()
        out = self.call(user=codes)
        agent = torch.tensor(out[1:9], dtype=torch.long)[None, :, None]
        pcm_out = self.mimi.decode(agent)[0, 0].numpy()
        return out[:9], codes, pcm_out
