"""Property-based fuzzing of everything a careless or hostile user can hand rolekit: persona documents
(structure, types, numbers, unicode, paths, templates), raw YAML, scenario documents and command
lines. Every example runs the real CLI in-process (no model runs: `rolekit test` gets a backend whose
engine refuses to start) and must end with exit code 0, 1 or 2, no traceback, and an exit 2 that names
a file or an option.

Profiles (`ROLEKIT_FUZZ_PROFILE`): `ci` (default, derandomized: the same examples on every run,
>= 10,000 in total) and `quick` (a tenth). The counts per category are printed at the end of the
session (tests/hardening/conftest.py).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hardening.cli import assert_clean, invoke

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "quick", parent=settings.get_profile("ci"), derandomize=False, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("ROLEKIT_FUZZ_PROFILE", "ci")
SCALE = 0.1 if PROFILE == "quick" else 1.0
EXAMPLES = {"persona": 3000, "yaml": 1500, "template": 1500, "scenario": 1500, "argv": 3000}
MIN_TOTAL = 10_000
COUNTS: Counter[str] = Counter()  # examples run per category (printed by conftest)
TIMES: dict[str, float] = {}  # wall and CPU seconds of the module (printed by conftest)
CODES: Counter[tuple[str, int]] = Counter()
CPU: Counter[str] = Counter()  # CPU seconds inside the CLI per category


def _examples(category: str) -> settings:
    return settings(settings.get_profile(PROFILE), max_examples=max(10, int(EXAMPLES[category] * SCALE)))


# --- the project every example runs in -------------------------------------------------------------

SHOP = (
    "prompt: 'You work for {{ company }} which is an online shop and your name is Maya. "
    "Information: refunds within 30 days.'\nrole: customer-service\n"
    "variables: {company: {default: Contoso}}\n"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """personas/, scenarios/, sample audio and damaged folders; cwd and env for the whole module."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "personas" / "partials").mkdir(parents=True)
    (root / "personas" / "shop.yaml").write_text(SHOP)
    (root / "personas" / "partials" / "facts.j2").write_text("Information: {{ company }} ships fast.")
    (root / "scenarios").mkdir()
    (root / "secret").mkdir()
    (root / "secret" / "key.txt").write_text("TOPSECRET")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a folder")
    sf.write(str(root / "user.wav"), np.zeros(4800, np.float32), 24000)
    (root / "garbage.wav").write_bytes(b"RIFF\x00\x00garbage")
    (root / "bad.safetensors").write_bytes(b"\xff" * 16)
    (root / "run").mkdir()  # a damaged run folder: every file there, none valid
    for name in ("conversation.wav", "channels.json", "monologue.json", "events.json", "timings.json"):
        (root / "run" / name).write_text("{")
    (root / "run" / "meta.json").write_text("[]")
    wall, cpu = time.perf_counter(), time.process_time()
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.chdir(root)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("ROLEKIT_ALLOW_PATH", None)
    import rolekit.scenario.timeline as timeline
    import rolekit.suite.backend as backend

    defaults, mlx_backend = timeline.build_timeline.__defaults__, backend.MlxBackend
    timeline.build_timeline.__defaults__ = (_beep,)  # no espeak-ng: a tone per word
    backend.MlxBackend = _NoEngine  # no model runs: every conversation is an error row
    import rolekit.persona.render as render
    from rolekit.persona.sandbox import Limits

    make_environment = render.make_environment  # nested loops stop after 0.1 s instead of 2 s
    render.make_environment = lambda persona, limits=None: make_environment(persona, Limits(seconds=0.1))
    try:
        yield root
    finally:
        timeline.build_timeline.__defaults__ = defaults
        backend.MlxBackend = mlx_backend
        render.make_environment = make_environment
        TIMES.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def _beep(request) -> np.ndarray:
    words = max(1, min(20, len(request.text.split())))
    return np.full(words * 2400, 0.1, np.float32)


