"""The GPU check (issue 32): search_bench's figures 1-3 and 2b with the hf
engine on one device, in one JSON file with the device, torch and the command.

Two PRMs behind the same openr-arith policy: openr-arith's own (0.8M
parameters), and a larger one, a Qwen2.5-Math-PRM-format checkpoint
(`Qwen2ForProcessRewardModel`) of Qwen2.5-0.5B's shape, about 360M parameters,
built here from a config with random weights: only speed is measured, and a
PRM that size is where micro-batching should pay. Figure 2b is swept over
rows per forward pass (1 to 256 on a GPU): the curve that shows where
batching saturates. `bench/gpu_check.sh` runs this after installing from
carried wheels what the GPU machine lacks; `--device cpu` runs it end to end
on a CPU at smaller sizes (SIZES). The figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

from bench.results_file import add_result_flags, write_result
from openr.engine.checkpoints import ARITH_ALIAS, BUILTIN_BUNDLES, POLICY_SUBDIR, PRM_SUBDIR
from openr.hardware import choose_device, device_name
from openr.prm import check_prm
from openr.prm.formats import QWEN_PRM, QWEN_PRM_ARCHITECTURE, QWEN_PRM_STEP_TAG

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = ("1", "2", "3")  # search_bench's figures measured (2 brings 2b)
SEED = 0
# Qwen2.5-0.5B's body (its 151,936-token vocabulary aside: the PRM reads
# openr-arith's tokenizer, so both PRMs score the same text).
QWEN_05B_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, max_position_embeddings=4096)
# The same architecture at the size of openr-arith's PRM, for a CPU run.
SMALL_QWEN_SHAPE = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=4096)


@dataclass(frozen=True)
class Sizes:
    """How much each device's run measures: search_bench's --problems,
    --searches and --rounds, figure 2b's rows per forward, the larger PRM's shape."""

    problems: int
    searches: int
    rounds: int
    forward_sizes: tuple[int, ...]
    prm_shape: dict


# The GPU's fit one H100 in about 4 minutes with the wheels' install (estimated, not yet
# measured: figure 3's per-node side, 64 one-sample engine calls per problem, is
# most of it); the CPU's fit about 10 minutes on 2 shared AVX2 cores.
SIZES = {
    "cuda": Sizes(problems=2, searches=16, rounds=3, forward_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                  prm_shape=QWEN_05B_SHAPE),
    "cpu": Sizes(problems=2, searches=4, rounds=2, forward_sizes=(1, 4, 16, 64, 256), prm_shape=SMALL_QWEN_SHAPE),
}


def build_qwen_prm(out: Path, tokenizer_dir: Path, shape: dict, device: str) -> int:
    """A `Qwen2ForProcessRewardModel` checkpoint of `shape`, random weights (seed
    SEED, initialised on `device`, saved in float16), laid out as the hub ships
    Qwen2.5-Math-PRM (the body under `model.`, the 2-label head `score.0`/`score.2`),
    with `tokenizer_dir`'s tokenizer plus the step tag. Returns its parameter count."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens([QWEN_PRM_STEP_TAG], special_tokens=True)
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, num_labels=2,
                         architectures=[QWEN_PRM_ARCHITECTURE], **shape)
    torch.manual_seed(SEED)
    with torch.device(device):
        body = Qwen2Model(config)
        hidden = config.hidden_size
        head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    tensors = {f"model.{k}": v for k, v in body.state_dict().items()}
    tensors |= {f"score.{k}": v for k, v in head.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to("cpu", torch.float16).contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if check_prm(out) != QWEN_PRM:  # its format as `openr serve` would read it, before any timing
        raise RuntimeError(f"{out} does not read as a {QWEN_PRM} checkpoint")
    return sum(t.numel() for t in tensors.values())


def bundle_with_prm(root: Path, prm_dir: Path) -> Path:
    """A bundle directory: openr-arith's policy (linked) and `prm_dir`."""
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / POLICY_SUBDIR).symlink_to(BUILTIN_BUNDLES[ARITH_ALIAS] / POLICY_SUBDIR)
    (bundle / PRM_SUBDIR).symlink_to(prm_dir)
    return bundle


