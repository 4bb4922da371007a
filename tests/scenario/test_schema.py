"""Scenario schema: strict fields, file:line:field errors, shorthands, matrix expansion, CLI exit 2."""

import pytest

from rolekit.cli.app import main
from rolekit.errors import DocumentError
from rolekit.scenario.expect import Expectation
from rolekit.scenario.schema import load_scenario
from rolekit.suite.plan import expand


def _problems(path):
    with pytest.raises(DocumentError) as err:
        load_scenario(path)
    return [str(p) for p in err.value.problems]


def test_every_problem_is_reported_with_file_line_field(write_scenario):
    p = write_scenario(
        "persona: shop\n"  # 1
        "seeed: 3\n"  # 2
        "user:\n"  # 3
        "  - say: hi\n"  # 4
        "  - say: hello\n"  # 5
        "    pause: 1.0\n"  # 6
        "  - at: 3\n"  # 7
        "    after: agent_done\n"  # 8
        "    say: x\n"  # 9
        "expect:\n"  # 10
        "  - max_response_latency: -1\n"  # 11
        "  - agent_says: {regex: '('}\n"  # 12
        "  - agent_says: {contains: a, any_of: [b]}\n"  # 13
        "  - must_yield: true\n"  # 14
        "    metric: {name: x, max: 1}\n"  # 15
        "  - agent_says: {contains: a, turn: 9}\n"  # 16
    )
    probs = _problems(p)
    f = str(p)
    assert f"{f}:2: seeed: unknown field" in probs
    assert f"{f}:5: user[1]: each user turn needs exactly one of say, audio, pause" in probs
    assert f"{f}:7: user[2]: use only one of at, after, interrupt (got at, after)" in probs
    assert f"{f}:11: expect[0].max_response_latency.max: Input should be greater than 0" in probs
    assert any(x.startswith(f"{f}:12: expect[1].agent_says.regex: invalid regular expression") for x in probs)
    assert f"{f}:13: expect[2].agent_says: give exactly one of contains, any_of, regex" in probs
    assert any(x.startswith(f"{f}:14: expect[3]: each expect item needs exactly one of") for x in probs)
    assert len(probs) == 7  # the turn-9 check needs a valid document first


def test_turn_index_must_exist(write_scenario):
    p = write_scenario("persona: shop\nuser:\n  - say: hi\nexpect:\n  - agent_says: {contains: a, turn: 1}\n")
    assert _problems(p) == [
        f"{p}:5: expect[0].agent_says.turn: turn 1 does not exist (user has 1 turns, numbered from 0)"
    ]


def test_malformed_yaml_and_missing_audio(write_scenario, tmp_path):
    p = write_scenario("persona: shop\nuser: [\n  - say: hi\n", name="bad.yaml")
    (msg,) = _problems(p)
    assert msg.startswith(f"{p}:3: YAML syntax error")
    q = write_scenario("persona: shop\nuser:\n  - say: hi\n  - audio: clips/none.wav\n", name="audio.yaml")
    assert _problems(q) == [f"{q}:4: user[1].audio: no such audio file: {tmp_path / 'clips' / 'none.wav'}"]


def test_shorthands_and_defaults(write_scenario):
    p = write_scenario(
        "persona: shop\nuser:\n  - say: hi\n  - interrupt: {after_agent_starts: 1.5}\n    say: stop\n"
        "expect:\n  - max_response_latency: 1.5\n  - yields_on_interrupt: {within: 1.0}\n"
        "  - must_not_interrupt: true\n  - not_contains: [goodbye]\n"
    )
    sc = load_scenario(p).scenario
    assert [e.kind for e in sc.expect] == [
        "max_response_latency",
        "must_yield",
        "must_not_interrupt",
        "not_says",
    ]
    assert sc.expect[0].check.max == 1.5 and sc.expect[1].check.within == 1.0
    assert sc.expect[3].check.strings == ["goodbye"]
    assert sc.user[1].kind == "interrupt" and sc.user[1].trigger == "interrupt" and sc.user[1].is_reactive
    assert sc.lead_in == 2.0 and sc.tail == 8.0 and sc.repeats == 1 and sc.tts.backend == "auto"
    assert Expectation.model_validate({"agent_says": {"any_of": ["a", "b"]}}).label.startswith("agent_says")


def test_matrix_is_cartesian_with_persona_and_repeats(write_scenario):
    p = write_scenario(
        "name: m\npersona: shop\nvars: {agent_name: Ann}\nseed: 10\nrepeats: 2\n"
        "matrix: {company: [A, B], persona: [shop, other]}\nuser:\n  - say: hi\n"
    )
    runs = expand(load_scenario(p))
    assert len(runs) == 8
    assert {(r.persona, r.vars["company"]) for r in runs} == {(a, b) for a in ("shop", "other") for b in "AB"}
    assert all(r.vars["agent_name"] == "Ann" for r in runs)
    assert sorted({r.seed for r in runs}) == [10, 11]
    assert len({r.run_id for r in runs}) == 8 and runs[0].run_id == "company-A_persona-shop-r0"


def test_cli_reports_bad_scenario_and_exits_2(write_scenario, capsys):
    p = write_scenario("persona: shop\nuser:\n  - sey: hi\n")
    with pytest.raises(SystemExit) as ex:
        main(["run", str(p), "--model", "tiny", "--no-transcribe"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert f"{p}:3: user[0].sey: unknown field" in err and "Traceback" not in err


def test_cli_missing_paths_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        main(["test", str(tmp_path / "nothing"), "--model", "tiny"])
    assert ex.value.code == 2
    assert "no such scenario file or folder" in capsys.readouterr().err
