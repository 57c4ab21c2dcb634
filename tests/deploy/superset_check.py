#!/usr/bin/env python3
"""Checks a running Superset the way a user would reach the data, through its REST API:
login, CSRF token, SQL Lab query on ctr_latest_view, the "CTR overview" dashboard and the data of
each of its charts. Optionally takes a headless Chromium screenshot of the dashboard.

usage: superset_check.py SUPERSET_URL USER PASSWORD [--screenshot PNG]
Prints one line per check; exits non-zero on the first failure.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import requests


CHART_TITLES = ["CTR", "CVR", "eCPM", "Revenue", "CTR over time, top products", "Impressions and clicks per minute",
                "CTR, last 5 minutes, sliding", "CTR by country", "CTR by campaign", "CTR by product", "Revenue and eCPM by product",
                "Funnel: where people drop off"]
# Charts that show rates (as percentages) and money (as currency).
RATE_CHARTS = ("CTR", "CVR", "CTR over time, top products", "CTR, last 5 minutes, sliding", "CTR by country", "CTR by campaign",
               "CTR by product", "Revenue and eCPM by product")
MONEY_CHARTS = ("eCPM", "Revenue", "CTR by product", "Revenue and eCPM by product")

# Warning icons in chart headers (e.g. "row limit reached", a query warning), as titles of the
# chart header's icons.
WARNING_ICONS = """(() => Array.from(document.querySelectorAll('[data-test="slice-header"], .chart-header, .header-controls'))
    .flatMap(h => Array.from(h.querySelectorAll('[aria-label*="warning" i], .anticon-warning, [class*="warning" i], [data-test*="warning" i]'))
    .map(w => (h.innerText.split("\\n")[0] || "?") + ": " + (w.getAttribute("aria-label") || w.className || "")))
)()"""


def main():
    url, user, password = sys.argv[1:4]
    screenshot = sys.argv[sys.argv.index("--screenshot") + 1] if "--screenshot" in sys.argv else None
    session = requests.Session()
    token = session.post(f"{url}/api/v1/security/login",
                         json={"username": user, "password": password, "provider": "db", "refresh": True}).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    session.headers["X-CSRFToken"] = session.get(f"{url}/api/v1/security/csrf_token/").json()["result"]
    session.headers["Referer"] = url
    print("login and CSRF token: ok")

    databases = session.get(f"{url}/api/v1/database/").json()["result"]
    database = next(d for d in databases if d["database_name"] == "ClickHouse CTR")
    response = session.post(f"{url}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "sql": "SELECT product_id, ctr, impressions FROM ctr_latest_view FINAL ORDER BY impressions DESC LIMIT 5",
        "runAsync": False, "tab": "check", "select_as_cta": False})
    response.raise_for_status()
    rows = response.json().get("data", [])
    assert rows, f"SQL Lab returned no rows: {response.text[:300]}"
    print(f"SQL Lab on ctr_latest_view: {len(rows)} rows, first {rows[0]}")

    dashboards = session.get(f"{url}/api/v1/dashboard/", params={"q": json.dumps({"filters": [{"col": "dashboard_title", "opr": "eq", "value": "CTR overview"}]})}).json()["result"]
    assert dashboards, "dashboard 'CTR overview' not found"
    dashboard = dashboards[0]["id"]
    charts = session.get(f"{url}/api/v1/dashboard/{dashboard}/charts").json()["result"]
    assert len(charts) >= len(CHART_TITLES), f"dashboard has {len(charts)} charts"
    for chart in charts:
        data = session.get(f"{url}/api/v1/chart/{chart['id']}/data/")
        assert data.status_code == 200, f"chart {chart['slice_name']}: HTTP {data.status_code}: {data.text[:500]}"
        count = sum(len(result.get("data", [])) for result in data.json()["result"])
        assert count > 0, f"chart {chart['slice_name']} has no data: {data.text[:300]}"
        print(f"chart '{chart['slice_name']}': {count} rows")

    # What an analyst sees: the time filter (last 15 minutes by default), auto-refresh, and the
    # formats (CTR and CVR as percentages, money as currency).
    metadata = json.loads(session.get(f"{url}/api/v1/dashboard/{dashboard}").json()["result"]["json_metadata"])
    assert metadata.get("refresh_frequency", 0) > 0, f"no auto-refresh: {metadata}"
    filters = [f for f in metadata.get("native_filter_configuration", []) if f.get("filterType") == "filter_time"]
    assert filters, "the dashboard has no time-range filter"
    time_range = filters[0]["defaultDataMask"]["extraFormData"]["time_range"]
    assert "-15, minute" in time_range, f"the time filter's default is {time_range!r}"
    print(f"time filter: default {time_range!r}, auto-refresh every {metadata['refresh_frequency']} s")
    in_scope = set(filters[0].get("chartsInScope", []))
    for chart in charts:
        params = json.loads(session.get(f"{url}/api/v1/chart/{chart['id']}").json()["result"]["params"])
        formats = json.dumps(params)
        if chart["slice_name"] in RATE_CHARTS:
            assert ".2%" in formats, f"chart {chart['slice_name']} does not show rates as percentages"
        if chart["slice_name"] in MONEY_CHARTS:
            assert "$,.2f" in formats, f"chart {chart['slice_name']} does not show money as currency"
        if chart["id"] in in_scope:
            # As the dashboard sends it: the filter's range in the chart's TEMPORAL_RANGE filter.
            context = json.loads(session.get(f"{url}/api/v1/chart/{chart['id']}").json()["result"]["query_context"])
            for query in context["queries"]:
                ranges = [f for f in query.get("filters", []) if f.get("op") == "TEMPORAL_RANGE"]
                assert ranges, f"chart {chart['slice_name']} is in the time filter's scope but has no TEMPORAL_RANGE filter"
                for f in ranges:
                    f["val"] = time_range
            filtered = session.post(f"{url}/api/v1/chart/data", json=context)
            assert filtered.status_code == 200, f"chart {chart['slice_name']} with the time filter: HTTP {filtered.status_code}: {filtered.text[:300]}"
            results = filtered.json()["result"]
            rows = sum(len(result.get("data", [])) for result in results)
            assert rows > 0, f"chart {chart['slice_name']} has no data in the last 15 minutes"
            sql = " ".join(result.get("query", "") for result in results)
            assert "WHERE" in sql and ">=" in sql, f"chart {chart['slice_name']}: the time filter does not restrict the query: {sql[:400]}"
    print(f"formats: percentages and currency; {len(in_scope)} charts have data in the last 15 minutes")

    if screenshot:
        take_screenshot(url, user, password, dashboard, screenshot)
        print(f"screenshot: {screenshot}")


def take_screenshot(url, user, password, dashboard, path):
    """Logs in through Superset's form, hands the session cookie to headless Chromium over the
    DevTools protocol, opens the dashboard and saves a PNG."""
    import base64
    import socket
    import time

    import websocket  # websocket-client

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (apt-get install -y chromium)"
    session = requests.Session()
    login = session.get(f"{url}/login/")
    csrf = login.text.split('name="csrf_token"')[1].split('value="')[1].split('"')[0]
    session.post(f"{url}/login/", data={"username": user, "password": password, "csrf_token": csrf})
    cookie = session.cookies.get("session")
    assert cookie, "form login gave no session cookie"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="chromium-")
    process = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1400,3600",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                pages = requests.get(f"http://127.0.0.1:{port}/json", timeout=1).json()
                target = next(p for p in pages if p.get("type") == "page")
                break
            except Exception:  # noqa: BLE001 - browser still starting
                time.sleep(0.2)
        socket_url = target["webSocketDebuggerUrl"]
        ws = websocket.create_connection(socket_url, timeout=60)
        counter = [0]

        def call(method, **params):
            counter[0] += 1
            ws.send(json.dumps({"id": counter[0], "method": method, "params": params}))
            while True:
                message = json.loads(ws.recv())
                if message.get("id") == counter[0]:
                    return message.get("result", {})

        host = url.split("//")[1].split("/")[0].split(":")[0]
        call("Network.enable")
        call("Network.setCookie", name="session", value=cookie, domain=host, path="/")
        call("Page.enable")
        call("Page.navigate", url=f"{url}/superset/dashboard/{dashboard}/?standalone=1")
        # Wait until every chart has rendered: all titles shown, no loading indicator left.
        rendered = "(() => { const text = document.body.innerText; return " + json.dumps(CHART_TITLES) + \
            ".every(t => text.includes(t)) && document.querySelectorAll('.loading, [data-test=\"loading-indicator\"], .ant-skeleton-active').length === 0" + \
            " && document.querySelectorAll('.chart-container, [data-test=\"chart-container\"]').length >= " + str(len(CHART_TITLES)) + "; })()"
        deadline = time.monotonic() + 120
        while not call("Runtime.evaluate", expression=rendered, returnByValue=True)["result"].get("value"):
            assert time.monotonic() < deadline, "the dashboard did not finish rendering in 120 s"
            time.sleep(0.5)
        text = call("Runtime.evaluate", expression="document.body.innerText")["result"].get("value", "")
        warnings = call("Runtime.evaluate", returnByValue=True, expression=WARNING_ICONS)["result"].get("value", [])
        image = call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(image))
        ws.close()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    for title in CHART_TITLES:
        assert title in text, f"dashboard page does not show chart {title!r}: {text[:300]}"
    for failure in ("Unexpected error", "Error:", "Not found", "No results"):
        assert failure not in text, f"dashboard page shows {failure!r}: ...{text[text.find(failure) - 300:text.find(failure) + 300]}"
    assert not warnings, f"charts show warning icons: {warnings}"
    assert "%" in text and "$" in text, "the page shows percentages and currency"
    raw = re.findall(r"(?<![\d.$])0\.\d{4,}", text)
    assert not raw, f"unformatted fractions on the page: {raw[:5]}"


if __name__ == "__main__":
    main()
