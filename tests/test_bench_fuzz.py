"""``poolwarden bench fuzz``: hostile frames through both wire parsers, none escaping the error tree."""

from __future__ import annotations

import json

import pytest

from poolwarden.cli import main


def test_bench_fuzz_reports_no_unhandled_frame(capsys: pytest.CaptureFixture[str]) -> None:
    """20,000 frames (two seeds): every answer is a message or a ProtocolError; both kinds occur."""
    for seed in ("0", "1"):
        assert main(["bench", "fuzz", "--frames", "10000", "--seed", seed, "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["frames"] == 10_000
        assert result["unhandled"] == 0, result["unhandled_examples"]
        for parser in ("parse_page_message", "parse_command"):
            counts = result[parser]
            assert counts["parsed"] + counts["refused"] == 10_000
            assert counts["parsed"] > 0
            assert counts["refused"] > 0
