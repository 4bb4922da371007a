"""LmConfig: every size of the PersonaPlex / Moshi-family LM, with named factories.

`from_kyutai` reads the `lm_kwargs` of a Kyutai-style config.json; `from_mlx_config` also reads the
`temporal` / `depformer` blocks of an aufklarer MLX config.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rolekit.errors import ModelError, Problem

PERSONAPLEX_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)


@dataclass(frozen=True)
class LmConfig:
    """Sizes of the temporal transformer and the depformer (PersonaPlex 7B by default)."""

    dim: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    hidden_scale: float = 4.125  # dim_feedforward = int(hidden_scale * dim); gated hidden = 2/3 of it
    context: int = 3000  # temporal ring KV capacity (steps)
    max_period: float = 10_000.0  # RoPE base
    norm_eps: float = 1e-8  # RMSNorm in fp32
    text_card: int = 32000  # text_emb has text_card + 1 rows (start token), text_linear text_card outputs
    card: int = 2048  # audio vocabulary; emb has card + 1 rows (start token)
    n_q: int = 16  # audio streams fed to the temporal transformer (8 agent + 8 user)
    dep_q: int = 16  # depformer steps (codebooks predicted per frame)
    delays: tuple[int, ...] = PERSONAPLEX_DELAYS
    depformer_dim: int = 1024
    depformer_num_layers: int = 6
    depformer_num_heads: int = 16
    depformer_dim_feedforward: int = 4224  # int(4.125 * 1024); gated hidden 2816
    existing_text_padding_id: int = 3
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown lm_kwargs, kept verbatim

    @property
    def num_codebooks(self) -> int:
        return 1 + self.n_q

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden(self) -> int:
        """Gated FFN hidden size of the temporal transformer (11264 for 7B)."""
        return _gated_hidden(self.dim, int(self.hidden_scale * self.dim))

    @property
    def depformer_hidden(self) -> int:
        """Gated FFN hidden size of the depformer (2816 for 7B)."""
        return _gated_hidden(self.depformer_dim, self.depformer_dim_feedforward)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def to_kyutai(self) -> dict[str, Any]:
        """lm_kwargs in Kyutai's loaders.py spelling (context of the depformer is ignored there)."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            dim=self.dim,
            text_card=self.text_card,
            existing_text_padding_id=self.existing_text_padding_id,
            n_q=self.n_q,
            dep_q=self.dep_q,
            card=self.card,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            hidden_scale=self.hidden_scale,
            causal=True,
            layer_scale=None,
            context=self.context,
            max_period=self.max_period,
            gating="silu",
            norm="rms_norm_f32",
            positional_embedding="rope",
            depformer_dim=self.depformer_dim,
            depformer_dim_feedforward=self.depformer_dim_feedforward,
            depformer_num_heads=self.depformer_num_heads,
            depformer_num_layers=self.depformer_num_layers,
            depformer_layer_scale=None,
            depformer_multi_linear=True,
            depformer_context=self.dep_q,
            depformer_max_period=self.max_period,
            depformer_gating="silu",
            depformer_pos_emb="none",
            depformer_weights_per_step=True,
            delays=list(self.delays),
        )
        return out

    @classmethod
    def from_kyutai(cls, lm_kwargs: dict[str, Any], source: str = "config.json") -> LmConfig:
        """Build from Kyutai's `lm_kwargs`; values rolekit cannot run raise a ModelError."""
        kw = dict(lm_kwargs)
        problems = []
        fixed = {
            "gating": "silu",
            "norm": "rms_norm_f32",
            "positional_embedding": "rope",
            "depformer_multi_linear": True,
            "depformer_weights_per_step": True,
            "depformer_pos_emb": "none",
            "depformer_gating": "silu",
            "layer_scale": None,
            "depformer_layer_scale": None,
            "causal": True,
        }
        for key, want in fixed.items():
            if key in kw and kw[key] != want:
                problems.append(
                    Problem(f"unsupported value {kw[key]!r} (rolekit runs {want!r})", source, None, key)
                )
        if problems:
            raise ModelError(problems=problems)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        args: dict[str, Any] = {}
        for key in known:
            if key in kw:
                args[key] = kw[key]
        dim = int(args.get("depformer_dim", cls.depformer_dim))
        if "depformer_dim_feedforward" not in kw:
            args["depformer_dim_feedforward"] = int(float(kw.get("hidden_scale", cls.hidden_scale)) * dim)
        if "delays" in args:
            args["delays"] = tuple(int(d) for d in args["delays"])
        if args.get("context") is None and "context" in args:
            problems.append(Problem("a finite context is required", source, None, "context"))
            raise ModelError(problems=problems)
        extra = {k: v for k, v in kw.items() if k not in known and k not in fixed}
        cfg = cls(**args, extra=extra)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        problems = []
        if len(self.delays) != self.num_codebooks:
            problems.append(
                Problem(f"{len(self.delays)} delays for {self.num_codebooks} streams", source, None, "delays")
            )
        if self.dep_q > self.n_q:
            problems.append(Problem(f"dep_q {self.dep_q} > n_q {self.n_q}", source, None, "dep_q"))
        if self.dim % self.num_heads or self.depformer_dim % self.depformer_num_heads:
            problems.append(Problem("dim must be divisible by num_heads", source, None, "num_heads"))
        if problems:
            raise ModelError(problems=problems)


