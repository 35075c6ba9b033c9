"""The session key of one search: a random id that every call the search makes
to a remote policy or PRM carries, so that a router in front of a pool of
replicas (vllm-router's consistent_hash, llm-d, production-stack's session
router) sends all of the search's rounds, whose prompts share their prefixes,
to one replica with those prefixes cached. We send the key; routing is the router's.

The server opens a session when a search starts; asyncio tasks and
`asyncio.to_thread` copy the context, so the remote backends read it where they
build a request. The key is random per search and never identifies a user.
"""

from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

# What vllm-router's consistent_hash reads first (on /v1/completions too, where
# the body's session_params is not read). llm-d and production-stack name theirs
# in their own configuration: `openr serve --session-header`.
DEFAULT_SESSION_HEADER = "x-session-id"
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True)
class SearchSession:
    key: str
    header: str = DEFAULT_SESSION_HEADER

    def headers(self) -> dict[str, str]:
        return {self.header: self.key}

    def body(self) -> dict:
        """The body field routers read on chat-shaped requests (vllm-router: chat only)."""
        return {"session_params": {"session_id": self.key}}


_current: ContextVar[SearchSession | None] = ContextVar("openr_search_session", default=None)


def current_session() -> SearchSession | None:
    """The session of the search this code runs for, or None outside a search."""
    return _current.get()


def session_headers() -> dict[str, str]:
    """The current search's header, or none outside a search."""
    session = _current.get()
    return session.headers() if session else {}


def session_body() -> dict:
    """The current search's body field, or none outside a search."""
    session = _current.get()
    return session.body() if session else {}


@contextmanager
def search_session(header: str = DEFAULT_SESSION_HEADER) -> Iterator[SearchSession]:
    """A new random session for the calls made inside the block (and by the tasks it starts)."""
    with in_session(SearchSession(uuid.uuid4().hex, header)) as session:
        yield session


@contextmanager
def in_session(session: SearchSession | None) -> Iterator[SearchSession | None]:
    """Run the block in `session` (None: outside any), e.g. a PRM batch of one search's calls."""
    token = _current.set(session)
    try:
        yield session
    finally:
        _current.reset(token)


def check_header_name(name: str) -> str:
    if not HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    return name.lower()
