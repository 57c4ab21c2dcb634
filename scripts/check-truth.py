#!/usr/bin/env python3
"""Compares ClickHouse with a ctr-producer truth file.

For every closed (product, window) of the truth file it checks, in ctr_results_raw, that the
highest revision carries the true counts, that the deltas sum to them, and that no
(product, window, revision) appears twice; and that ctr_ml_view (per minute) and
ctr_latest_view agree with the raw table. Prints one line and exits 0 only when everything
matches.

usage: check-truth.py TRUTH_FILE CLICKHOUSE_URL DATABASE [--wait SECONDS]
                      [--dimensions FIELDS] [--dedup] [--check-uniques] [--check-rollups]

Options for an aggregator run with issue 14's features (schema of migration 0010):

  --dimensions campaign_id,country,device_type
        the aggregator ran with `--dimensions` these fields: the key is (product, these
        dimensions, window), in the raw table and in ctr_latest_view. The truth file must have
        been written with `ctr-producer --truth-dimensions` the same fields.
  --dedup
        the aggregator ran with `--dedup-field event_id`: the duplicates the producer sent
        (`--duplicate-fraction`) must not be counted. Without it every copy must be.
  --check-uniques
        the highest revision's unique_impression_users / unique_click_users equal the truth's
        distinct users (`ctr-producer --truth-uniques`), the user hashes of all revisions hold
        each of them exactly once, and ctr_latest_view carries the raw table's figures.
  --check-rollups
        ctr_rollup_5m_v2, ctr_rollup_1h_v2 and ctr_rollup_1d_v2 hold the raw deltas summed per
        (product, dimensions, period); their uniqCombined user sketches are within 2 % (and 2
        users) of the exact count of the raw user hashes.

The new figures are printed after the existing ones (unique_mismatched, user_hash_mismatched,
rollup_mismatched) only when asked for, so the default line is unchanged.
"""
import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request

# Dimension fields with a column in ctr_results_raw, ctr_latest_view and the v2 roll-ups.
DIMENSION_COLUMNS = ("campaign_id", "country", "device_type")
ROLLUPS = (("ctr_rollup_5m_v2", "toStartOfFiveMinute"), ("ctr_rollup_1h_v2", "toStartOfHour"), ("ctr_rollup_1d_v2", "toStartOfDay"))


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


def unescape(text):
    """A TabSeparated string field as the string it is."""
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "b": "\b", "f": "\f"}.get(m.group(1), m.group(1)), text)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("truth_file")
    parser.add_argument("url")
    parser.add_argument("database")
    parser.add_argument("--wait", type=float, default=0, help="retry for up to this many seconds until everything matches")
    parser.add_argument("--dimensions", default="", help="comma-separated dimension fields of the key (default: none, per product)")
    parser.add_argument("--dedup", action="store_true", help="duplicates sent by the producer must not be counted")
    parser.add_argument("--check-uniques", action="store_true", help="check unique users per window against the truth")
    parser.add_argument("--check-rollups", action="store_true", help="check the v2 roll-ups against the raw table")
    options = parser.parse_args(argv)
    options.dimensions = [d.strip() for d in options.dimensions.split(",") if d.strip()]
    unknown = [d for d in options.dimensions if d not in DIMENSION_COLUMNS]
    if unknown or len(set(options.dimensions)) != len(options.dimensions):
        parser.error(f"--dimensions takes distinct fields among {', '.join(DIMENSION_COLUMNS)}, got {options.dimensions}")
    return options


def check_truth_matches(truth, options):
    """An error message when the truth file cannot answer what the options ask, else None."""
    if list(truth.get("dimensions", [])) != options.dimensions:
        return (f"the truth file is keyed by dimensions {truth.get('dimensions', [])}, the check by {options.dimensions}: "
                "give ctr-producer --truth-dimensions the same fields as check-truth --dimensions")
    if options.check_uniques and not truth.get("counts_users"):
        return "the truth file has no unique users: write it with ctr-producer --truth-uniques"
    return None


