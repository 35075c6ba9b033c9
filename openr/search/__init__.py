"""Search over reasoning steps: strategies, aggregation, budgets, and the
`Policy` / `StepScorer` contracts they are written against. Pure Python: no
torch, vllm or fastapi here."""
