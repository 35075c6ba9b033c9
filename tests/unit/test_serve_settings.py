"""`openr serve`'s flags and the one `ServerSettings` object they make."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from openr.cli import build_parser
from openr.engine.checkpoints import bundle_file
from openr.search.auto import AUTO_TABLE_FILE
from openr.search.defaults import SEARCH_DEFAULTS_FILE
from openr.server.serve import settings_of
from openr.server.settings import SearchLimits, ServerSettings


def settings_for(*flags: str) -> ServerSettings:
    """The settings the flags make, checked to carry the built-in bundle's auto table and
    search defaults (where it has them), which are then left out."""
    settings = settings_of(build_parser().parse_args(["serve", *flags]))
    assert settings.search.auto_table.source.endswith(f"openr-arith/{AUTO_TABLE_FILE}")
    bundled = bundle_file(None, SEARCH_DEFAULTS_FILE)
    assert (settings.search.search_defaults and settings.search.search_defaults.source) == (bundled and str(bundled))
    return replace(settings, search=replace(settings.search, auto_table=None, search_defaults=None))


def test_flag_defaults_are_the_settings_defaults(monkeypatch):
    monkeypatch.delenv("OPENR_API_KEY", raising=False)
    assert settings_for() == ServerSettings()


def test_auto_table_flag_overrides_the_bundles_and_a_bad_table_stops_start_up(tmp_path):
    table = {"tiers": [{"min_tokens": 0, "strategy": "best_of_n", "options": {"n": 2}}]}
    (tmp_path / "mine.json").write_text(json.dumps(table))
    settings = settings_of(build_parser().parse_args(["serve", "--auto-table", str(tmp_path / "mine.json")]))
    assert settings.search.auto_table.tiers[0].options == {"n": 2}
    table["tiers"][0]["options"] = {"n": 0}
    (tmp_path / "bad.json").write_text(json.dumps(table))
    with pytest.raises(SystemExit, match="bad.json"):
        settings_of(build_parser().parse_args(["serve", "--auto-table", str(tmp_path / "bad.json")]))


def test_search_defaults_flag_overrides_the_bundles_and_a_bad_file_stops_start_up(tmp_path):
    mine = {"strategies": {"beam_search": [{"min_n": 64, "options": {"beam_width": 16}}]}}
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    settings = settings_of(build_parser().parse_args(["serve", "--search-defaults", str(tmp_path / "mine.json")]))
    [tier] = settings.search.search_defaults.strategies["beam_search"]
    assert (tier.min_n, tier.options) == (64, {"beam_width": 16})
    mine["strategies"]["beam_search"][0]["min_n"] = 63  # 63 samples cannot split over 16 beams
    (tmp_path / "bad.json").write_text(json.dumps(mine))
    with pytest.raises(SystemExit, match="bad.json: not a search defaults file"):
        settings_of(build_parser().parse_args(["serve", "--search-defaults", str(tmp_path / "bad.json")]))


@pytest.mark.parametrize("flags, expected", [
    (["--max-n", "3", "--api-key", "k"], ServerSettings(max_n=3, api_key="k")),
    (["--search-max-samples", "8", "--search-max-timeout", "30"],
     ServerSettings(search=SearchLimits(max_samples=8, max_timeout_s=30.0))),
    (["--prm-micro-batch-size", "5", "--prm-max-wait-ms", "1"], ServerSettings(prm_micro_batch_size=5,
                                                                             prm_max_wait_ms=1.0)),
    (["--step-separator", "\\n---\\n"], ServerSettings(step_separator="\n---\n")),
    (["--session-header", "X-Gateway-Session"], ServerSettings(session_header="x-gateway-session")),
])
def test_each_flag_lands_in_its_setting(monkeypatch, flags, expected):
    monkeypatch.delenv("OPENR_API_KEY", raising=False)
    assert settings_for(*flags) == expected


def test_a_session_header_that_is_no_header_name_stops_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--session-header", "x session"])
    assert "'x session' is not an HTTP header name" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--search-max-timeout", "86400"], "--search-max-timeout must be in \\(0, 3600\\]"),
    (["--search-max-timeout", "0"], "--search-max-timeout must be in"),
    (["--search-timeout", "900"], "--search-timeout must be in \\(0, --search-max-timeout = 600\\]"),
])
def test_a_search_timeout_no_search_would_accept_stops_start_up(flags, message):
    from openr.server.serve import validate

    with pytest.raises(SystemExit, match=message):
        validate(build_parser().parse_args(["serve", *flags]))
    validate(build_parser().parse_args(["serve", "--search-max-timeout", "3600", "--search-timeout", "3600"]))