class _NoEngine:
    """The suite's backend with the real tiny tokenizer and voice-file checks, but no engine."""

    is_random = True

    def __init__(self, spec: str, loader=None, warm=None) -> None:
        """Same signature as MlxBackend(spec, loader, warm); the loader is never called."""
        from rolekit.text import Tokenizer, tokenizer_path

        self.model_id = spec
        self._tokenizer = Tokenizer(tokenizer_path(spec))

    @property
    def tokenizer(self):
        return self._tokenizer

    def piece(self, text_id: int) -> str:
        return self._tokenizer.piece(text_id)

    def voice_frames(self, voice: str) -> int:
        from rolekit.persona.voices import is_voice_file, voice_frames

        return voice_frames(Path(voice)) if is_voice_file(voice) else 50

    def fit_batch(
        self, prefill: int, positions: int, wanted: int, share: float = 1.0, reserve: int = 0
    ) -> int:
        return wanted

    def start(self, plans, seeds, frames=None):
        raise RuntimeError("fuzz: no engine")


def _check(category: str, argv: list[str]) -> None:
    cpu = time.process_time()
    result = invoke(argv)
    CPU[category] += time.process_time() - cpu
    COUNTS[category] += 1
    CODES[(category, result.code)] += 1
    assert_clean(result, argv)
    assert "TOPSECRET" not in result.text, argv


# --- value strategies ------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-5, 300),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63, 10**24, -(10**24)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, -1e-300, 0.5, 240.0, 240.01]),
)
PATHS = st.sampled_from(
    [
        "../secret/key.txt",
        "/etc/passwd",
        "partials/facts.j2",
        "partials/../../secret/key.txt",
        "~/.ssh/id_rsa",
        "",
        ".",
        "..",
        "/",
        "nope.j2",
        "../user.wav",
        "../garbage.wav",
        "../bad.safetensors",
        "voices/x.safetensors",
        "/dev/null",
        "/proc/self/environ",
        "shop.yaml",
        "../personas/shop.yaml",
        "x" * 300,
        "dir/\x00nul",
        "é/ü.yaml",
    ]
)
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40
)  # unicode, no lone surrogates (YAML can't hold them)
SNIPPETS = st.sampled_from(
    [
        "You are {{ company }}.",
        "{{ {}.pop('x') }}",
        "{{ [].pop() }}",
        "{{ '{0}'.format() }}",
        "{{ 1/0 }}",
        "{{ undefined_name }}",
        "{{ company.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% include 'partials/facts.j2' %}",
        "{% include '../secret/key.txt' %}",
        "{% include '/etc/passwd' %}",
        "{% include 'p.yaml' %}",
        "{% extends 'p.yaml' %}",
        "{% import 'p.yaml' as x %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
        "{{ 'x'.ljust(999999999) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ 2 ** 99999999 }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{{ lipsum(100000) }}",
        "{{ range(10)|list }}",
        "{{ x|int }}",
        "{% if %}",
        "{{",
        "{% endfor %}",
        "{{ 'a'|center(99999999) }}",
        "{{ company|wordwrap(0) }}",
        "{{ [1,2]|batch(0)|list }}",
        "{{ (company * 3)|truncate(-5) }}",
        "{{ cycler() }}",
        "{{ joiner()() }}",
        "{{ dict(a=1).items()|list|random }}",
        "{{ 'x'|indent(999999999) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ ((((((((((((((((((((1)))))))))))))))))))) }}",
        "",
        "TODO",
        "<system>",
    ]
)
TEMPLATES = st.lists(st.one_of(SNIPPETS, TEXT), min_size=1, max_size=4).map("\n".join)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, PATHS, SNIPPETS)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.sampled_from(["type", "default"])), inner, max_size=4),
    ),
    max_leaves=12,
)


