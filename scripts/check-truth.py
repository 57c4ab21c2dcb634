#!/usr/bin/env python3
"""Compares ClickHouse with a ctr-producer truth file.

For every closed (product, window) of the truth file it checks, in ctr_results_raw, that the
highest revision carries the true counts, that the deltas sum to them, and that no
(product, window, revision) appears twice; and that ctr_ml_view (per minute) and
ctr_latest_view agree with the raw table. Prints one line and exits 0 only when everything
matches.

usage: check-truth.py TRUTH_FILE CLICKHOUSE_URL DATABASE [--wait SECONDS]
"""
import json
import sys
import time
import urllib.parse
import urllib.request


def query(url, database, sql):
    request = urllib.request.Request(
        url.rstrip("/") + "/?" + urllib.parse.urlencode({"database": database}),
        data=(sql + " FORMAT TabSeparated").encode(),
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
    return [line.split("\t") for line in text.splitlines() if line]


def micros(text):
    whole, _, fraction = text.partition(".")
    return int(whole) * 1_000_000 + int((fraction + "000000")[:6])


def compare(truth, url, database):
    expected = {
        (w["product_id"], w["window_start_ms"] // 1000):
            (w["impressions"], w["clicks"], w.get("conversions", 0), w.get("revenue_micros", 0))
        for w in truth["windows"]
        if not w["open"]
    }
    rows = query(
        url, database,
        "SELECT product_id, toUnixTimestamp(window_start), argMax(impressions, revision), argMax(clicks, revision), "
        "argMax(conversions, revision), toString(argMax(revenue, revision)), "
        "sum(impressions_delta), sum(clicks_delta), sum(conversions_delta), toString(sum(revenue_delta)), count(), uniqExact(revision) "
        "FROM ctr_results_raw GROUP BY product_id, window_start",
    )
    actual = {}
    duplicated = 0
    for product, start, i, c, v, r, di, dc, dv, dr, count, revisions in rows:
        key = (product, int(start))
        actual[key] = ((int(i), int(c), int(v), micros(r)), (int(di), int(dc), int(dv), micros(dr)))
        duplicated += int(count) - int(revisions)
    lost = sum(1 for key in expected if key not in actual)
    mismatched = 0
    for key, values in expected.items():
        if key in actual:
            latest, deltas = actual[key]
            if latest != values or deltas != values:
                mismatched += 1
    open_keys = {(w["product_id"], w["window_start_ms"] // 1000) for w in truth["windows"] if w["open"]}
    unexpected = sum(1 for key in actual if key not in expected and key not in open_keys)

    # Views against the raw table.
    ml = {
        (p, m): (int(i), int(c))
        for p, m, i, c in query(url, database,
            "SELECT product_id, toUnixTimestamp(window_minute), sumMerge(impressions), sumMerge(clicks) FROM ctr_ml_view GROUP BY product_id, window_minute")
    }
    raw_minutes = {
        (p, m): (int(i), int(c))
        for p, m, i, c in query(url, database,
            "SELECT product_id, toUnixTimestamp(toStartOfMinute(window_end)) AS m, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, m")
    }
    view_mismatches = sum(1 for key in set(ml) | set(raw_minutes) if ml.get(key) != raw_minutes.get(key))
    latest = {
        p: (int(s), int(i), int(c))
        for p, s, i, c in query(url, database,
            "SELECT product_id, toUnixTimestamp(window_start), impressions, clicks FROM ctr_latest_view FINAL")
    }
    raw_latest = {
        p: (int(s), int(i), int(c))
        for p, s, i, c in query(url, database,
            "SELECT product_id, toUnixTimestamp(max(window_start)) AS s, argMax(impressions, (window_start, revision)), "
            "argMax(clicks, (window_start, revision)) FROM ctr_results_raw GROUP BY product_id")
    }
    view_mismatches += sum(1 for key in set(latest) | set(raw_latest) if latest.get(key) != raw_latest.get(key))
    return {
        "windows_checked": len(expected),
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": mismatched,
        "unexpected": unexpected,
        "view_mismatches": view_mismatches,
    }


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    truth_file, url, database = sys.argv[1:4]
    wait = float(sys.argv[sys.argv.index("--wait") + 1]) if "--wait" in sys.argv else 0
    with open(truth_file) as handle:
        truth = json.load(handle)
    deadline = time.time() + wait
    while True:
        result = compare(truth, url, database)
        ok = all(result[k] == 0 for k in ("lost", "duplicated", "mismatched", "unexpected", "view_mismatches"))
        if ok or time.time() >= deadline:
            break
        time.sleep(1)
    sent = truth["events_sent"]
    print(
        f"events={sum(sent.values())} invalid_sent={truth['invalid_sent']} too_late_sent={truth['too_late_sent']} "
        + " ".join(f"{k}={v}" for k, v in result.items())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
