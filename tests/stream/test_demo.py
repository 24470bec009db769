"""make demo's engine, end to end: it starts its own Kafka, learns, summarises, plots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_runs_end_to_end_and_writes_its_plot(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("LORASTREAM_KAFKA__BOOTSTRAP_SERVERS", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "demo",
            "--events",
            "240",
            "--rate",
            "200",
            "--no-live",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "events sent / learned" in done.stdout
    assert "240 / 240" in done.stdout
    png = tmp_path / "quality.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert str(png.resolve()) in done.stdout.replace("\n", "")
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) >= 3
