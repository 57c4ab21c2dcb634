"""Static checks of docker-compose.yml, the Dockerfile and the Grafana dashboard.

There is no Docker engine on the development and CI machines, so Docker mode is validated
statically: the file parses, references resolve, images are pinned, host ports are unique,
the environment matches what the binaries read, the Dockerfile copies paths that exist, and the
dashboard queries metrics the aggregator serves.
"""
import glob
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
                 "superset", "kafka-ui", "prometheus", "grafana", "create-topics",
                 "clickhouse-keeper", "clickhouse-r1", "clickhouse-r2", "schema-migrate-cluster", "ctr-aggregator-r1", "ctr-aggregator-r2"]:
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
        if image.startswith(("ctr-pipeline:", "ctr-superset:")):
            assert "build" in service or any(other.get("image") == image and "build" in other
                                             for other in compose()["services"].values()), f"{name}: nothing builds {image}"
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
    aggregators = [s for s in compose()["services"].values() if "ctr-aggregator" in (s.get("command") or [])]
    assert len(aggregators) == 3
    for key in {key for service in aggregators for key in service["environment"]}:
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
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for source in sources.split():
            matches = glob.glob(os.path.join(ROOT, source))
            assert matches or "[" in source, f"Dockerfile copies missing {source}"
    for image, _ in stages:
        assert ":" in image, f"base image {image} is not pinned"


# What ctr-aggregator serves on /metrics (Sources/CTRPipeline/PipelineMetrics.swift and the
# metrics server): histograms as _bucket/_sum/_count, plus the standard process_* metrics.
SERVED = {
    "ctr_events_consumed_total", "ctr_events_invalid_total", "ctr_events_too_late_total", "ctr_events_late_updates_total",
    "ctr_events_replayed_total", "ctr_events_duplicate_total", "ctr_windows_emitted_total", "ctr_window_rows_emitted_total", "ctr_windows_restored_total",
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


def dockerfile(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def test_dockerfile_uses_the_ci_swift_and_caches_dependencies():
    text = dockerfile("Dockerfile")
    assert re.search(r"^FROM swift:6\.3(\.\d+)?-", text, re.M), "the build stage uses Swift 6.3.x, as CI"
    resolve = text.index("swift package resolve")
    assert text.index("COPY Package.swift") < resolve < text.index("COPY Sources"), \
        "dependencies are resolved in a layer before the sources are copied"


def test_long_running_services_have_healthchecks_and_dependents_wait_for_them():
    services = compose()["services"]
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    clients = {"ctr-producer"}
    for name, service in services.items():
        if name not in one_shot | clients:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dependency, condition in depends.items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition.get("condition") == expected, f"{name} -> {dependency}: {condition}"


def test_aggregators_get_longer_than_their_drain_to_stop():
    def seconds(text):
        match = re.fullmatch(r"(\d+)s", str(text))
        assert match, text
        return int(match.group(1))
    for name, service in compose()["services"].items():
        if "ctr-aggregator" in (service.get("command") or []):
            assert seconds(service.get("stop_grace_period", "10s")) > 30, f"{name} stop_grace_period is not above the 30 s drain"


def test_kafka_brokers_keep_their_data_in_volumes():
    services = compose()["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        service = services[name]
        log_dirs = service["environment"]["KAFKA_LOG_DIRS"]
        assert any(v.split(":")[1] == log_dirs and not v.startswith("./") for v in service["volumes"]), name


def test_superset_image_bakes_its_dependencies_and_matches_native_major_version():
    service = compose()["services"]["superset"]
    assert service["build"]["context"] == "./deploy/superset"
    text = dockerfile("deploy/superset/Dockerfile")
    base = re.search(r"^FROM apache/superset:(\d+)\.", text, re.M)
    native = re.search(r"apache-superset==(\d+)\.", dockerfile("scripts/superset-native.sh"))
    assert base and native and base.group(1) == native.group(1) == "6", "Superset 6.x in Docker and natively"
    assert "clickhouse-connect" in text, "the ClickHouse driver is in the image"
    init = dockerfile("deploy/superset/docker-init.sh")
    assert "pip install" not in init, "nothing is installed at start"
    for source in re.findall(r"^COPY\s+(.+)\s+\S+$", text, re.M)[0].split():
        assert os.path.exists(os.path.join(ROOT, "deploy", "superset", source)), source


def test_kafka_ui_is_the_maintained_image():
    image = compose()["services"]["kafka-ui"]["image"]
    assert "kafbat/kafka-ui" in image and "provectus" not in image


def test_cluster_profile():
    services = compose()["services"]
    cluster = {name for name, service in services.items() if "cluster" in (service.get("profiles") or [])}
    assert cluster == {"clickhouse-keeper", "clickhouse-r1", "clickhouse-r2", "schema-migrate-cluster", "ctr-aggregator-r1",
                       "ctr-aggregator-r2"}
    migrate = services["schema-migrate-cluster"]["command"]
    assert migrate[migrate.index("--cluster") + 1] == "ctr_cluster"
    with open(os.path.join(ROOT, "deploy", "clickhouse", "cluster", "cluster.xml")) as f:
        remote = f.read()
    assert "<ctr_cluster>" in remote and "clickhouse-keeper" in remote
    replicas = set()
    for name in ("clickhouse-r1", "clickhouse-r2"):
        assert f"<host>{name}</host>" in remote, f"{name} is a replica of ctr_cluster"
        macros = [v for v in services[name]["volumes"] if v.endswith("replica.xml:ro")][0].split(":")[0]
        with open(os.path.join(ROOT, macros)) as f:
            replicas.add(re.search(r"<replica>(\w+)</replica>", f.read()).group(1))
    assert len(replicas) == 2, "each replica has its own name"
    groups = set()
    for name, replica in (("ctr-aggregator-r1", "clickhouse-r1"), ("ctr-aggregator-r2", "clickhouse-r2")):
        environment = services[name]["environment"]
        assert environment["CTR_CLICKHOUSE_URL"] == f"http://{replica}:8123"
        groups.add(environment["CTR_GROUP_ID"])
    assert len(groups) == 1 and groups != {services["ctr-aggregator"]["environment"]["CTR_GROUP_ID"]}, \
        "the cluster's aggregators share one consumer group of their own"
