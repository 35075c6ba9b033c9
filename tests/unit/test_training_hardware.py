"""Training gives the same model on any CPU: the dtype is chosen from the
hardware only when asked (`auto`), a wall-clock cap is opt-in, never moves the
schedule, and says so when it binds; Muon's orthogonalisation runs in the run's
dtype; every summary names the machine."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from openr import hardware
from openr.hardware import TimeCap, choose_dtype, cpu_model_and_flags, machine_info
from openr.training.muon import Muon, orthogonalise
from openr.training.recipe import PRESETS, with_dtype
from openr.training.sft import SFTConfig, lr_factor, train_policy

TINY = SFTConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=64, max_len=512, batch_size=4,
                 max_steps=6, warmup_steps=2, num_train_problems=16, min_ops=2, max_ops=2, seed=3)


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": native)
    choice = choose_dtype("auto")
    assert choice.name == expected and choice.autocast == (expected == "bfloat16")
    assert ("no native" in choice.reason) != native


@pytest.mark.parametrize("native", [True, False])
def test_explicit_dtype_is_taken_as_asked(monkeypatch, caplog, native):
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": native)
    assert choose_dtype("float32").name == "float32"
    with caplog.at_level("WARNING"):
        assert choose_dtype("bfloat16").name == "bfloat16"
    assert ("much slower" in caplog.text) != native  # asking an emulating CPU for bf16 is warned about


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        choose_dtype("float16")
    with pytest.raises(ValueError, match="dtype"):
        SFTConfig(dtype="fp8")


def test_default_dtype_is_float32_everywhere():
    """The committed recipe does not depend on the machine's bf16 support."""
    recipe = PRESETS["full"]
    assert recipe.sft.dtype == recipe.verifier.dtype == recipe.prm.dtype == "float32"
    assert recipe.sft.max_minutes == recipe.verifier.max_minutes == 0  # no clock decides what is trained
    assert all(not stage.max_minutes for preset in PRESETS.values() for stage in (preset.sft, preset.verifier))
    auto = with_dtype(recipe, "auto")
    assert auto.sft.dtype == auto.verifier.dtype == auto.prm.dtype == "auto"


def test_learning_rate_schedule_depends_on_steps_only():
    config = dataclasses.replace(TINY, max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(config, 0) == pytest.approx(0.1)
    assert lr_factor(config, 9) == pytest.approx(1.0)
    assert lr_factor(config, 50) == pytest.approx(0.1 + 0.9 * 0.5)  # cosine over step / max_steps
    assert lr_factor(config, 100) == pytest.approx(0.1)


def test_an_unbinding_time_cap_changes_nothing(tmp_path):
    """Same seed, with and without a generous cap: bit-identical weights."""
    uncapped = train_policy(TINY, tmp_path / "a", progress=False)
    capped = train_policy(dataclasses.replace(TINY, max_minutes=60.0), tmp_path / "b", progress=False)
    assert uncapped["steps"] == capped["steps"] == TINY.max_steps
    assert not uncapped["stopped_by_time_cap"] and not capped["stopped_by_time_cap"]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_binding_time_cap_is_loud_and_recorded(tmp_path, capsys):
    config = dataclasses.replace(TINY, max_steps=10_000, max_minutes=1e-4)  # 6 ms: binds after a step or two
    summary = train_policy(config, tmp_path, progress=False)
    assert summary["stopped_by_time_cap"] is True
    assert summary["steps"] < summary["steps_planned"] == 10_000 and summary["max_minutes"] == 1e-4
    assert "stopped by its" in capsys.readouterr().err
    assert (tmp_path / "model.safetensors").exists()  # what was trained is still saved


def test_time_cap_zero_never_binds():
    cap = TimeCap(0, "nothing")
    assert not cap.reached(10**9, 1) and not cap.summary(3, 3)["stopped_by_time_cap"]
    with pytest.raises(ValueError):
        TimeCap(-1, "negative")


def test_summary_names_dtype_and_machine(tmp_path):
    summary = train_policy(dataclasses.replace(TINY, max_steps=1), tmp_path, progress=False)
    assert summary["dtype"] == "float32" and summary["dtype_reason"]
    assert {"cpu", "cpu_flags", "torch_threads", "native_bf16"} <= set(summary["machine"])


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512f amx_tile\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    assert cpu_model_and_flags() == ("Test CPU 9000", ["avx2", "fma", "avx512f", "amx_tile"])
    assert machine_info()["cpu"] == "Test CPU 9000"


def _muon_pair(ns_dtype):
    torch.manual_seed(0)
    shapes = [(64, 64), (96, 32), (32, 96)]
    ours = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kwargs = dict(lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    return ours, reference, Muon(ours, ns_dtype=ns_dtype, **kwargs), torch.optim.Muon(reference, **kwargs)


def _step_both(ours, reference, opt_ours, opt_reference, steps=3):
    for _ in range(steps):
        for a, b in zip(ours, reference):
            grad = torch.randn_like(a)
            a.grad, b.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_reference.step()
    return max((a - b).abs().max().item() for a, b in zip(ours, reference))


def test_muon_in_bfloat16_is_torchs_muon():
    assert _step_both(*_muon_pair(torch.bfloat16)) < 1e-3


def test_muon_in_float32_differs_from_bfloat16_only_by_rounding():
    difference = _step_both(*_muon_pair(torch.float32))
    assert 0 < difference < 5e-3


def test_orthogonalise_flattens_the_spectrum():
    torch.manual_seed(0)
    update = torch.randn(48, 80) @ torch.diag(torch.logspace(-2, 1, 80))  # condition number 1000
    singular = torch.linalg.svdvals(orthogonalise(update, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32))
    assert singular.min() > 0.3 and singular.max() < 1.3  # Muon's quintic lands near 1, not exactly on it
    tall = orthogonalise(update.T, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    assert tall.shape == (80, 48)
