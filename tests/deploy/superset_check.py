#!/usr/bin/env python3
"""Checks a running Superset the way a user would reach the data, through its REST API:
login, CSRF token, SQL Lab query on ctr_latest_view, the "CTR overview" dashboard and the data of
each of its charts. Optionally takes a headless Chromium screenshot of the dashboard.

usage: superset_check.py SUPERSET_URL USER PASSWORD [--screenshot PNG]
Prints one line per check; exits non-zero on the first failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import requests


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
    assert len(charts) >= 5, f"dashboard has {len(charts)} charts"
    for chart in charts:
        data = session.get(f"{url}/api/v1/chart/{chart['id']}/data/")
        assert data.status_code == 200, f"chart {chart['slice_name']}: HTTP {data.status_code}: {data.text[:500]}"
        count = sum(len(result.get("data", [])) for result in data.json()["result"])
        assert count > 0, f"chart {chart['slice_name']} has no data: {data.text[:300]}"
        print(f"chart '{chart['slice_name']}': {count} rows")

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
                                f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--window-size=1400,3200",
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
        time.sleep(15)
        text = call("Runtime.evaluate", expression="document.body.innerText")["result"].get("value", "")
        image = call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(image))
        ws.close()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    for title in ("CTR by product", "CTR over time, top products", "Impressions and clicks per minute",
                  "Revenue and eCPM by product", "Funnel: where people drop off"):
        assert title in text, f"dashboard page does not show chart {title!r}: {text[:300]}"
    for failure in ("Unexpected error", "Error:", "Not found"):
        assert failure not in text, f"dashboard page shows {failure!r}: ...{text[text.find(failure) - 300:text.find(failure) + 300]}"


if __name__ == "__main__":
    main()
