"""The pytest plugin: scenario files as items (pytester, in-process, a fake backend, real espeak-ng)."""

import pytest
import soundfile  # noqa: F401
import soxr  # noqa: F401

# pytester's in-process runs drop the modules they import afterwards; C extensions (soxr) cannot be
# imported twice in one process, so everything the inner runs use is imported here first.
import rolekit.audio.tts  # noqa: F401
import rolekit.persona.compile  # noqa: F401
import rolekit.report.html  # noqa: F401
import rolekit.suite.execute  # noqa: F401
import rolekit.testing.pytest_plugin  # noqa: F401
import rolekit.text  # noqa: F401
from rolekit.report.results import RANDOM_MODEL_NOTE

pytest_plugins = ["pytester"]

FAKE = '''
import numpy as np
from rolekit.frames import FRAME_SAMPLES, PAD, StepOutput
from rolekit.text import TINY_TOKENIZER, Tokenizer


class Engine:
    """Speaks a tone (text id 100) from frame 10 to 30, whatever the user does."""

    def __init__(self, batch):
        self.batch, self.t = batch, 0

    def step(self, user):
        on = 10 <= self.t < 30
        self.t += 1
        pcm = np.full((self.batch, FRAME_SAMPLES), 0.2 if on else 0.0, np.float32)
        return StepOutput(pcm=pcm, text=np.full(self.batch, 100 if on else PAD), audio=np.zeros((self.batch, 8)))


class Backend:
    model_id, is_random = "fake", True

    def __init__(self, spec):
        self.tokenizer = Tokenizer(TINY_TOKENIZER)

    def piece(self, i):
        return " hello"

    def voice_frames(self, voice):
        return None

    def fit_batch(self, prefill, positions, wanted, share=1.0, reserve=0):
        return wanted

    def start(self, plans, seeds, frames=None):
        return Engine(len(plans)), 2000
'''

SCENARIO = """persona: shop
repeats: 2
lead_in: 0.2
tail: 2.0
user:
  - say: "hi"
expect:
  - agent_says: {contains: %s, source: monologue}
"""


PERSONA = "name: shop\nvoice: NATF2\nprompt: You work for Northwind and your name is Maya.\n"


@pytest.fixture
def tree(pytester, monkeypatch):
    monkeypatch.setenv("ROLEKIT_CACHE", str(pytester.path / "cache"))
    # the plugin is passed with -p below; an installed rolekit would also load it by entry point
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(fakebackend=FAKE)
    pytester.syspathinsert()
    (pytester.path / "personas").mkdir()
    (pytester.path / "personas" / "shop.yaml").write_text(PERSONA)
    (pytester.path / "scenarios").mkdir()
    return pytester


def _run(pytester, *args):
    return pytester.runpytest_inprocess(
        "-p",
        "rolekit.testing.pytest_plugin",
        "--rolekit-backend",
        "fakebackend:Backend",
        "--rolekit-no-transcribe",
        "--rolekit-out",
        str(pytester.path / "out"),
        *args,
    )


def test_scenarios_become_items_that_pass_and_fail(tree):
    (tree.path / "scenarios" / "good.yaml").write_text(SCENARIO % "hello")
    (tree.path / "scenarios" / "bad.yaml").write_text(SCENARIO % "refund")
    result = _run(tree, "scenarios", "-v")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*scenarios/bad.yaml::r1 FAILED*", "*scenarios/good.yaml::r0 PASSED*"])
    result.stdout.fnmatch_lines(["*agent_says*refund*"])
    assert (tree.path / "out" / "good" / "r1" / "conversation.wav").is_file()
    assert len((tree.path / "out" / "results.jsonl").read_text().splitlines()) == 4
    # the fake backend says its model is random: the last line says so
    random = [x for x in result.outlines if x.startswith("rolekit: random weights")]
    assert random == [f"rolekit: random weights (--rolekit-model tiny): {RANDOM_MODEL_NOTE}"]


def test_bad_scenario_is_a_collection_error_with_line(tree):
    (tree.path / "scenarios" / "broken.yaml").write_text(
        "persona: shop\nuser:\n  - say: hi\n    colour: red\n"
    )
    result = _run(tree, "scenarios")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*broken.yaml:4: user[[]0].colour: unknown field*"])


def test_named_folders_and_files_are_collected_other_yaml_needs_the_flag(tree):
    (tree.path / "myscen" / "deeper").mkdir(parents=True)
    (tree.path / "myscen" / "x.yaml").write_text(SCENARIO % "hello")
    (tree.path / "myscen" / "config.yaml").write_text("a: 1\n")  # not a scenario: never collected
    (tree.path / "myscen" / "deeper" / "y.yaml").write_text(SCENARIO % "hello")
    _run(tree, "myscen").assert_outcomes(passed=2)  # the README's `pytest myscen/`: x.yaml only
    _run(tree, "myscen/deeper/y.yaml").assert_outcomes(passed=2)
    _run(tree, ".").assert_outcomes()  # not named: a project's YAML files are not run by accident
    _run(tree, ".", "--rolekit-scenarios").assert_outcomes(passed=4)
