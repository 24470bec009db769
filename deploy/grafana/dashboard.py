"""Builds ``deploy/grafana/dashboards/lorastream.json``, the provisioned Grafana dashboard.

The panels are data here (row, title, unit, queries), so the JSON stays consistent and a
test can evaluate every query against a real Prometheus. ``python -m deploy.grafana.dashboard``
rewrites the JSON; ``--check`` fails when the checked-in file is out of date.

Queries use the dashboard variables ``$instance`` (the lorastream workers to show) and
Grafana's ``$__rate_interval``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD_PATH", "ROWS", "build", "queries"]

DASHBOARD_PATH = Path(__file__).resolve().parent / "dashboards" / "lorastream.json"
I = '{instance=~"$instance"}'  # noqa: E741 - the selector every query carries
REPLAY = '{state="replay_%s", instance=~"$instance"}'
R = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (row, [(title, unit, [(expr, legend)])])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    (
        "Throughput",
        [
            (
                "Events learned",
                "ops",
                [(f"sum by (instance) (lorastream:events_learned:rate1m{I})", "{{instance}}")],
            ),
            (
                "Events consumed by type",
                "ops",
                [
                    (
                        f"sum by (event_type) (rate(lorastream_events_consumed_total{I}[{R}]))",
                        "{{event_type}}",
                    )
                ],
            ),
            (
                "Vectors acknowledged",
                "ops",
                [(f"sum by (kind) (rate(lorastream_vectors_produced_total{I}[{R}]))", "{{kind}}")],
            ),
            (
                "Batch size",
                "none",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(lorastream_batch_size_events_bucket{I}[{R}])))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(lorastream_batch_size_events_bucket{I}[{R}])))",
                        "p99",
                    ),
                ],
            ),
        ],
    ),
    (
        "Freshness and latency",
        [
            (
                "Event → vector latency",
                "s",
                [
                    (f"lorastream:event_to_vector_latency_seconds:p50_1m{I}", "p50 {{instance}}"),
                    (f"lorastream:event_to_vector_latency_seconds:p95_1m{I}", "p95 {{instance}}"),
                    (f"lorastream:event_to_vector_latency_seconds:p99_1m{I}", "p99 {{instance}}"),
                ],
            ),
            (
                "Processing lag",
                "s",
                [(f"max by (instance) (lorastream_processing_lag_seconds{I})", "{{instance}}")],
            ),
            (
                "Published vectors behind the model",
                "none",
                [
                    (f"max by (kind) (lorastream_vectors_behind_updates{I})", "{{kind}}"),
                    (
                        f"max by (percentile) (lorastream_item_encoding_age_updates{I})",
                        "item encodings p{{percentile}}",
                    ),
                    (
                        f"max(lorastream_item_encodings_behind{I})",
                        "item encodings behind the model (count)",
                    ),
                ],
            ),
            (
                "Learner update duration",
                "s",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(lorastream_learner_update_duration_seconds_bucket{I}[{R}])))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(lorastream_learner_update_duration_seconds_bucket{I}[{R}])))",
                        "p99",
                    ),
                ],
            ),
            (
                "Where the time goes",
                "percentunit",
                [(f"sum by (stage) (rate(lorastream_stage_seconds_total{I}[{R}]))", "{{stage}}")],
            ),
        ],
    ),
    (
        "Learning quality",
        [
            ("Training loss", "none", [(f"lorastream_training_loss{I}", "{{instance}}")]),
            (
                "Prequential HR@10 / NDCG@10, and by part",
                "percentunit",
                [
                    (
                        'lorastream_prequential_quality{metric=~"hr_at_10|ndcg_at_10",'
                        ' instance=~"$instance"}',
                        "{{metric}} {{part}} (vs {{ranked_against}})",
                    )
                ],
            ),
            (
                "Score mix: the weight served to item-kNN and to the towers",
                "none",
                [(f"lorastream_score_mix{I}", "{{part}}")],
            ),
            (
                "Prequential AUC (chosen vs shown)",
                "percentunit",
                [
                    (
                        'lorastream_prequential_quality{metric="auc", part="full",'
                        ' instance=~"$instance"}',
                        "{{instance}} (vs {{ranked_against}})",
                    )
                ],
            ),
            (
                "Adapter version and skipped updates",
                "none",
                [
                    (f"lorastream_adapter_version{I}", "updates"),
                    (f"lorastream_skipped_updates_total{I}", "skipped (non-finite)"),
                ],
            ),
        ],
    ),
    (
        "Drift",
        [
            (
                "Drift detections",
                "none",
                [
                    (
                        f"sum by (signal) (increase(lorastream_drift_detections_total{I}[{R}]))",
                        "{{signal}}",
                    )
                ],
            ),
            (
                "Adaptation",
                "none",
                [
                    (f"lorastream_drift_adaptation_active{I}", "adapting"),
                    (f"lorastream_learning_rate_factor{I}", "learning-rate factor"),
                    (f"lorastream_learning_rate_annealing{I}", "adapter's rate annealed"),
                    (f"lorastream_replay_ratio{I}", "replay ratio"),
                ],
            ),
            (
                "Replay buffer fill",
                "percentunit",
                [
                    (
                        f"lorastream_state_entries{REPLAY % 'examples'}"
                        f" / lorastream_state_capacity{REPLAY % 'examples'}",
                        "examples",
                    ),
                    (
                        f"lorastream_state_entries{REPLAY % 'bytes'}"
                        f" / lorastream_state_capacity{REPLAY % 'bytes'}",
                        "bytes",
                    ),
                ],
            ),
        ],
    ),
    (
        "Kafka",
        [
            (
                "Consumer lag per partition",
                "short",
                [(f"lorastream_consumer_lag_records{I}", "{{topic}}[{{partition}}]")],
            ),
            (
                "Dead letters by reason",
                "ops",
                [(f"sum by (reason) (rate(lorastream_dead_letters_total{I}[{R}]))", "{{reason}}")],
            ),
            (
                "Dead-letter ratio",
                "percentunit",
                [(f"lorastream:dead_letter_ratio:rate5m{I}", "{{instance}}")],
            ),
            (
                "Offset commits and partitions",
                "none",
                [
                    (
                        f"sum by (result) (increase(lorastream_offset_commits_total{I}[{R}]))",
                        "commits {{result}}",
                    ),
                    (f"lorastream_partitions_assigned{I}", "partitions assigned"),
                ],
            ),
            (
                "Faults: broker contact, failed batches, roll-backs, stalls",
                "none",
                [
                    (f"min by (instance) (lorastream_broker_connected{I})", "broker contact"),
                    (
                        f"sum by (stage) (increase(lorastream_batch_failures_total{I}[{R}]))",
                        "failed batches ({{stage}})",
                    ),
                    (f"sum (increase(lorastream_rewinds_total{I}[{R}]))", "roll-backs"),
                    (
                        "sum by (topic, partition)"
                        f" (increase(lorastream_partition_stalls_total{I}[{R}]))",
                        "stalls {{topic}}[{{partition}}]",
                    ),
                    (
                        f"sum (increase(lorastream_checkpoints_quarantined_total{I}[{R}]))",
                        "checkpoints quarantined",
                    ),
                ],
            ),
        ],
    ),
    (
        "Resources",
        [
            ("Resident memory", "bytes", [(f"process_resident_memory_bytes{I}", "{{instance}}")]),
            ("CPU", "percentunit", [(f"rate(process_cpu_seconds_total{I}[{R}])", "{{instance}}")]),
            (
                "GPU memory (0 without a GPU)",
                "bytes",
                [
                    (
                        f"sum by (kind) (lorastream_gpu_memory_bytes{I}) or on () vector(0)",
                        "{{kind}}",
                    )
                ],
            ),
            (
                "Bounded state fill",
                "percentunit",
                [(f"lorastream_state_entries{I} / lorastream_state_capacity{I}", "{{state}}")],
            ),
            (
                "Checkpoints",
                "s",
                [
                    (f"time() - lorastream_checkpoint_last_success_timestamp_seconds{I}", "age"),
                    (
                        f"rate(lorastream_checkpoint_duration_seconds_sum{I}[{R}])"
                        f" / rate(lorastream_checkpoint_duration_seconds_count{I}[{R}])",
                        "mean duration",
                    ),
                ],
            ),
        ],
    ),
]

#: Panel descriptions (Grafana shows them as the panel's info tooltip).
DESCRIPTIONS = {
    "Published vectors behind the model": "Learner updates since the oldest user (item) vector"
    " on the compacted topics was computed. The worker re-publishes the oldest ones every"
    " batch and while idle; 0 means every served vector is of the current model. Item"
    " encodings: how many updates old the cached backbone encodings behind item vectors"
    " are (percentiles), and how many are older than the model (a count; the worker"
    " re-encodes them while idle, then publishes every vector again).",
    "Prequential HR@10 / NDCG@10, and by part": (
        "Every new positive's item is ranked before it is learned (where consumed items are"
        " left out, as by default, a positive on one is no test). ranked_against says what"
        " against: 'catalog' is every item the learner knows (the honest, full-catalog"
        " figure, as the benchmarks report it); 'N sampled' is N random items plus the"
        " true one, which reads several times higher and is comparable only with itself."
        " part: full is the served score; prior is the popularity prior alone; personal the"
        " towers and kNN without it. personal above prior means personalisation helps."
    ),
}

DRIFT_ANNOTATION = (
    'changes(lorastream_drift_last_detection_timestamp_seconds{instance=~"$instance"}[1m]) > 0'
)


def _panel(
    pid: int,
    title: str,
    unit: str,
    targets: list[tuple[str, str]],
    x: int,
    y: int,
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": DESCRIPTIONS.get(title, ""),
        "datasource": DS,
        "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 8}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {"refId": chr(ord("A") + k), "datasource": DS, "expr": expr, "legendFormat": legend}
            for k, (expr, legend) in enumerate(targets)
        ],
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row, row_panels in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        for k, (title, unit, targets) in enumerate(row_panels):
            panels.append(_panel(pid, title, unit, targets, 6 * (k % 4), y + 8 * (k // 4)))
            pid += 1
        y += 8 * ((len(row_panels) + 3) // 4)
    return {
        "uid": "lorastream",
        "title": "lorastream",
        "tags": ["lorastream", "kafka", "ml"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "worker",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(lorastream_build_info, instance)",
                        "refId": "instances",
                    },
                    "definition": "label_values(lorastream_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "name": "Drift",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "red",
                    "expr": DRIFT_ANNOTATION,
                    "step": "15s",
                    "titleFormat": "drift on {{signal}}",
                    "tagKeys": "signal",
                    "useValueForTime": False,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel or annotation title, PromQL) of every query in a dashboard JSON."""
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [
        (f"annotation: {a['name']}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return out


def main(argv: list[str]) -> int:
    if "--check" in argv:
        if DASHBOARD_PATH.read_text(encoding="utf-8") != render():
            print(
                f"{DASHBOARD_PATH} is out of date: run python -m deploy.grafana.dashboard",
                file=sys.stderr,
            )
            return 1
        return 0
    DASHBOARD_PATH.write_text(render(), encoding="utf-8")
    print(DASHBOARD_PATH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
