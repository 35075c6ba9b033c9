"""`openr serve`'s flags and the one `ServerSettings` object they make."""

from __future__ import annotations

import pytest

from openr.cli import build_parser
from openr.server.serve import settings_of
from openr.server.settings import SearchLimits, ServerSettings


def test_flag_defaults_are_the_settings_defaults(monkeypatch):
    monkeypatch.delenv("OPENR_API_KEY", raising=False)
    assert settings_of(build_parser().parse_args(["serve"])) == ServerSettings()


@pytest.mark.parametrize("flags, expected", [
    (["--max-n", "3", "--api-key", "k"], ServerSettings(max_n=3, api_key="k")),
    (["--search-max-samples", "8", "--search-max-timeout", "30"],
     ServerSettings(search=SearchLimits(max_samples=8, max_timeout_s=30.0))),
    (["--prm-max-batch-size", "5", "--prm-max-wait-ms", "1"], ServerSettings(prm_micro_batch_size=5,
                                                                             prm_max_wait_ms=1.0)),
    (["--step-separator", "\\n---\\n"], ServerSettings(step_separator="\n---\n")),
])
def test_each_flag_lands_in_its_setting(monkeypatch, flags, expected):
    monkeypatch.delenv("OPENR_API_KEY", raising=False)
    assert settings_of(build_parser().parse_args(["serve", *flags])) == expected
