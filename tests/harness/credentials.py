"""Test credentials shared by the fixtures and the tests (never real secrets)."""

from __future__ import annotations

from .token_issuer import User

BASIC_USER = "alice"
BASIC_PASSWORD = "wonderland-42"
# Users of the fixtures' token issuer: alice may push, bob may only pull.
TOKEN_USERS: dict[str, User] = {
    "alice": User("alice-pw", frozenset({"pull", "push"})),
    "bob": User("bob-pw", frozenset({"pull"})),
}
PUSHER = ("alice", "alice-pw")  # credentials that may push to ``token_upstream``
PULLER = ("bob", "bob-pw")  # credentials that may only pull from ``token_upstream``
