"""One flag style: config fields become `--kebab-case` flags with their help text,
and a renamed flag's old spelling still parses, hidden from --help, with a warning."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

import pytest

from openr.cli import build_parser, main
from openr.cli_flags import add_config_flags, add_flag
from openr.server.serve import settings_of

UNDERSCORE_FLAG = re.compile(r"--[a-z0-9-]*_[a-z0-9_-]*")
ALL_FLAGS = re.compile(r"--[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class ToyConfig:
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    init_from: str | None = field(default=None, metadata={"help": "Checkpoint to start from."})
    dtype: str = field(default="float32", metadata={"help": "Training dtype."})
    use_cache: bool = field(default=True, metadata={"help": "Keep the cache."})
    seed: int = field(default=0, metadata={"help": "Seed."})


def toy_parser(**options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_flags(parser, ToyConfig, choices={"dtype": ("float32", "bfloat16")}, **options)
    return parser


def test_config_fields_become_kebab_case_flags_with_their_help():
    text = toy_parser().format_help()
    for flag, help_text in [("--learning-rate", "Peak learning rate."), ("--init-from", "Checkpoint to start from."),
                            ("--use-cache, --no-use-cache", "Keep the cache."), ("--seed", "Seed.")]:
        assert re.search(rf"^  {re.escape(flag)}\b.*\n?\s*{re.escape(help_text)}", text, re.MULTILINE), flag
    assert not UNDERSCORE_FLAG.findall(text)


def test_flags_keep_the_fields_types_defaults_and_choices():
    assert vars(toy_parser().parse_args([])) == {"learning_rate": 3e-4, "init_from": None, "dtype": "float32",
                                                  "use_cache": True, "seed": 0}
    args = toy_parser().parse_args(["--learning-rate", "0.01", "--init-from", "dir", "--no-use-cache", "--seed", "7"])
    assert (args.learning_rate, args.init_from, args.use_cache, args.seed) == (0.01, "dir", False, 7)
    with pytest.raises(SystemExit):
        toy_parser().parse_args(["--dtype", "float16"])


def test_unset_flags_stay_none_without_defaults_and_excluded_fields_get_no_flag():
    parser = toy_parser(keep_defaults=False, exclude={"seed"})
    assert parser.parse_args([]).learning_rate is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "1"])


@pytest.mark.parametrize("old, new", [
    (["--learning_rate", "0.01"], ["--learning-rate", "0.01"]),
    (["--init_from", "dir"], ["--init-from", "dir"]),
    (["--no-use_cache"], ["--no-use-cache"]),
    (["--use_cache"], ["--use-cache"]),
])
def test_an_old_underscore_spelling_parses_the_same_and_warns(capsys, old, new):
    assert toy_parser().parse_args(old) == toy_parser().parse_args(new)
    warning = capsys.readouterr().err
    assert f"{old[0]} is deprecated, use {new[0]}" in warning and warning.count("\n") == 1


def test_a_new_spelling_does_not_warn_and_an_old_one_is_not_in_help(capsys):
    toy_parser().parse_args(["--learning-rate", "0.01"])
    assert capsys.readouterr().err == ""
    assert "learning_rate" not in toy_parser().format_usage()


def test_a_renamed_flag_keeps_its_choices_under_the_old_spelling():
    parser = argparse.ArgumentParser()
    add_flag(parser, "--decode-batch-size", old=["--max-batch-size"], type=int, choices=[8, 16], default=16)
    assert parser.parse_args(["--max-batch-size", "8"]).decode_batch_size == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-batch-size", "9"])


def test_a_renamed_switch_still_switches():
    parser = argparse.ArgumentParser()
    add_flag(parser, "--no-progress", old=["--no_progress"], action="store_true")
    assert parser.parse_args(["--no_progress"]).no_progress is True
    assert parser.parse_args([]).no_progress is False


STAGE_FLAGS = {"sft": "--learning-rate", "prm": "--init-from", "label": "--max-concurrent-problems",
               "rl": "--kl-coef", "verifier": "--labels", "prm-eval": "--num-problems"}


@pytest.mark.parametrize("stage, expected", STAGE_FLAGS.items())
def test_every_train_stage_lists_only_kebab_case_flags(capsys, stage, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", stage, "--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and expected in ALL_FLAGS.findall(text)
    assert UNDERSCORE_FLAG.findall(text) == []


def test_a_train_stage_still_takes_an_old_spelling(monkeypatch, capsys):
    from openr.training import sft

    trained = []
    monkeypatch.setattr(sft, "train_policy", lambda config, out, progress: trained.append(config) or {})
    main(["train", "sft", "--out", "x", "--learning_rate", "0.01", "--max-steps", "5"])
    assert (trained[0].learning_rate, trained[0].max_steps) == (0.01, 5)
    assert "--learning_rate is deprecated, use --learning-rate" in capsys.readouterr().err


def test_label_flags_left_unset_keep_the_methods_defaults(monkeypatch, capsys):
    from openr.training.labels import pipeline
    from openr.training.labels.omegaprm import OmegaPRMConfig

    configs = []

    async def fake_run(args, config, problems):
        configs.append(config)
        return pipeline.LabelStats()

    monkeypatch.setattr(pipeline, "_run", fake_run)
    main(["train", "label", "--method", "omegaprm", "--model", "m", "--out", "o.jsonl", "--num_problems", "2",
          "--rollout-budget", "50"])
    assert configs == [OmegaPRMConfig(rollout_budget=50)]
    assert "--num_problems is deprecated, use --num-problems" in capsys.readouterr().err


@pytest.mark.parametrize("old, new, value", [("--max-batch-size", "--decode-batch-size", 8),
                                             ("--prm-max-batch-size", "--prm-micro-batch-size", 5)])
def test_old_serve_batch_flags_still_parse_with_a_warning(capsys, old, new, value):
    args = build_parser().parse_args(["serve", old, str(value)])
    assert args == build_parser().parse_args(["serve", new, str(value)])
    assert f"openr serve: warning: {old} is deprecated, use {new}" in capsys.readouterr().err


def test_serve_names_each_batch_and_hides_the_old_names(capsys):
    args = build_parser().parse_args(["serve", "--prm-max-batch-size", "5", "--max-batch-size", "8",
                                      "--prm-forward-batch-size", "4"])
    assert settings_of(args).prm_micro_batch_size == 5
    assert (args.decode_batch_size, args.prm_forward_batch_size) == (8, 4)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert {"--decode-batch-size", "--prm-micro-batch-size", "--prm-forward-batch-size"} <= set(ALL_FLAGS.findall(text))
    assert "--max-batch-size" not in text and "--prm-max-batch-size" not in text
    assert UNDERSCORE_FLAG.findall(text) == []
