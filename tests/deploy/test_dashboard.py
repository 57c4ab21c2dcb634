"""Static checks of the Superset dashboard definition (deploy/superset/dashboard.json), which
deploy/superset/provision.py turns into datasets, charts and the "CTR overview" dashboard.

What Superset does with it is checked against a running Superset by tests/deploy/superset_check.py
(scripts/e2e-setup.sh); these checks catch a broken definition without one.
"""
import importlib.util
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spec():
    with open(os.path.join(ROOT, "deploy", "superset", "dashboard.json")) as f:
        return json.load(f)


def superset_check():
    path = os.path.join(ROOT, "tests", "deploy", "superset_check.py")
    loader = importlib.util.spec_from_file_location("superset_check", path)
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except ImportError:  # requests is only in Superset's virtual environment: read the list from the text
        with open(path) as f:
            text = f.read()
        module.CHART_TITLES = json.loads(re.search(r"CHART_TITLES = (\[.*?\])", text, re.S).group(1))
    return module


def selected_columns(sql):
    """The output names of a dataset's outer SELECT (aliases, or plain column names)."""
    depth, start, outer = 0, None, None
    for match in re.finditer(r"\(|\)|\bSELECT\b|\bFROM\b", sql):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif token == "SELECT" and depth == 0 and start is None:
            start = match.end()
        elif token == "FROM" and depth == 0 and start is not None:
            outer = sql[start:match.start()]
            break
    names, depth, item = [], 0, ""
    for char in outer + ",":
        if char == "," and depth == 0:
            names.append(re.split(r"\s+AS\s+|\s+", item.strip())[-1])
            item = ""
            continue
        depth += (char == "(") - (char == ")")
        item += char
    return set(names)


def test_charts_use_defined_datasets_and_their_columns():
    definition = spec()
    datasets = {d["name"]: d for d in definition["datasets"]}
    assert len(datasets) == len(definition["datasets"]), "dataset names are unique"
    names = [c["name"] for c in definition["charts"]]
    assert len(set(names)) == len(names), "chart names are unique"
    for chart in definition["charts"]:
        dataset = datasets[chart["dataset"]]
        columns = selected_columns(dataset["sql"])
        if "temporal_column" in dataset:
            assert dataset["temporal_column"] in columns, dataset["name"]
        params, query = chart["params"], chart["query"]
        used = set(query.get("columns", [])) | set(params.get("groupby", [])) | set(params.get("all_columns", []))
        if params.get("x_axis"):
            used.add(params["x_axis"])
        assert used <= columns, f"chart {chart['name']} uses {used - columns} missing from dataset {dataset['name']}"
        for metric in query.get("metrics", []) + params.get("metrics", []):
            for identifier in re.findall(r"\b[a-z_][a-z0-9_]*\b(?!\s*\()", metric["sqlExpression"]):
                assert identifier in columns, f"chart {chart['name']}: metric {metric['label']} uses {identifier}"


def test_rows_fill_the_grid():
    widths = {}
    for chart in spec()["charts"]:
        widths[chart["row"]] = widths.get(chart["row"], 0) + chart.get("width", 12)
    assert all(width <= 12 for width in widths.values()), widths


def test_issue_14_charts():
    charts = {c["name"]: c for c in spec()["charts"]}
    datasets = {d["name"]: d for d in spec()["datasets"]}
    for name, column in (("CTR by country", "country"), ("CTR by campaign", "campaign_id")):
        chart = charts[name]
        assert chart["query"]["columns"] == [column]
        assert re.search(r"FROM ctr_rollup_(5m|1h)_v2\b", datasets[chart["dataset"]]["sql"])
        assert any(m["sqlExpression"] == "sum(clicks) / sum(impressions)" for m in chart["query"]["metrics"]), "CTR from sums"
    sliding = charts["CTR, last 5 minutes, sliding"]
    assert "FROM ctr_sliding_ctr" in datasets[sliding["dataset"]]["sql"] and sliding["params"]["x_axis"] == "period_end"
    assert sliding["query"]["metrics"][0]["sqlExpression"] == "sum(clicks_5m) / sum(impressions_5m)"


def test_the_live_check_expects_every_chart():
    assert superset_check().CHART_TITLES == [c["name"] for c in spec()["charts"]]


def test_rates_are_percentages():
    for chart in spec()["charts"]:
        if any("clicks" in m["sqlExpression"] and "/" in m["sqlExpression"] for m in chart["query"].get("metrics", [])):
            assert ".2%" in json.dumps(chart["params"]), f"chart {chart['name']} shows a rate without a percentage format"
