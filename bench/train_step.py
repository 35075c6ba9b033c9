"""Where a policy SFT step's time goes, and what the dtype choices cost, side by side.

Runs the openr-arith policy's training step (batch 16, length-grouped arith
problems, Muon + AdamW) in three settings, alternating them round by round on
the same batches, and prints the median time of each phase (data, forward,
backward, optimizer) and each setting's step time as a ratio to the default:

- `float32`: the recipe's default (Muon's Newton-Schulz in float32);
- `float32, torch Muon`: torch.optim.Muon, whose Newton-Schulz runs in bfloat16;
- `bfloat16 autocast`: the old default (with torch's Muon, as it ran).

To see an AVX2-only CPU on a newer one, restrict oneDNN and ATen to AVX2:
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m bench.train_step`.
`--out` writes the medians and ratios, with the command and the machine, to a
JSON file (`bench/results/train_step.json` is the committed one).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from bench.results_file import add_result_flags, write_result
from openr.hardware import DtypeChoice, machine_info
from openr.training.sft import (
    SFTConfig,
    build_model,
    collate,
    length_grouped_batches,
    make_optimizers,
    training_examples,
)
from openr.training.tokenizer import build_tokenizer

SETTINGS = {
    "float32": (False, torch.float32),
    "float32, torch Muon": (False, None),
    "bfloat16 autocast": (True, None),
}


def make_setting(config: SFTConfig, tokenizer, autocast: bool, ns_dtype: torch.dtype | None):
    torch.manual_seed(config.seed)
    model = build_model(config, tokenizer).train()
    optimizers = make_optimizers(model, config, DtypeChoice("float32", "bench"))
    if ns_dtype is None:  # torch's own Muon over the same matrices
        optimizers[0] = torch.optim.Muon(optimizers[0].param_groups[0]["params"], lr=config.learning_rate,
                                         weight_decay=config.weight_decay, adjust_lr_fn="match_rms_adamw")
    return model, optimizers, autocast


def timed_step(model, optimizers, autocast: bool, examples, rows, pad_id) -> dict[str, float]:
    marks = [time.perf_counter()]
    batch = collate([examples[i] for i in rows], pad_id)
    marks.append(time.perf_counter())
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    marks.append(time.perf_counter())
    model.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for optimizer in optimizers:
        optimizer.step()
    marks.append(time.perf_counter())
    phases = ("data", "forward", "backward", "optimizer")
    return {name: marks[i + 1] - marks[i] for i, name in enumerate(phases)}


def summarise(times: dict[str, list[dict]]) -> dict[str, dict]:
    """Per setting: the median step and phase times (ms) and the step's ratio to float32's."""
    base = statistics.median(sum(p.values()) for p in times["float32"])
    summary = {}
    for name, rounds in times.items():
        step = statistics.median(sum(p.values()) for p in rounds)
        summary[name] = {"step_ms": round(step * 1000, 1), "ratio_to_float32": round(step / base, 2),
                         "phase_ms": {k: round(statistics.median(p[k] for p in rounds) * 1000, 1) for k in rounds[0]}}
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="steps per setting (the first two are warm-up)")
    parser.add_argument("--problems", type=int, default=5000, help="training problems to draw batches from")
    add_result_flags(parser)
    args = parser.parse_args(argv)
    config = SFTConfig(num_train_problems=args.problems)
    tokenizer = build_tokenizer(config.max_len)
    examples, _ = training_examples(config, tokenizer)
    batches = length_grouped_batches([len(ids) for ids, _ in examples], config.batch_size, random.Random(0))
    plan = [next(batches) for _ in range(args.rounds)]
    settings = {name: make_setting(config, tokenizer, *spec) for name, spec in SETTINGS.items()}
    times: dict[str, list[dict]] = {name: [] for name in settings}
    for round_index, rows in enumerate(plan):
        for name, (model, optimizers, autocast) in settings.items():
            phases = timed_step(model, optimizers, autocast, examples, rows, tokenizer.pad_token_id)
            if round_index >= 2:
                times[name].append(phases)
    print(json.dumps(machine_info()))
    summary = summarise(times)
    print(f"{'setting':<22} {'step ms':>8} {'÷ float32':>10}   " + "  ".join(f"{k:>9}" for k in times["float32"][0]))
    for name, row in summary.items():
        phases = "  ".join(f"{ms:9.1f}" for ms in row["phase_ms"].values())
        print(f"{name:<22} {row['step_ms']:8.1f} {row['ratio_to_float32']:10.2f}   {phases}")
    write_result(args.out, "train_step", argv, args.note,
                 {"rounds": args.rounds, "warmup_rounds": 2, "batch_size": config.batch_size, "settings": summary})


if __name__ == "__main__":
    main()