def _doc(fields: dict, base: dict | None = None) -> st.SearchStrategy[dict]:
    """A document: either any subset of `fields` (each from its strategy, or any value), or a valid
    `base` with up to two fields replaced and maybe one dropped; sometimes plus an unknown key.
    Only the chosen fields' values are drawn (drawing all of them is most of the cost)."""
    keys = list(fields)

    @st.composite
    def build(draw) -> dict:
        mutate = base is not None and draw(st.integers(0, 3)) > 0
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=2 if mutate else len(keys)))
        doc = dict(base) if mutate else {}
        for key in chosen:
            doc[key] = draw(st.one_of(fields[key], fields[key], VALUES))
        if mutate and draw(st.integers(0, 4)) == 0:
            doc.pop(draw(st.sampled_from(list(base))), None)
        if draw(st.integers(0, 3)) == 0:
            doc[draw(TEXT)] = draw(VALUES)
        return doc

    return build()


VARIABLE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["str", "int", "float", "bool", "list", "dict", 3]),
        "default": st.one_of(NUMBERS, TEXT, st.booleans(), st.lists(TEXT, max_size=2)),
        "required": st.booleans(),
        "description": TEXT,
    },
)
PERSONA_BASE = {
    "name": "p",
    "role": "customer-service",
    "prompt": "You work for {{ company }} which is a shop and your name is Maya. Information: 30 days.",
    "variables": {"company": {"default": "Contoso"}},
}
PERSONA = _doc(
    {
        "name": st.sampled_from(["p", "P!", "", "shop", "a" * 200]),
        "description": TEXT,
        "role": st.sampled_from(
            ["assistant", "customer-service", "tutor", "casual", "outbound-caller", "pirate"]
        ),
        "voice": st.one_of(st.sampled_from(["NATF2", "natm1", "XYZ9"]), PATHS),
        "language": st.sampled_from(["en", "fr", "", "EN-us"]),
        "prompt": TEMPLATES,
        "prompt_file": PATHS,
        "variables": st.dictionaries(
            st.sampled_from(["company", "x", "bad name", "__class__"]), VARIABLE, max_size=3
        ),
        "extends": st.one_of(st.sampled_from(["shop", "p", "missing"]), PATHS),
        "sampling": st.fixed_dictionaries(
            {},
            optional={
                "text_temperature": NUMBERS,
                "text_top_k": NUMBERS,
                "audio_temperature": NUMBERS,
                "wat": NUMBERS,
            },
        ),
        "tags": st.lists(TEXT, max_size=2),
    },
    PERSONA_BASE,
)
VAR_ARGS = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["company", "x", "nope", "bad name"]),
        st.one_of(TEXT, NUMBERS.map(str)),
    ),
    max_size=3,
)
PERSONA_COMMANDS = st.sampled_from(
    [
        ["persona", "render", "p"],
        ["persona", "render", "p", "--wrapped"],
        ["persona", "show", "p"],
        ["persona", "show", "personas/p.yaml", "--json"],
        ["persona", "compile", "p", "--json"],
        ["persona", "lint", "personas/p.yaml", "--json"],
        ["persona", "lint", "personas", "--strict"],
        ["persona", "list", "--json"],
    ]
)


def _write_persona(project: Path, text: str) -> None:
    (project / "personas" / "p.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@_examples("persona")
@given(doc=PERSONA, command=PERSONA_COMMANDS, var=VAR_ARGS)
def test_fuzz_persona_documents(project, doc, command, var):
    _write_persona(project, _dump(doc))
    _check(
        "persona",
        [*command, *(a for v in var for a in ("--var", v))]
        if command[1] in ("render", "compile")
        else command,
    )


RAW_YAML = st.one_of(
    TEXT,
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    st.sampled_from(
        [
            "a: &a [*a]",
            "prompt: !!python/object/apply:os.system ['echo x']",
            "prompt: !!binary aGk=",
            "[" * 300 + "]" * 300,
            "prompt: hi\nprompt: again",
            "- a\n- b",
            "prompt: |\n  x\n bad indent",
            "prompt: 'unterminated",
            "prompt: hi\nvariables: {a: &x {type: int}, b: *x}",
            "? [a, b]\n: 1",
            "prompt: {a: 1}",
            "\ufeffprompt: bom",
            "prompt: hi\n...\n---\nprompt: two",
            'prompt: "\\ud800"',
        ]
    ),
    st.integers(1, 9).map(
        lambda n: (
            "\n".join(
                [f"a0: &a0 [{','.join(['lol'] * 10)}]"]
                + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, n)]
            )
            + "\nprompt: hi"
        )
    ),
)