def _gated_hidden(dim: int, dim_feedforward: int) -> int:
    # Kyutai ActivationGating: 21/8 * dim when ff == 4 * dim, else 2/3 of ff.
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


def personaplex_7b() -> LmConfig:
    """NVIDIA PersonaPlex 7B v1 (Moshi 7B temporal transformer, 16-step depformer)."""
    return LmConfig()


def tiny(**overrides: Any) -> LmConfig:
    """A small PersonaPlex-shaped config for tests and the `tiny` model (dims divisible by 64)."""
    base = LmConfig(
        dim=64,
        num_layers=2,
        num_heads=4,
        hidden_scale=3.0,  # gated hidden 128: every linear divisible by the group size 64
        context=24,
        text_card=96,
        card=64,
        n_q=16,
        dep_q=16,
        depformer_dim=64,
        depformer_num_layers=2,
        depformer_num_heads=4,
        depformer_dim_feedforward=192,
    )
    return replace(base, **overrides)


def from_mlx_config(config: dict[str, Any], source: str = "config.json") -> LmConfig:
    """Read a rolekit / aufklarer MLX config.json: `lm_kwargs` when present, else the blocks."""
    if isinstance(config.get("lm_kwargs"), dict):
        return LmConfig.from_kyutai(config["lm_kwargs"], source)
    temporal = config.get("temporal") or {}
    depformer = config.get("depformer") or {}
    if not isinstance(temporal, dict) or not isinstance(depformer, dict):
        raise ModelError(problems=[Problem("temporal/depformer must be objects", source, None, "temporal")])
    base = personaplex_7b()
    t = {**asdict(base), **{k: v for k, v in temporal.items() if k in asdict(base)}}
    t.pop("extra", None)
    dep_steps = int(depformer.get("num_steps", depformer.get("dep_q", base.dep_q)))
    t["dep_q"] = dep_steps
    t["depformer_dim"] = int(depformer.get("dim", base.depformer_dim))
    t["depformer_num_layers"] = int(depformer.get("num_layers", base.depformer_num_layers))
    t["depformer_num_heads"] = int(depformer.get("num_heads", base.depformer_num_heads))
    if "dim_feedforward" in depformer:  # aufklarer stores the gated hidden (2816): invert 2/3
        t["depformer_dim_feedforward"] = int(depformer["dim_feedforward"]) * 3 // 2
    if "delays" in config:
        t["delays"] = tuple(int(d) for d in config["delays"])
    else:
        t["delays"] = tuple(t["delays"])
    # aufklarer's converter writes `temporal.n_q: 8`, the codebooks of ONE audio stream; the LM reads
    # both streams (agent + user), one delay each after the text stream.
    t["n_q"] = len(t["delays"]) - 1
    cfg = LmConfig(**t)
    cfg.validate(source)
    return cfg


def to_mlx_blocks(cfg: LmConfig) -> dict[str, Any]:
    """The aufklarer-style `temporal` / `depformer` / `delays` blocks written next to `lm_kwargs`."""
    return {
        "temporal": {
            "dim": cfg.dim,
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "hidden_scale": cfg.hidden_scale,
            "context": cfg.context,
            "max_period": cfg.max_period,
            "text_card": cfg.text_card,
            "card": cfg.card,
            "n_q": cfg.n_q,
        },
        "depformer": {
            "dim": cfg.depformer_dim,
            "num_layers": cfg.depformer_num_layers,
            "num_heads": cfg.depformer_num_heads,
            "dim_feedforward": cfg.depformer_hidden,
            "num_steps": cfg.dep_q,
            "context": cfg.dep_q,
        },
        "delays": list(cfg.delays),
    }
