"""Static checks of docker-compose.yml, the Dockerfile and the Grafana dashboard.

There is no Docker engine on the development and CI machines, so Docker mode is validated
statically: the file parses, references resolve, images are pinned, host ports are unique,
the environment matches what the binaries read, the Dockerfile copies paths that exist, and the
dashboard queries metrics the aggregator serves.
"""
import json
import os
import re
import shutil
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


# What ctr-aggregator serves on /metrics (Sources/CTRPipeline/PipelineMetrics.swift and the
# metrics server): histograms as _bucket/_sum/_count, plus the standard process_* metrics.
SERVED = {
    "ctr_events_consumed_total", "ctr_events_invalid_total", "ctr_events_too_late_total", "ctr_events_late_updates_total",
    "ctr_events_replayed_total", "ctr_windows_emitted_total", "ctr_window_rows_emitted_total", "ctr_windows_restored_total",
    "ctr_open_windows", "ctr_watermark_timestamp_seconds", "ctr_watermark_lag_seconds", "ctr_consumer_lag_messages",
    "ctr_offset_commits_total", "ctr_sink_batches_total", "ctr_sink_rows_total", "ctr_sink_retries_total",
    "ctr_sink_failures_total", "ctr_sink_insert_seconds_bucket", "ctr_result_latency_seconds_bucket", "ctr_buffer_rows",
    "ctr_consuming_paused", "ctr_ready", "ctr_build_info",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
}
METRIC = re.compile(r"\b((?:ctr|process)_[a-z_]+)\b")


def grafana_dashboard():
    with open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "ctr-aggregator.json")) as f:
        return json.load(f)


def test_grafana_dashboard_queries_served_metrics():
    for panel in grafana_dashboard()["panels"]:
        for target in panel["targets"]:
            for metric in METRIC.findall(target["expr"]):
                assert metric in SERVED, f"panel {panel['title']} queries unknown {metric}"


def test_grafana_panels_have_units_and_rate_interval():
    for panel in grafana_dashboard()["panels"]:
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']} has no unit"
        for target in panel["targets"]:
            for window in re.findall(r"(?:rate|increase|irate)\([^\[]*\[([^\]]+)\]", target["expr"]):
                assert window == "$__rate_interval", f"panel {panel['title']} uses a fixed rate window [{window}]"


def promtool():
    for candidate in (os.path.join(ROOT, ".test-artifacts", "tools", "promtool"), shutil.which("promtool")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("promtool is missing: scripts/install-deps.sh --test unpacks it from Debian's prometheus package")


def test_alert_rules_pass_promtool():
    rules = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
    checked = subprocess.run([promtool(), "check", "rules", rules], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], capture_output=True, text=True,
                            cwd=os.path.join(ROOT, "deploy", "prometheus"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_rules_cover_the_operator_questions_and_use_served_metrics():
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        groups = yaml.safe_load(f)["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) >= {"CTRAggregatorDown", "CTRConsumerLagGrowing", "CTRNoRowsWritten", "CTRSinkFailures",
                          "CTRSinkRetrying", "CTRDeadLetterRateHigh", "CTRWatermarkStalled"}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        for metric in METRIC.findall(rule["expr"]):
            assert metric.replace("_bucket", "") in {m.replace("_bucket", "") for m in SERVED}, f"{name} uses unknown {metric}"


def test_prometheus_loads_the_rules():
    with open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert any(m.startswith("./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml") for m in mounts), mounts
