"""Lint rules fire on the failures they describe and stay quiet on good personas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rolekit.persona.lint import RULES, Finding, lint_file, lint_paths
from rolekit.persona.loader import PACKAGED_PERSONAS
from rolekit.text import Tokenizer

CS_OK = "You work for Contoso which is a bank and your name is Sam. Information: the branch opens at nine."


def lint_text(write: Callable[..., Path], tokenizer: Tokenizer, body: str, name: str = "p") -> list[Finding]:
    return lint_file(write(name, body), None, tokenizer)


def rules(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def test_sample_personas_lint_clean(tokenizer: Tokenizer) -> None:
    files = sorted(PACKAGED_PERSONAS.glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "refund-desk",
        "spanish-tutor",
        "dental-receptionist",
        "appointment-caller",
    }
    assert lint_paths([PACKAGED_PERSONAS], None, tokenizer) == []


def test_good_persona_of_each_role_is_clean(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    assert lint_text(write, tokenizer, f'role: customer-service\nprompt: "{CS_OK}"\n') == []
    assert (
        lint_text(write, tokenizer, "role: assistant\nprompt: You are a wise and friendly teacher.\n") == []
    )
    assert lint_text(write, tokenizer, "role: casual\nprompt: You enjoy having a good conversation.\n") == []
    caller = (
        "role: outbound-caller\nprompt: You are Jo, calling Sam on behalf of Contoso to confirm a visit.\n"
    )
    assert lint_text(write, tokenizer, caller) == []


@pytest.mark.parametrize(
    "leftover",
    ["for X which", "your name is {name}.", "at <company> today", "TODO add hours", "for [company name]."],
)
def test_placeholders_are_errors_with_lines(
    write: Callable[..., Path], tokenizer: Tokenizer, leftover: str
) -> None:
    body = f"role: assistant\nprompt: |\n  You are a helpful guide.\n  You work {leftover} here.\n"
    (f,) = lint_text(write, tokenizer, body)
    assert (f.rule, f.severity, f.line) == ("placeholder", "error", 4)
    assert f.hint


def test_placeholder_rule_ignores_system_tags_and_words(
    write: Callable[..., Path], tokenizer: Tokenizer
) -> None:
    body = "role: assistant\nprompt: <system> You are an X-ray technician at Xavier's. <system>\n"
    assert lint_text(write, tokenizer, body) == []


def test_length_warning(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    body = (
        "role: assistant\nprompt: |\n  You are a guide. " + "Keep your answers short and kind. " * 60 + "\n"
    )
    (f,) = lint_text(write, tokenizer, body)
    assert (f.rule, f.severity) == ("length", "warning") and "prefill" in f.message


def test_language_rules(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    (f,) = lint_text(write, tokenizer, "role: assistant\nlanguage: es\nprompt: You are a guide.\n")
    assert (f.rule, f.line) == ("language", 2)
    spanish = "Eres un asistente muy amable. Respondes preguntas sobre el horario de la tienda y los pedidos pendientes."
    found = lint_text(write, tokenizer, f"role: assistant\nprompt: {spanish}\n")
    assert "language" in rules(found)


def test_outbound_caller_written_like_a_receptionist(
    write: Callable[..., Path], tokenizer: Tokenizer
) -> None:
    body = "role: outbound-caller\nprompt: You are Sarah. Thank you for calling Wang Steak, how can I help you?\n"
    found = lint_text(write, tokenizer, body)
    assert rules(found).count("role-wording") == 2 and all(f.severity == "warning" for f in found)
    body = "role: outbound-caller\nprompt: Your name is Sarah and you book tables for clients.\n"
    assert set(rules(lint_text(write, tokenizer, body))) == {"role-wording", "template-form"}


def test_inbound_roles_worded_like_outbound(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    body = f'role: customer-service\nprompt: "{CS_OK} You are calling the customer about a late payment."\n'
    assert rules(lint_text(write, tokenizer, body)) == ["role-wording"]


def test_customer_service_form_and_facts(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    found = lint_text(
        write, tokenizer, "role: customer-service\nprompt: You help customers of Contoso bank.\n"
    )
    assert sorted(rules(found)) == ["facts", "template-form"]
    assert any("Information:" in f.hint for f in found)


def test_assistant_casual_and_tutor_forms(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    assert rules(lint_text(write, tokenizer, "role: assistant\nprompt: Be a helpful guide.\n")) == [
        "template-form"
    ]
    assert rules(lint_text(write, tokenizer, "role: casual\nprompt: You are chatty.\n")) == ["template-form"]
    assert rules(lint_text(write, tokenizer, "role: tutor\nprompt: You are kind and patient.\n")) == [
        "role-wording"
    ]


def test_unused_variable_and_name_mismatch(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    body = "name: other\nrole: assistant\nvariables:\n  city: {default: Paris}\nprompt: You are a guide.\n"
    found = {f.rule: f for f in lint_text(write, tokenizer, body, name="p")}
    assert set(found) == {"unused-variable", "name-mismatch"}
    assert found["unused-variable"].line == 4 and found["name-mismatch"].line == 1


def test_invalid_documents_are_lint_errors(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    (f,) = lint_text(write, tokenizer, "role: assistant\nvoise: NATF1\nprompt: You are a guide.\n")
    assert (f.rule, f.severity, f.line) == ("invalid", "error", 2) and "voise" in f.message
    (f,) = lint_text(write, tokenizer, "prompt: You are {{ who }}.\n")
    assert (f.rule, f.line) == ("invalid", 1) and "who" in f.message


def test_required_variables_get_sample_values(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    body = "role: assistant\nvariables:\n  who: {required: true}\nprompt: You are a guide for {{ who }}.\n"
    assert lint_text(write, tokenizer, body) == []


def test_findings_print_file_line_severity_and_hint(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    path = write("p", "role: assistant\nprompt: You are a TODO.\n")
    (f,) = lint_file(path, None, tokenizer)
    assert str(f).startswith(f"{path.resolve()}:2: error [placeholder]") and "hint:" in str(f)
    assert set(f.to_dict()) == {"rule", "severity", "message", "file", "line", "hint"}
    assert all(sev in ("error", "warning") for sev, _ in RULES.values())


def test_every_problem_is_reported_in_one_run(write: Callable[..., Path], tokenizer: Tokenizer) -> None:
    # a schema error does not hide the prompt's placeholders
    body = "role: customer-service\ncolour: red\nprompt: |\n  You work for X which is a shop.\n  TODO hours\n"
    found = lint_text(write, tokenizer, body)
    assert sorted((f.rule, f.line) for f in found) == [("invalid", 2), ("placeholder", 4), ("placeholder", 5)]
    # an undeclared variable does not hide placeholders or the role rules
    body = (
        "role: customer-service\nprompt: |\n  You work for {{ shop }} which is a shop and your name is Z.\n"
    )
    found = lint_text(write, tokenizer, body)
    assert sorted(rules(found)) == ["facts", "invalid", "placeholder"]
    assert [f.line for f in found if f.rule == "placeholder"] == [3]
