"""``poolwarden policy check --policy FILE``: validate a policy file and say what it means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolwarden.cli import main
from poolwarden.policy import BreakerPolicy

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "policies"


@pytest.mark.parametrize("name", ["pybreaker.toml", "resilience4j.toml", "polly.toml"])
def test_each_documented_example_checks_and_explains_itself(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every example in docs/policies is valid, and the check prints its trip rules first."""
    assert main(["policy", "check", "--policy", str(EXAMPLES / name)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("trips on: ")


def test_json_output_is_the_complete_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the policy with every default filled in, which reads back to the same policy."""
    path = tmp_path / "p.json"
    path.write_text('{"failure_rate": 0.25}', encoding="utf-8")
    assert main(["policy", "check", "--policy", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["consecutive_failures"] is None
    assert BreakerPolicy.from_dict(printed) == BreakerPolicy(failure_rate=0.25)


def test_a_bad_value_is_one_line_naming_file_setting_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A string where a number belongs: non-zero exit, one line in the user's terms."""
    path = tmp_path / "p.toml"
    path.write_text('failure_rate = "half"\n', encoding="utf-8")
    assert main(["policy", "check", "--policy", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    expected = "failure_rate must be a number (or null to turn it off), not the text 'half'"
    assert err == f"poolwarden: policy file {path}: {expected}"