@_examples("yaml")
@given(
    text=RAW_YAML,
    prefix=st.sampled_from(["", "prompt: You are kind.\n", "name: p\n"]),
    command=PERSONA_COMMANDS,
)
def test_fuzz_raw_yaml(project, text, prefix, command):
    _write_persona(project, prefix + text)
    _check("yaml", command)


@_examples("template")
@given(
    template=TEMPLATES,
    var=VAR_ARGS,
    command=st.sampled_from([["persona", "render", "p"], ["persona", "lint", "personas/p.yaml"]]),
)
def test_fuzz_templates(project, template, var, command):
    _write_persona(
        project,
        _dump(
            {
                "prompt": template,
                "variables": {"company": {"default": "Contoso"}, "x": {"type": "int", "default": 1}},
            }
        ),
    )
    args = [a for v in var for a in ("--var", v)] if command[1] == "render" else []
    _check("template", [*command, *args])


TURN = _doc(
    {
        "say": st.one_of(st.sampled_from(["hello there", "", "   "]), TEXT),
        "audio": PATHS,
        "pause": NUMBERS,
        "at": NUMBERS,
        "after": st.sampled_from(["agent_done", "never"]),
        "silence": NUMBERS,
        "timeout": NUMBERS,
        "interrupt": st.fixed_dictionaries({}, optional={"after_agent_starts": NUMBERS}),
        "voice": TEXT,
        "rate": NUMBERS,
        "gain_db": NUMBERS,
    },
    {"say": "hello there"},
)
EXPECT = st.one_of(
    st.fixed_dictionaries(
        {
            "agent_says": st.fixed_dictionaries(
                {},
                optional={
                    "contains": TEXT,
                    "any_of": st.lists(TEXT, max_size=2),
                    "regex": st.sampled_from(["(", "a+", "(?i)x"]),
                    "turn": NUMBERS,
                    "source": st.sampled_from(["whisper", "monologue", "x"]),
                },
            )
        }
    ),
    st.fixed_dictionaries({"max_response_latency": NUMBERS}),
    st.fixed_dictionaries(
        {"must_yield": st.fixed_dictionaries({}, optional={"within": NUMBERS, "turn": NUMBERS})}
    ),
    st.fixed_dictionaries(
        {
            "metric": st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["dead_air_ratio", "nope", ""]),
                    "min": NUMBERS,
                    "max": NUMBERS,
                },
            )
        }
    ),
    st.dictionaries(TEXT, VALUES, max_size=2),
)
SCENARIO = _doc(
    {
        "name": st.sampled_from(["s", "bad name", "", "../x"]),
        "persona": st.one_of(st.sampled_from(["shop", "missing", "p"]), PATHS),
        "vars": st.dictionaries(st.sampled_from(["company", "nope"]), VALUES, max_size=2),
        "voice": st.one_of(st.sampled_from(["NATF2", "zzz"]), PATHS),
        "matrix": st.dictionaries(
            st.sampled_from(["company", "voice", "persona", "nope"]),
            st.lists(
                st.one_of(st.sampled_from(["Acme Inc", "Acme-Inc", "Zürich", "Zärich"]), TEXT, NUMBERS),
                max_size=3,
            ),
            max_size=2,
        ),
        "seed": NUMBERS,
        "repeats": st.sampled_from([1, 2, 0, -1, 1001, "x", 1.5, None]),
        "lead_in": NUMBERS,
        "tail": NUMBERS,
        "tts": st.fixed_dictionaries(
            {}, optional={"backend": st.sampled_from(["auto", "say", "x"]), "rate": NUMBERS, "voice": TEXT}
        ),
        "vad_threshold_db": NUMBERS,
        "user": st.lists(TURN, max_size=3),
        "expect": st.lists(EXPECT, max_size=3),
        "tags": st.lists(TEXT, max_size=2),
    },
    {
        "persona": "shop",
        "lead_in": 0.2,
        "tail": 0.4,
        "user": [{"say": "hello there"}, {"after": "agent_done", "timeout": 1.0, "say": "thanks"}],
        "expect": [{"agent_says": {"contains": "w", "source": "monologue"}}],
    },
)


