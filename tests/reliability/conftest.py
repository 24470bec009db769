"""The fault-injection suite's own broker, scale and tally.

The suite restarts its broker, so it runs one of its own (``LocalKafka`` with a kept
data directory) rather than the session's. ``--reliability=full`` runs every scenario
at full size and writes ``benchmarks/results/reliability.json``; the reduced run
(inside ``make test``) checks the same bars on smaller streams and writes its tally
to the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability.faults import FULL, REDUCED, Scale, Tally

from deploy.kafka import LocalKafka


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    return FULL if request.config.getoption("--reliability") == "full" else REDUCED


@pytest.fixture(scope="session")
def tally(scale: Scale, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tally]:
    from benchmarks.harness import write_results

    found = Tally()
    yield found
    if not found.scenarios:
        return
    directory = None if scale.full else tmp_path_factory.mktemp("reliability")
    params = {k: v for k, v in scale.__dict__.items() if k != "full"}
    path = write_results(
        "reliability",
        {"scale": "full" if scale.full else "reduced", **params},
        found.rows(),
        found.notes,
        directory,
    )
    print(f"\nreliability results: {path}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of the suite's own, restartable on its data."""
    with LocalKafka(workdir=tmp_path_factory.mktemp("broker")) as kafka:
        yield kafka
    # the workdir is the test's: stop() keeps it, pytest cleans it
