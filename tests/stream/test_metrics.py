"""Metrics on their own registries, bulk histograms, and the health endpoints."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stream.http import Health, serve
from stream.metrics import LATENCY_BUCKETS, BulkHistogram, WorkerMetrics


def samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(name):
                out[s.name + str(sorted(s.labels.items()))] = s.value
    return out


@given(st.lists(st.floats(0.0, 1000.0), max_size=200))
def test_bulk_histogram_matches_prometheus_client(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "x", LATENCY_BUCKETS, ours)
    reference = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    bulk.observe_many(np.array(values))
    for v in values:
        reference.observe(v)
    mine, ref = samples(ours, "x_seconds"), samples(theirs, "x_seconds")
    ref.pop("x_seconds_created[]", None)
    assert mine.keys() == ref.keys()
    for key in ref:
        assert abs(mine[key] - ref[key]) <= 1e-6 * max(1.0, abs(ref[key]))


def test_worker_metrics_live_on_their_own_registry() -> None:
    a, b = WorkerMetrics(process=False), WorkerMetrics(process=False)
    a.events_learned.inc(5)
    assert b"lorastream_events_learned_total 5.0" in generate_latest(a.registry)
    assert b"lorastream_events_learned_total 0.0" in generate_latest(b.registry)
    full = WorkerMetrics()
    assert b"process_resident_memory_bytes" in generate_latest(full.registry)
    for family in full.registry.collect():
        assert family.name.startswith(("lorastream_", "process_")), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_health_endpoints_say_why_they_fail() -> None:
    health = Health(stall_after_s=0.05)
    server = serve(CollectorRegistry(), health, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz")
        assert not_ready.value.code == 503
        assert b"model is loading" in not_ready.value.read()
        health.model_loaded, health.assigned_partitions = True, 3
        health.beat()
        assert urllib.request.urlopen(f"{base}/readyz").status == 200
        time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as stalled:
            urllib.request.urlopen(f"{base}/healthz")
        assert stalled.value.code == 503
        assert b"has not advanced" in stalled.value.read()
    finally:
        server.close()
