"""The GPU check's parts on a CPU, the GPU check stubbed where it matters:
search_bench runs where it is told (or on the GPU it finds), the check refuses
cuda without a GPU, the larger PRM it builds is a Qwen2.5-Math-PRM-format
checkpoint, the forward-size curve scores the same candidates at every size,
and nothing it imports is missing from the GPU image but what it carries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check, search_bench
from bench.prm_forward_curve import MIN_CANDIDATES, curve_candidates, forward_curve
from openr.engine.checkpoints import ARITH_ALIAS, split_bundle
from openr.prm import PublishedPRM, load_prm
from tests.support.stub_gpu import stub_gpu

ROOT = Path(__file__).resolve().parents[2]
PRM = split_bundle(ARITH_ALIAS)[1]
QUESTION = "What is 3 + 4 * 2?"
# What the GPU image lacks of this project's needs; bench/gpu_check.sh carries math-verify and its own.
GPU_IMAGE_LACKS = ["fastapi", "uvicorn", "pydantic", "openai", "gymnasium", "vllm", "starlette", "gguf", "httptools"]
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=1024)


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_search_bench_runs_where_it_is_told_or_on_the_gpu_it_finds(gpu, monkeypatch, capsys):
    stub_gpu(monkeypatch, gpu)
    assert search_bench.parse_args([]).device == ("cuda" if gpu else "cpu")
    assert search_bench.parse_args(["--device", "cpu"]).device == "cpu"
    if gpu:
        assert search_bench.parse_args(["--device", "cuda"]).device == "cuda"
    else:
        with pytest.raises(SystemExit):
            search_bench.parse_args(["--device", "cuda"])
        assert "sees no GPU" in capsys.readouterr().err


def test_search_bench_forward_sizes_start_at_one(capsys):
    with pytest.raises(SystemExit):
        search_bench.parse_args(["--forward-sizes", "4", "16"])
    assert "the first size is 1" in capsys.readouterr().err


def test_the_gpu_check_refuses_cuda_without_a_gpu(monkeypatch, capsys, tmp_path):
    stub_gpu(monkeypatch, False)
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path / "gpu_check.json")])
    assert "sees no GPU" in capsys.readouterr().err and not (tmp_path / "gpu_check.json").exists()


def test_the_larger_prm_is_a_qwen_prm_checkpoint_of_the_shape_asked(tmp_path):
    parameters = gpu_check.build_qwen_prm(tmp_path / "prm", Path(PRM), TINY_SHAPE, "cpu")
    prm = load_prm(tmp_path / "prm")
    assert isinstance(prm, PublishedPRM) and prm.prm_format == "qwen-prm"
    assert parameters == sum(p.numel() for p in prm.model.parameters())
    assert prm.model.config.num_hidden_layers == 2 and prm.model.config.hidden_size == 64
    [scores] = prm.score_batch([(QUESTION, ["4 * 2 = 8", "3 + 8 = 11"])])
    assert len(scores) == 2 and all(0 < score < 1 for score in scores)


def test_the_gpu_sizes_sweep_rows_per_forward_from_1_to_256():
    assert gpu_check.SIZES["cuda"].forward_sizes[0] == 1 and gpu_check.SIZES["cuda"].forward_sizes[-1] == 256
    assert gpu_check.SIZES["cpu"].forward_sizes[0] == 1


def test_the_curve_scores_the_same_candidates_at_every_size():
    logged = [(QUESTION, ["4 * 2 = 8"]), (QUESTION, ["3 + 4 = 7", "7 * 2 = 14"]), (QUESTION, ["4 * 2 = 8", "3 + 8"])]
    pairs = curve_candidates(logged, (1, 200))
    assert len(pairs) == 200 and pairs[:3] == logged and pairs[3] == logged[0]  # repeated to fill the largest pass
    assert len(curve_candidates(logged, (1, 4))) == MIN_CANDIDATES
    prm = load_prm(PRM, cache_mb=0, forward_batch_size=16)
    calls: list[int] = []
    score_batch = prm.score_batch
    prm.score_batch = lambda batch: calls.append(len(batch)) or score_batch(batch)
    curve = forward_curve(prm, pairs[:12], (1, 4), rounds=2)
    assert [point.size for point in curve] == [1, 4] and all(point.tokens_per_s > 0 for point in curve)
    assert curve[0].rows_per_forward == 1.0 and 1.0 < curve[1].rows_per_forward <= 4.0
    assert calls == [1, 12, 12, 12, 12]  # one untimed warm-up row, then every size on all of them, each round
    assert prm.forward_batch_size == 16  # put back


def test_the_gpu_check_imports_nothing_the_gpu_image_lacks():
    code = ("import importlib.abc, json, sys\n"
            f"LACKS = set({GPU_IMAGE_LACKS!r})\n"
            "class Lacking(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in LACKS:\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Lacking())\n"
            "import bench.gpu_check, bench.search_bench, openr.engine.hf_engine, openr.search.strategies\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "openr.search.strategies.beam_search" in json.loads(done.stdout)  # the blocker let the search load


def test_the_readme_quotes_the_committed_cpu_check():
    """bench/README.md's gpu_check table is the committed CPU result file's figures."""
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## `gpu_check.sh`"):]
    section = section[:section.index("\n## ")]
    record = json.loads((ROOT / "bench" / "results" / "gpu_check_cpu.json").read_text())
    assert record["complete"] and "Result file: `results/gpu_check_cpu.json`" in section
    runs = list(record["runs"].values())
    for number, unit in (("1", ""), ("2", "×"), ("2b", "×"), ("3", "×")):
        [line] = [line for line in section.splitlines() if line.startswith(f"| {number}. ")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:3] == [f"{run['figures'][number]:.2f}{unit}" for run in runs]
    assert f"in {record['minutes']} minutes" in section