def run_search_bench(model: str, device: str, sizes: Sizes, out: Path) -> dict:
    """search_bench's FIGURES on `model`, in a process of its own (each run starts
    on an empty GPU), its output shown as it comes; its result file, read back."""
    command = [sys.executable, "-m", "bench.search_bench", "--engine", "hf", "--device", device, "--model", model,
               "--figures", *FIGURES, "--forward-sizes", *map(str, sizes.forward_sizes),
               "--problems", str(sizes.problems), "--searches", str(sizes.searches), "--rounds", str(sizes.rounds),
               "--out", str(out)]
    # On a CPU other work shares, one torch thread (search_bench's docstring says why).
    env = os.environ | ({"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")} if device == "cpu" else {})
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env, cwd=RESULTS.parents[1])
    return json.loads(out.read_text())


def summary_of(result: dict) -> dict:
    """A run's figures by number (`2b. PRM tok/s ...` -> `2b`), and figure 2b's curve."""
    figures = {figure["name"].split(".")[0]: figure for figure in result["figures"]}
    return {"figures": {number: figure["value"] for number, figure in figures.items()},
            "prm_tokens_per_s_by_rows": figures["2b"]["data"]["tokens_per_s_by_rows"],
            "rows_per_forward_by_rows": figures["2b"]["data"]["rows_per_forward_by_rows"]}


def packages() -> dict:
    names = ("torch", "transformers", "math-verify")
    return {name: importlib.metadata.version(name) for name in names} | {"cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="where to measure (cpu: the same check, at the smaller sizes of SIZES['cpu'])")
    parser.add_argument("--problems", type=int, help="search_bench --problems (default: the device's SIZES)")
    parser.add_argument("--searches", type=int, help="search_bench --searches (default: the device's SIZES)")
    parser.add_argument("--rounds", type=int, help="search_bench --rounds (default: the device's SIZES)")
    parser.add_argument("--forward-sizes", type=int, nargs="+",
                        help="figure 2b's rows per forward pass, from 1 (default: the device's SIZES)")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    try:
        device = choose_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    out = args.out or RESULTS / ("gpu_check.json" if device == "cuda" else "gpu_check_cpu.json")
    asked = {"problems": args.problems, "searches": args.searches, "rounds": args.rounds,
             "forward_sizes": tuple(args.forward_sizes) if args.forward_sizes else None}
    sizes = replace(SIZES[device], **{name: value for name, value in asked.items() if value is not None})
    start = time.monotonic()
    record = {"device": device, "device_name": device_name(device), "packages": packages(), "complete": False,
              "sizes": asdict(sizes), "runs": {}}

    def save() -> None:  # after every run, so a run cut short still leaves what it measured
        record["minutes"] = round((time.monotonic() - start) / 60, 2)
        write_result(out, "gpu_check", argv, args.note, record)
        print(f"wrote {out} ({record['minutes']} min)", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        arith = run_search_bench(ARITH_ALIAS, device, sizes, root / "arith.json")
        record["runs"][ARITH_ALIAS] = {"prm": "openr-arith's own (likelihood verifier)", **summary_of(arith),
                                       "search_bench": arith}
        save()
        parameters = build_qwen_prm(root / "qwen-prm", BUILTIN_BUNDLES[ARITH_ALIAS] / PRM_SUBDIR, sizes.prm_shape,
                                    device)
        larger = run_search_bench(str(bundle_with_prm(root, root / "qwen-prm")), device, sizes, root / "larger.json")
        record["runs"][f"openr-arith policy, {QWEN_PRM} PRM"] = {
            "prm": f"{QWEN_PRM} format, random weights, {parameters / 1e6:.1f}M parameters, shape {sizes.prm_shape}",
            **summary_of(larger), "search_bench": larger}
    record["complete"] = True
    save()


if __name__ == "__main__":
    main()
