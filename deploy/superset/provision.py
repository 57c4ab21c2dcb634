#!/usr/bin/env python3
"""Dashboards as code: creates (or updates) the ClickHouse database, datasets, charts and the
"CTR overview" dashboard described by dashboard.json through Superset's REST API. Idempotent:
objects are looked up by name first.

usage: provision.py SUPERSET_URL USER PASSWORD SQLALCHEMY_URI dashboard.json
"""
import json
import sys

import requests


class Superset:
    def __init__(self, url, user, password):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        response = self.session.post(f"{self.url}/api/v1/security/login",
                                     json={"username": user, "password": password, "provider": "db", "refresh": True})
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        csrf = self.session.get(f"{self.url}/api/v1/security/csrf_token/")
        csrf.raise_for_status()
        self.session.headers["X-CSRFToken"] = csrf.json()["result"]
        self.session.headers["Referer"] = self.url

    def find(self, resource, column, value):
        query = json.dumps({"filters": [{"col": column, "opr": "eq", "value": value}]})
        response = self.session.get(f"{self.url}/api/v1/{resource}/", params={"q": query})
        response.raise_for_status()
        result = response.json()["result"]
        return result[0]["id"] if result else None

    def upsert(self, resource, column, value, body):
        existing = self.find(resource, column, value)
        if existing is None:
            response = self.session.post(f"{self.url}/api/v1/{resource}/", json=body)
        else:
            response = self.session.put(f"{self.url}/api/v1/{resource}/{existing}", json=body)
        if response.status_code >= 400:
            raise SystemExit(f"{resource} {value!r}: HTTP {response.status_code}: {response.text[:500]}")
        return existing if existing is not None else response.json()["id"]


def main():
    url, user, password, uri, spec_file = sys.argv[1:6]
    with open(spec_file) as f:
        spec = json.load(f)
    superset = Superset(url, user, password)
    database = superset.upsert("database", "database_name", spec["database_name"], {
        "database_name": spec["database_name"], "sqlalchemy_uri": uri, "expose_in_sqllab": True, "allow_run_async": False,
    })
    datasets = {}
    for dataset in spec["datasets"]:
        body = {"database": database, "table_name": dataset["name"], "sql": dataset["sql"]}
        existing = superset.find("dataset", "table_name", dataset["name"])
        if existing is None:
            response = superset.session.post(f"{superset.url}/api/v1/dataset/", json=body)
            if response.status_code >= 400:
                raise SystemExit(f"dataset {dataset['name']}: HTTP {response.status_code}: {response.text[:500]}")
            existing = response.json()["id"]
        update = {"sql": dataset["sql"]}
        if "temporal_column" in dataset:
            update["main_dttm_col"] = dataset["temporal_column"]
        superset.session.put(f"{superset.url}/api/v1/dataset/{existing}", json=update)
        superset.session.put(f"{superset.url}/api/v1/dataset/{existing}/refresh")
        if "temporal_column" in dataset:
            columns = superset.session.get(f"{superset.url}/api/v1/dataset/{existing}").json()["result"]["columns"]
            for column in columns:
                if column["column_name"] == dataset["temporal_column"]:
                    superset.session.put(f"{superset.url}/api/v1/dataset/{existing}", json={
                        "columns": [{"id": c["id"], "column_name": c["column_name"],
                                     "is_dttm": c["column_name"] == dataset["temporal_column"] or bool(c.get("is_dttm"))}
                                    for c in columns]})
        datasets[dataset["name"]] = existing
    dashboard = superset.upsert("dashboard", "dashboard_title", spec["dashboard"]["title"], {
        "dashboard_title": spec["dashboard"]["title"], "slug": spec["dashboard"]["slug"], "published": True,
    })
    temporal = {dataset["name"]: dataset.get("temporal_column") for dataset in spec["datasets"]}
    charts = []
    for chart in spec["charts"]:
        params = dict(chart["params"], viz_type=chart["viz_type"], datasource=f"{datasets[chart['dataset']]}__table")
        query = dict(chart["query"])
        column = temporal[chart["dataset"]]
        if column and chart.get("time_filter", True):
            # The dashboard's time-range filter narrows a chart through a TEMPORAL_RANGE filter on
            # the dataset's time column (what Explore adds by default); without one it has no effect.
            params["adhoc_filters"] = [{"clause": "WHERE", "subject": column, "operator": "TEMPORAL_RANGE",
                                        "comparator": "No filter", "expressionType": "SIMPLE"}]
            query["filters"] = [{"col": column, "op": "TEMPORAL_RANGE", "val": "No filter"}]
        query_context = {"datasource": {"id": datasets[chart["dataset"]], "type": "table"}, "force": False,
                         "queries": [query], "form_data": params, "result_format": "json", "result_type": "full"}
        charts.append(superset.upsert("chart", "slice_name", chart["name"], {
            "slice_name": chart["name"], "viz_type": chart["viz_type"], "datasource_id": datasets[chart["dataset"]],
            "datasource_type": "table", "params": json.dumps(params), "query_context": json.dumps(query_context),
            "dashboards": [dashboard],
        }))
    position = layout(spec, charts)
    metadata = {
        # Auto-refresh: every chart re-queries on this period while the dashboard is open.
        "refresh_frequency": spec["dashboard"].get("refresh_seconds", 30),
        "native_filter_configuration": [time_filter(spec, charts)],
        "color_scheme": "supersetColors",
        "cross_filters_enabled": False,
    }
    response = superset.session.put(f"{superset.url}/api/v1/dashboard/{dashboard}",
                                    json={"position_json": json.dumps(position), "json_metadata": json.dumps(metadata)})
    if response.status_code >= 400:
        raise SystemExit(f"dashboard layout: HTTP {response.status_code}: {response.text[:500]}")
    print(f"provisioned database {database}, datasets {sorted(datasets)}, charts {charts}, dashboard {dashboard}")


