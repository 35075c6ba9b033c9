"""Serving logic of `/v1/rewards`: the attached PRM's step scores, so another
`openr serve` (or any client) can use this server's PRM remotely (`--prm URL`).
"""

from __future__ import annotations

from openr.contracts import ScorerInputTooLong
from openr.server.base import ServingContext, check_model
from openr.server.errors import bad_request
from openr.server.protocol import RewardRequest
from openr.server.responses import RewardResponse


async def score_steps(ctx: ServingContext, request: RewardRequest) -> RewardResponse:
    check_model(ctx, request.model)
    if ctx.prm is None:
        raise bad_request(f"`{ctx.model_name}` has no process reward model attached (start the server with "
                          "--prm DIR, or serve a model that comes with one, e.g. openr-arith)", "model",
                          "prm_unavailable")
    try:
        scores = await ctx.prm.score(request.question, request.candidates)
    except ScorerInputTooLong as exc:
        raise bad_request(str(exc), "candidates", "context_length_exceeded") from exc
    return RewardResponse(model=ctx.model_name, scores=scores)