@_examples("scenario")
@given(
    doc=SCENARIO,
    resume=st.booleans(),
    junit=st.sampled_from([None, None, None, "junit.xml", "empty", "file.txt/x.xml"]),
)
def test_fuzz_scenarios(project, doc, resume, junit):
    (project / "scenarios" / "s.yaml").write_text(_dump(doc), encoding="utf-8")
    argv = ["test", "scenarios/s.yaml", "-m", "tiny", "--no-transcribe", "--out", "out"]
    argv += ["--resume"] if resume else []
    argv += ["--junit", junit] if junit else []
    _check("scenario", argv)


ARG_VALUES = st.one_of(
    st.sampled_from(
        ["nan", "inf", "-inf", "-1", "0", "1", "3", "1e309", "123456789012345678901234", "abc", "", " "]
    ),
    st.sampled_from(
        [
            "user.wav",
            "garbage.wav",
            "bad.safetensors",
            "empty",
            "file.txt",
            "file.txt/x",
            "missing",
            "run",
            "/dev/null",
            "é.wav",
            "secret",
        ]
    ),
    TEXT,
)
OPTIONS = {
    "respond": [
        "--input",
        "--output",
        "--voice",
        "--text-out",
        "--tokens-out",
        "--tail",
        "--seed",
        "--temp-text",
        "--temp-audio",
        "--topk-text",
        "--topk-audio",
        "--prompt",
        "--persona",
        "--var",
        "--model",
    ],
    "test": ["--filter", "--out", "--junit", "--jobs", "--whisper", "--model"],
    "run": ["--out", "--junit", "--jobs", "--repeats", "--whisper", "--model"],
    "report": ["--whisper"],
    "transcribe": ["--whisper"],
    "convert": ["--bits"],
}
POSITIONAL = {
    "respond": [],
    "test": ["scenarios"],
    "run": ["scenarios/s.yaml"],
    "report": ["run"],
    "transcribe": ["run"],
    "convert": ["empty", "out-model"],
}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from([*OPTIONS, "whisper import-ct2", "persona", "voices", "nonsense"]))
    if command == "whisper import-ct2":
        return ["whisper", "import-ct2", draw(ARG_VALUES), draw(ARG_VALUES)]
    if command == "persona":
        return [
            "persona",
            draw(st.sampled_from(["show", "render", "compile", "lint", "x"])),
            draw(ARG_VALUES),
        ]
    if command in ("voices", "nonsense"):
        return [command, *draw(st.lists(ARG_VALUES, max_size=2))]
    argv = [command]
    positional = [draw(st.one_of(st.just(p), ARG_VALUES)) for p in POSITIONAL[command]]
    argv += positional
    for option in draw(st.lists(st.sampled_from([*OPTIONS[command], "--bogus"]), max_size=5)):
        argv += [option, draw(ARG_VALUES)]
    if command in ("respond", "test", "run") and "--model" not in argv:
        argv += ["--model", "empty"]  # never a real model: a folder without one
    if command in ("test", "run"):
        argv += ["--no-transcribe"]
    return argv


@_examples("argv")
@given(argv=command_lines())
def test_fuzz_command_lines(project, argv):
    (project / "scenarios" / "s.yaml").write_text("persona: shop\nuser:\n  - say: hi\n")
    if "--model" in argv and argv[argv.index("--model") + 1] == "tiny":
        argv[argv.index("--model") + 1] = "empty"
    _check("argv", argv)


def test_fuzz_total():
    """Every category ran in this session, together at least MIN_TOTAL examples in profile ci."""
    missing = [c for c in EXAMPLES if not COUNTS[c]]
    assert not missing, f"run the whole module: categories {missing} did not run (counts: {dict(COUNTS)})"
    assert sum(COUNTS.values()) >= (MIN_TOTAL if PROFILE == "ci" else MIN_TOTAL * SCALE), dict(COUNTS)
