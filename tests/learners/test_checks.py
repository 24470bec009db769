"""The conformance suite (``learners/checks.py``) over every learner kind the settings
accept: registering a learner is what puts it under these checks."""

from __future__ import annotations

from typing import get_args

import pytest

from learners.base import Learner
from learners.checks import Check, yield_checks
from learners.registry import build_learner
from schemas.settings import LearnerSettings

KINDS = get_args(LearnerSettings.model_fields["kind"].annotation)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("check", list(yield_checks()), ids=lambda c: c.__name__)
def test_every_learner_passes_every_check(kind: str, check: Check) -> None:
    def make() -> Learner:
        return build_learner(LearnerSettings(kind=kind))  # type: ignore[arg-type]

    check(make)


def test_every_learner_kind_is_checked() -> None:
    assert set(KINDS) == {"llm", "river-mf"}