def window_key(window, dimensions):
    return (window["product_id"], *(window[d] for d in dimensions), window["window_start_ms"] // 1000)


def expected_windows(truth, options):
    """({key: (impressions, clicks, conversions, revenue_micros)}, {key: (impression users, click users)}, open keys)
    for the closed windows of the truth; key = (product, dimension values..., window start in s)."""
    expected, users, open_keys = {}, {}, set()
    for w in truth["windows"]:
        key = window_key(w, options.dimensions)
        if w["open"]:
            open_keys.add(key)
            continue
        counts = (w["impressions"], w["clicks"], w.get("conversions", 0), w.get("revenue_micros", 0))
        if options.dedup:
            duplicates = (w.get("duplicate_impressions", 0), w.get("duplicate_clicks", 0), w.get("duplicate_conversions", 0),
                          w.get("duplicate_revenue_micros", 0))
            counts = tuple(a - b for a, b in zip(counts, duplicates))
        expected[key] = counts
        if options.check_uniques:
            users[key] = (w["unique_impression_users"], w["unique_click_users"])
    return expected, users, open_keys


def compare(truth, run, options):
    """Compares ClickHouse (through `run(sql) -> rows of TabSeparated fields`) with the truth."""
    dims = options.dimensions
    group = ", ".join(["product_id"] + dims)
    width = 1 + len(dims)
    expected, expected_users, open_keys = expected_windows(truth, options)
    user_columns = (", argMax(unique_impression_users, revision), argMax(unique_click_users, revision), "
                    "sum(length(impression_user_hashes)), uniqExactArray(impression_user_hashes), "
                    "sum(length(click_user_hashes)), uniqExactArray(click_user_hashes)") if options.check_uniques else ""
    rows = run(
        f"SELECT {group}, toUnixTimestamp(window_start), argMax(impressions, revision), argMax(clicks, revision), "
        "argMax(conversions, revision), toString(argMax(revenue, revision)), "
        "sum(impressions_delta), sum(clicks_delta), sum(conversions_delta), toString(sum(revenue_delta)), count(), uniqExact(revision)"
        f"{user_columns} FROM ctr_results_raw GROUP BY {group}, window_start",
    )
    actual, actual_users = {}, {}
    duplicated = 0
    for row in rows:
        key = tuple(unescape(v) for v in row[:width]) + (int(row[width]),)
        i, c, v, r, di, dc, dv, dr, count, revisions = row[width + 1:width + 11]
        actual[key] = ((int(i), int(c), int(v), micros(r)), (int(di), int(dc), int(dv), micros(dr)))
        duplicated += int(count) - int(revisions)
        if options.check_uniques:
            actual_users[key] = tuple(int(x) for x in row[width + 11:width + 17])
    lost = sum(1 for key in expected if key not in actual)
    mismatched = 0
    for key, values in expected.items():
        if key in actual:
            latest, deltas = actual[key]
            if latest != values or deltas != values:
                mismatched += 1
    unexpected = sum(1 for key in actual if key not in expected and key not in open_keys)
    result = {
        "windows_checked": len(expected),
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": mismatched,
        "unexpected": unexpected,
    }

    # Views against the raw table.
    ml = {
        (p, m): (int(i), int(c))
        for p, m, i, c in run(
            "SELECT product_id, toUnixTimestamp(window_minute), sumMerge(impressions), sumMerge(clicks) FROM ctr_ml_view GROUP BY product_id, window_minute")
    }
    raw_minutes = {
        (p, m): (int(i), int(c))
        for p, m, i, c in run(
            "SELECT product_id, toUnixTimestamp(toStartOfMinute(window_end)) AS m, sum(impressions_delta), sum(clicks_delta) FROM ctr_results_raw GROUP BY product_id, m")
    }
    view_mismatches = sum(1 for key in set(ml) | set(raw_minutes) if ml.get(key) != raw_minutes.get(key))
    latest_users = ", unique_impression_users, unique_click_users" if options.check_uniques else ""
    raw_users = (", argMax(unique_impression_users, (window_start, revision)), argMax(unique_click_users, (window_start, revision))"
                 if options.check_uniques else "")

    def keyed(rows):
        return {tuple(unescape(v) for v in row[:width]): tuple(int(v) for v in row[width:]) for row in rows}

    latest = keyed(run(f"SELECT {group}, toUnixTimestamp(window_start), impressions, clicks{latest_users} FROM ctr_latest_view FINAL"))
    raw_latest = keyed(run(
        f"SELECT {group}, toUnixTimestamp(max(window_start)) AS s, argMax(impressions, (window_start, revision)), "
        f"argMax(clicks, (window_start, revision)){raw_users} FROM ctr_results_raw GROUP BY {group}"))
    view_mismatches += sum(1 for key in set(latest) | set(raw_latest) if latest.get(key) != raw_latest.get(key))
    result["view_mismatches"] = view_mismatches

    if options.check_uniques:
        unique_mismatched = user_hash_mismatched = 0
        for key, users in expected_users.items():
            if key not in actual_users:
                continue  # counted as lost
            latest_i, latest_c, hashes_i, distinct_i, hashes_c, distinct_c = actual_users[key]
            if (latest_i, latest_c) != users:
                unique_mismatched += 1
            if (hashes_i, distinct_i, hashes_c, distinct_c) != (users[0], users[0], users[1], users[1]):
                user_hash_mismatched += 1
        result["unique_mismatched"] = unique_mismatched
        result["user_hash_mismatched"] = user_hash_mismatched
    if options.check_rollups:
        result["rollup_mismatched"] = compare_rollups(run, dims)
    return result


def compare_rollups(run, dims):
    """Number of (roll-up, product, dimensions, period) whose sums differ from the raw deltas, or
    whose unique users differ from the exact count of the raw user hashes by more than 2 % and 2."""
    group = ", ".join(["product_id"] + dims)
    width = 2 + len(dims)
    mismatched = 0
    for table, period in ROLLUPS:
        rollup = {tuple(row[:width]): [int(v) for v in row[width:]] for row in run(
            f"SELECT {group}, toUnixTimestamp(period_start) AS p, sumMerge(impressions), sumMerge(clicks), sumMerge(conversions), "
            f"uniqCombinedArrayMerge(impression_users), uniqCombinedArrayMerge(click_users) FROM {table} GROUP BY {group}, period_start")}
        raw = {tuple(row[:width]): [int(v) for v in row[width:]] for row in run(
            f"SELECT {group}, toUnixTimestamp({period}(window_start)) AS p, sum(impressions_delta), sum(clicks_delta), "
            f"sum(conversions_delta), uniqExactArray(impression_user_hashes), uniqExactArray(click_user_hashes) "
            f"FROM ctr_results_raw GROUP BY {group}, p")}
        for key in set(rollup) | set(raw):
            got, want = rollup.get(key), raw.get(key)
            if got is None or want is None or got[:3] != want[:3]:
                mismatched += 1
                continue
            if any(abs(g - w) > max(2, 0.02 * w) for g, w in zip(got[3:], want[3:])):
                mismatched += 1
    return mismatched


FAILURES = ("lost", "duplicated", "mismatched", "unexpected", "view_mismatches", "unique_mismatched", "user_hash_mismatched",
            "rollup_mismatched")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    options = parse_arguments(argv)
    with open(options.truth_file) as handle:
        truth = json.load(handle)
    problem = check_truth_matches(truth, options)
    if problem:
        print(f"check-truth: {problem}", file=sys.stderr)
        return 2
    deadline = time.time() + options.wait
    while True:
        result = compare(truth, lambda sql: query(options.url, options.database, sql), options)
        ok = all(result.get(k, 0) == 0 for k in FAILURES)
        if ok or time.time() >= deadline:
            break
        time.sleep(1)
    sent = truth["events_sent"]
    extra = f" duplicates_sent={truth.get('duplicates_sent', 0)}" if options.dedup else ""
    print(
        f"events={sum(sent.values())} invalid_sent={truth['invalid_sent']} too_late_sent={truth['too_late_sent']}{extra} "
        + " ".join(f"{k}={v}" for k, v in result.items())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
