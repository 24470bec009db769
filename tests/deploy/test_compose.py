"""The docker-compose stack and the Dockerfile, checked structurally (no Docker engine here):
services, ports, volumes and provisioning paths exist and agree with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from schemas.settings import MetricsSettings, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())  # type: ignore[no-any-return]


def test_the_stack_has_its_services() -> None:
    services = compose()["services"]
    assert {"kafka", "topics", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert (
        services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    )
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_lorastream_services_reach_kafka_on_its_advertised_listener() -> None:
    services = compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("topics", "worker"):
        bootstrap = services[name]["environment"]["LORASTREAM_KAFKA__BOOTSTRAP_SERVERS"]
        assert f"//{bootstrap}" in advertised


def test_every_bind_mount_source_exists_in_the_repository() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    build = compose()["services"]["topics"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_prometheus_scrapes_the_worker_port_and_loads_the_rules() -> None:
    services = compose()["services"]
    port = MetricsSettings().port
    assert f"{port}:{port}" in services["worker"]["ports"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config_dir = Path(mounts["./prometheus/prometheus.yml"]).parent
    for pattern in prometheus["rule_files"]:
        mounted = (config_dir / pattern).parent.as_posix()
        local = next(src for src, dst in mounts.items() if dst == mounted)
        assert list((DEPLOY / local).glob(Path(pattern).name))


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    services = compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    provider = yaml.safe_load((provisioning / "dashboards" / "lorastream.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    local = next(src for src, dst in mounts.items() if dst == path)
    assert (DEPLOY / local / "lorastream.json").is_file()
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_dockerfile_builds_the_worker() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11", text, re.M)
    for source in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / source).exists(), source
    assert f"EXPOSE {MetricsSettings().port}" in text
    assert "/healthz" in text
    assert 'ENTRYPOINT ["lorastream"]' in text
    grace = compose()["services"]["worker"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > 30  # longer than worker.shutdown_timeout_s


def test_the_gpu_override_reserves_a_gpu_and_uses_a_cuda_base() -> None:
    gpu = compose("docker-compose.gpu.yml")["services"]
    devices = gpu["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "cuda" in gpu["topics"]["build"]["args"]["BASE"]


def test_the_ranks_profile_runs_two_ranks_sharing_one_state() -> None:
    services = compose()["services"]
    ranks = services["ranks"]
    assert ranks["profiles"] == ["ranks"]
    command = ranks["command"]
    world = int(command[command.index("--world-size") + 1])
    port = MetricsSettings().port
    assert [f"{port + r}:{port + r}" for r in range(world)] == ranks["ports"]
    assert ranks["volumes"] == services["worker"]["volumes"]  # the worker's checkpoints


def kubernetes() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "ranks.yaml").read_text())
    return {d["kind"]: d for d in docs}


def test_the_kubernetes_ranks_rendezvous_at_pod_0_of_a_headless_service() -> None:
    k = kubernetes()
    service, ranks = k["Service"], k["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None"
    assert ranks["spec"]["serviceName"] == service["metadata"]["name"]
    container = ranks["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["WORLD_SIZE"]["value"]) == ranks["spec"]["replicas"]
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"].endswith("pod-index']")
    pod_0 = f"{ranks['metadata']['name']}-0.{service['metadata']['name']}"
    assert env["MASTER_ADDR"]["value"] == pod_0
    assert {"name": "rendezvous", "port": int(env["MASTER_PORT"]["value"])} in service["spec"][
        "ports"
    ]
    assert "--world-size" not in container["args"]  # the pods are the ranks
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env["LORASTREAM_DISTRIBUTED__BACKEND"]["value"] == "nccl"


def test_every_kubernetes_rank_mounts_one_shared_checkpoint_volume() -> None:
    k = kubernetes()
    spec = k["StatefulSet"]["spec"]["template"]["spec"]
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == k["PersistentVolumeClaim"]["metadata"]["name"]
    assert k["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = container["volumeMounts"][0]["mountPath"]
    assert env["LORASTREAM_CHECKPOINT__DIR"].startswith(mount + "/")
    ours = {k: v for k, v in env.items() if k.startswith("LORASTREAM_")}
    settings = Settings.load(None, environ=ours)  # every variable names a setting
    assert settings.distributed.backend == "nccl"
