"""Static checks of docker-compose.yml, the Dockerfile and the Grafana dashboard.

There is no Docker engine on the development and CI machines, so Docker mode is validated
statically: the file parses, references resolve, images are pinned, host ports are unique,
the environment matches what the binaries read, the Dockerfile copies paths that exist, and the
dashboard queries metrics the aggregator serves.
"""
import json
import os
import re
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compose():
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        return yaml.safe_load(f)


def test_services_and_references():
    services = compose()["services"]
    for name in ["kafka-1", "kafka-2", "kafka-3", "clickhouse", "schema-migrate", "ctr-aggregator", "ctr-producer",
                 "superset", "kafka-ui", "prometheus", "grafana", "create-topics"]:
        assert name in services, name
    volumes = set((compose().get("volumes") or {}).keys())
    for name, service in services.items():
        for dependency in (service.get("depends_on") or {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert os.path.exists(os.path.join(ROOT, source)), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"


def test_images_are_pinned():
    for name, service in compose()["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        if image.startswith("ctr-pipeline:"):
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name} image {image} is not pinned"


def test_host_ports_do_not_clash():
    seen = {}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            host = str(port).split(":")[0]
            assert host not in seen, f"port {host} used by {seen.get(host)} and {name}"
            seen[host] = name


def test_aggregator_environment_matches_its_options():
    help_text = subprocess.run([os.path.join(ROOT, ".build", "debug", "ctr-aggregator"), "--help"],
                               capture_output=True, text=True).stdout
    options = set(re.findall(r"--([a-z0-9-]+)", help_text))
    for key in compose()["services"]["ctr-aggregator"]["environment"]:
        if key.startswith("CLICKHOUSE_"):
            assert key in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD")
            continue
        assert key.startswith("CTR_"), key
        option = key[4:].lower().replace("_", "-")
        assert option in options, f"{key} does not match an ctr-aggregator option"


def test_dockerfile_copies_existing_paths():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, re.M):
        assert os.path.exists(os.path.join(ROOT, source)), f"Dockerfile copies missing {source}"
    for image, _ in stages:
        assert ":" in image, f"base image {image} is not pinned"


def test_grafana_dashboard_queries_served_metrics():
    with open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "ctr-aggregator.json")) as f:
        dashboard = json.load(f)
    served = {
        "ctr_events_consumed_total", "ctr_events_invalid_total", "ctr_events_too_late_total", "ctr_windows_emitted_total",
        "ctr_open_windows", "ctr_watermark_lag_seconds", "ctr_consumer_lag_messages", "ctr_sink_rows_total", "ctr_sink_retries_total",
        "ctr_sink_failures_total", "ctr_sink_insert_seconds_bucket", "ctr_result_latency_seconds_bucket", "ctr_buffer_rows",
    }
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"ctr_[a-z_]+", target["expr"]):
                assert metric in served, f"panel {panel['title']} queries unknown {metric}"
