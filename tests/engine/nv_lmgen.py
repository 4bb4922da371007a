"""A literal numpy transcription of NVIDIA PersonaPlex `LMGen` token bookkeeping (test oracle).

Mirrors `prepare_step_input` and `process_transformer_output` line by line (no model: the caller
supplies what the model would sample), so the MLX/numpy ring of rolekit can be checked against it.
"""

from __future__ import annotations

import numpy as np

DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


class NvLMGenTokens:
    def __init__(self, batch: int, text_card: int, card: int, dep_q: int = 16):
        self.max_delay = max(DELAYS)
        self.ct = self.max_delay + 3
        self.cache = np.full((batch, 17, self.ct), -2, np.int64)
        self.provided = np.zeros((batch, 17, self.ct), bool)
        self.initial = np.array([text_card] + [card] * 16, np.int64)
        self.offset = 0
        self.dep_q = dep_q

    def prepare(self, input_tokens=None, moshi_tokens=None, text_token=None):
        """Returns None at offset 0, else (input [B,17], provided_ [B,17], target_ [B,17])."""
        ct = self.ct
        if input_tokens is not None:  # [B, 8]
            for q in range(8):
                k = 9 + q
                w = (self.offset + DELAYS[k]) % ct
                self.cache[:, k, w] = input_tokens[:, q]
                self.provided[:, k, w] = True
        if moshi_tokens is not None:
            for q in range(8):
                k = 1 + q
                w = (self.offset + DELAYS[k]) % ct
                self.cache[:, k, w] = moshi_tokens[:, q]
                self.provided[:, k, w] = True
        if text_token is not None:
            w = (self.offset + DELAYS[0]) % ct
            self.cache[:, 0, w] = text_token
            self.provided[:, 0, w] = True
        for k, d in enumerate(DELAYS):
            if self.offset <= d:
                self.cache[:, k, self.offset % ct] = self.initial[k]
                self.provided[:, k, self.offset % ct] = True
        if self.offset == 0:
            self.cache[:, :, 0] = self.initial
            self.offset += 1
            return None
        self.mi = (self.offset - 1) % ct
        self.tp = self.offset % ct
        return (
            self.cache[:, :, self.mi].copy(),
            self.provided[:, :, self.tp].copy(),
            self.cache[:, :, self.tp].copy(),
        )

    def forced(self, prepared, sampled_text):
        """next_text_token and the depformer's (target, provided) as LMGen passes them."""
        _, prov, target = prepared
        next_text = np.where(prov[:, 0], target[:, 0], sampled_text)
        return next_text, target[:, 1:], prov[:, 1:]

    def process(self, sampled_text, sampled_audio):
        """sampled_audio: [B, dep_q]. Returns the output [B, 17] or None."""
        self.provided[:, :, self.mi] = False
        t = self.tp
        self.cache[:, 0, t] = np.where(~self.provided[:, 0, t], sampled_text, self.cache[:, 0, t])
        dq = self.dep_q
        self.cache[:, 1 : dq + 1, t] = np.where(
            ~self.provided[:, 1 : dq + 1, t], sampled_audio, self.cache[:, 1 : dq + 1, t]
        )
        if self.offset <= self.max_delay:
            self.offset += 1
            return None
        idx = (self.offset - self.max_delay + np.array(DELAYS[: dq + 1])) % self.ct
        out = np.stack([self.cache[:, k, idx[k]] for k in range(dq + 1)], axis=1)
        self.offset += 1
        return out
