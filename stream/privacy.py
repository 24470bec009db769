"""Keyed pseudonymisation of user ids, applied before any state is kept or vector published.

A pseudonym is ``p-`` and the first 32 hex digits of HMAC-SHA256(key, user id): stable
for one key, unlinkable without it. Consumers that must look a user up (serving,
``lorastream recommend``) compute the same function with the same key.

>>> p = Pseudonymizer("s3cret")
>>> p("alice") == p("alice"), p("alice") == p("bob"), p("alice")[:2]
(True, False, 'p-')
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["Pseudonymizer"]


class Pseudonymizer:
    """``user id -> p-<hmac>``, keyed."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the pseudonymisation key must not be empty")
        self._key = key.encode()

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return "p-" + digest[:32]