def layout(spec, charts):
    """Rows of charts in the order of the spec: charts with the same `row` share it, each `width`
    columns wide (of 12) and `height` grid units tall."""
    position = {"DASHBOARD_VERSION_KEY": "v2", "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
                "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
                "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": spec["dashboard"]["title"]}}}
    for index, (chart, chart_id) in enumerate(zip(spec["charts"], charts)):
        row = f"ROW-{chart.get('row', index)}"
        if row not in position:
            position["GRID_ID"]["children"].append(row)
            position[row] = {"type": "ROW", "id": row, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
                             "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        cell = f"CHART-{index}"
        position[row]["children"].append(cell)
        position[cell] = {"type": "CHART", "id": cell, "children": [], "parents": ["ROOT_ID", "GRID_ID", row],
                          "meta": {"chartId": chart_id, "width": chart.get("width", 12), "height": chart.get("height", 50),
                                   "sliceName": chart["name"]}}
    return position


def time_filter(spec, charts):
    """The dashboard's time-range filter (a native filter), applied to every chart whose spec does not
    say `"time_filter": false`, with the spec's default range."""
    config = spec["dashboard"]["time_filter"]
    excluded = [chart_id for chart, chart_id in zip(spec["charts"], charts) if chart.get("time_filter") is False]
    return {
        "id": "NATIVE_FILTER-ctr-time-range",
        "name": config["name"],
        "filterType": "filter_time",
        "type": "NATIVE_FILTER",
        "description": f"Event time of the data shown; default: {config['default'].lower()}",
        "targets": [{}],
        "controlValues": {"enableEmptyFilter": False},
        "defaultDataMask": {"extraFormData": {"time_range": config["time_range"]},
                            "filterState": {"value": config["time_range"]}, "ownState": {}},
        "cascadeParentIds": [],
        "scope": {"rootPath": ["ROOT_ID"], "excluded": excluded},
        "chartsInScope": [chart_id for chart_id in charts if chart_id not in excluded],
        "tabsInScope": [],
    }


if __name__ == "__main__":
    main()
