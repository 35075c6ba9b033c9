"""`openr train verifier`: calibrate a causal LM into a likelihood-verifier PRM
(openr.prm.likelihood) on stepwise-labelled jsonl.

Run: `python -m openr.training.verifier --lm DIR --labels A.jsonl [B.jsonl] --out DIR`.
"""

from __future__ import annotations

import argparse
import json

from openr.prm.likelihood import make_verifier
from openr.training.prm_quality import load_step_records


def main(argv: list[str] | None = None) -> None:
    """Command line: fit the calibration and write the verifier checkpoint."""
    parser = argparse.ArgumentParser(
        prog="openr train verifier",
        description="Turn a causal LM (e.g. a policy trained longer than the one it will judge) into a "
                    "likelihood-verifier PRM: fit the map from its token log-probabilities to P(step right) on "
                    "labelled steps.")
    parser.add_argument("--lm", required=True, help="Causal LM checkpoint directory that writes the policy's format.")
    parser.add_argument("--labels", nargs="+", required=True,
                        help="Stepwise-labelled jsonl files (TRL format, e.g. from `openr train label`).")
    parser.add_argument("--out", required=True, help="Verifier checkpoint directory to write (may equal --lm).")
    args = parser.parse_args(argv)
    print(json.dumps(make_verifier(args.lm, load_step_records(args.labels), args.out), indent=2))


if __name__ == "__main__":
    main()
