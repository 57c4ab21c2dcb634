"""scripts/check-truth.py against tables in current ClickHouse (chdb, in-process).

The tables follow migration 0010 (ctr_results_raw with campaign_id, country, device_type, unique
users and user hashes; ctr_latest_view keyed by product and dimensions; the v2 roll-ups with
uniqCombinedArray sketches), reduced to what check-truth reads (no cut-over), so that its SQL
and comparisons are tested in-process. A small simulated stream gives both the truth file and the rows an exactly-once aggregator
writes for it (a first emission and a late update); each test then breaks one thing and expects
check-truth to see it.
"""
import hashlib
import importlib.util
import json
import os
from collections import defaultdict

import pytest
from chdb import session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIMS = ["campaign_id", "country", "device_type"]


def load_check_truth():
    spec = importlib.util.spec_from_file_location("check_truth", os.path.join(ROOT, "scripts", "check-truth.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_truth = load_check_truth()

SCHEMA = [
    """CREATE TABLE ctr_results_raw (product_id String, campaign_id String DEFAULT '', country String DEFAULT '',
       device_type String DEFAULT '', window_start DateTime('UTC'), window_end DateTime('UTC'), impressions UInt64, clicks UInt64,
       conversions UInt64, revenue Decimal(18, 6), ctr Float64, impressions_delta UInt64, clicks_delta UInt64, conversions_delta UInt64,
       revenue_delta Decimal(18, 6), revision UInt32, unique_impression_users UInt64 DEFAULT 0, unique_click_users UInt64 DEFAULT 0,
       impression_user_hashes Array(UInt64), click_user_hashes Array(UInt64))
       ENGINE = MergeTree ORDER BY (window_end, product_id)""",
    """CREATE MATERIALIZED VIEW ctr_ml_view ENGINE = AggregatingMergeTree ORDER BY (product_id, window_minute) AS
       SELECT product_id, toStartOfMinute(window_end) AS window_minute, sumState(impressions_delta) AS impressions,
       sumState(clicks_delta) AS clicks FROM ctr_results_raw GROUP BY product_id, window_minute""",
    """CREATE MATERIALIZED VIEW ctr_latest_view ENGINE = ReplacingMergeTree(version) ORDER BY (product_id, campaign_id, country, device_type) AS
       SELECT product_id, campaign_id, country, device_type, window_start, impressions, clicks, unique_impression_users, unique_click_users,
       toUInt64(toUnixTimestamp(window_start)) * 1000000 + revision AS version FROM ctr_results_raw""",
] + [
    statement
    for table, period in check_truth.ROLLUPS
    for statement in (
        f"""CREATE TABLE {table} (product_id String, campaign_id String, country String, device_type String,
           period_start DateTime('UTC'), impressions AggregateFunction(sum, UInt64), clicks AggregateFunction(sum, UInt64),
           conversions AggregateFunction(sum, UInt64), revenue AggregateFunction(sum, Decimal(18, 6)),
           impression_users AggregateFunction(uniqCombinedArray, Array(UInt64)),
           click_users AggregateFunction(uniqCombinedArray, Array(UInt64)))
           ENGINE = AggregatingMergeTree ORDER BY (product_id, campaign_id, country, device_type, period_start)""",
        f"""CREATE MATERIALIZED VIEW {table}_mv TO {table} AS
           SELECT product_id, campaign_id, country, device_type, {period}(window_start) AS period_start,
           sumState(impressions_delta) AS impressions, sumState(clicks_delta) AS clicks, sumState(conversions_delta) AS conversions,
           sumState(revenue_delta) AS revenue,
           uniqCombinedArrayState(impression_user_hashes) AS impression_users, uniqCombinedArrayState(click_user_hashes) AS click_users
           FROM ctr_results_raw GROUP BY product_id, campaign_id, country, device_type, period_start""",
    )
]


def user_hash(user):
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "little")


def stream():
    """(product, dims, window start s, kind, user or None, event id, is duplicate, late) events: two
    windows, three products, repeat users, anonymous users, duplicates, late updates."""
    events = []
    countries = ["US", "IN", "GB"]
    for n in range(400):
        product = f"p-{n % 3}"
        dims = (f"cmp-000{1 + n % 2}", countries[n % 3 if n % 5 else 0], "mobile" if n % 4 else "desktop")
        window = 1_700_000_000 + 10 * (n % 2)
        user = None if n % 17 == 0 else f"u-{n % 23}"
        kind = "click" if n % 7 == 0 else "impression"
        late = n % 11 == 0
        events.append((product, dims, window, kind, user, f"e-{n}", False, late))
        if n % 13 == 0:
            events.append((product, dims, window, kind, user, f"e-{n}", True, late))
    return events


def truth_of(events, dimensions, dedup_fields=True):
    windows = {}
    for product, dims, window, kind, user, _, duplicate, _ in events:
        values = dict(zip(DIMS, dims))
        key = (product, *(values[d] for d in dimensions), window)
        entry = windows.setdefault(key, {"product_id": product, **{d: values[d] for d in dimensions}, "window_start_ms": window * 1000,
                                         "impressions": 0, "clicks": 0, "conversions": 0, "revenue_micros": 0, "open": False,
                                         "_iu": set(), "_cu": set()})
        field = "impressions" if kind == "impression" else "clicks"
        entry[field] += 1
        if duplicate and dedup_fields:
            entry["duplicate_" + field] = entry.get("duplicate_" + field, 0) + 1
        if user is not None:
            entry["_iu" if kind == "impression" else "_cu"].add(user)
    for entry in windows.values():
        entry["unique_impression_users"] = len(entry.pop("_iu"))
        entry["unique_click_users"] = len(entry.pop("_cu"))
    return {"window_ms": 10_000, "dimensions": dimensions, "counts_users": True, "events_sent": {"impressions": len(events)},
            "duplicates_sent": sum(1 for e in events if e[6]), "too_late_sent": 0, "invalid_sent": 0, "windows": list(windows.values())}


def rows_of(events, dimensions, dedup):
    """The rows of an exactly-once aggregator keyed by `dimensions`: revision 0 with the on-time
    events, revision 1 with the late ones (user hashes: users first seen in that revision)."""
    state = defaultdict(lambda: {"i": 0, "c": 0, "iu": set(), "cu": set(), "ids": set()})
    rows = []
    for late in (False, True):
        touched = {}
        for product, dims, window, kind, user, event_id, _, is_late in events:
            if is_late != late:
                continue
            values = dict(zip(DIMS, dims))
            key = (product, tuple(values[d] if d in dimensions else "" for d in DIMS), window)
            entry = state[key]
            if dedup and (kind, event_id) in entry["ids"]:
                continue
            entry["ids"].add((kind, event_id))
            delta = touched.setdefault(key, {"i": 0, "c": 0, "iu": [], "cu": []})
            side = "i" if kind == "impression" else "c"
            entry[side] += 1
            delta[side] += 1
            if user is not None and user not in entry[side + "u"]:
                entry[side + "u"].add(user)
                delta[side + "u"].append(user_hash(user))
        for key, delta in touched.items():
            product, dims, window = key
            entry = state[key]
            rows.append({"product_id": product, **dict(zip(DIMS, dims)), "window_start": window, "window_end": window + 10,
                         "impressions": entry["i"], "clicks": entry["c"], "conversions": 0, "revenue": "0", "ctr": 0,
                         "impressions_delta": delta["i"], "clicks_delta": delta["c"], "conversions_delta": 0, "revenue_delta": "0",
                         "revision": int(late), "unique_impression_users": len(entry["iu"]), "unique_click_users": len(entry["cu"]),
                         "impression_user_hashes": delta["iu"], "click_user_hashes": delta["cu"]})
    return rows


class Database:
    def __init__(self, name):
        self.session = session.Session()
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {name}")
        self.session.query(f"USE {name}")
        for statement in SCHEMA:
            self.session.query(statement)

    def insert(self, rows):
        text = "\n".join(json.dumps(row) for row in rows)
        self.session.query(f"INSERT INTO ctr_results_raw FORMAT JSONEachRow {text}")

    def run(self, sql):
        text = str(self.session.query(sql, "TabSeparated"))
        return [line.split("\t") for line in text.splitlines() if line]


counter = [0]


def check(events, rows, dimensions, flags, truth=None):
    counter[0] += 1
    database = Database(f"check_truth_{counter[0]}")
    database.insert(rows)
    options = check_truth.parse_arguments(["truth.json", "http://unused", "db"] + (["--dimensions", ",".join(dimensions)] if dimensions else [])
                                          + flags)
    truth = truth or truth_of(events, dimensions)
    assert check_truth.check_truth_matches(truth, options) is None
    return check_truth.compare(truth, database.run, options)


FAILURES = check_truth.FAILURES
ALL = ["--dedup", "--check-uniques", "--check-rollups"]


def failures(result):
    return {k: v for k, v in result.items() if k in FAILURES and v}


def test_default_mode_per_product():
    events = [e for e in stream() if not e[6]]
    result = check(events, rows_of(events, [], dedup=False), [], [])
    assert failures(result) == {} and result["windows_checked"] == 6
    assert list(result) == ["windows_checked", "lost", "duplicated", "mismatched", "unexpected", "view_mismatches"]


def test_dimensions_uniques_dedup_and_rollups_match():
    events = stream()
    result = check(events, rows_of(events, DIMS, dedup=True), DIMS, ALL)
    assert failures(result) == {}, result
    assert result["windows_checked"] > 10
    # Without --dedup, an aggregator that counts every copy matches.
    assert failures(check(events, rows_of(events, DIMS, dedup=False), DIMS, ["--check-uniques", "--check-rollups"])) == {}


def test_a_subset_of_the_dimensions():
    events = stream()
    assert failures(check(events, rows_of(events, ["country"], dedup=True), ["country"], ALL)) == {}


def test_counted_duplicates_are_mismatches():
    events = stream()
    result = check(events, rows_of(events, DIMS, dedup=False), DIMS, ALL)
    assert result["mismatched"] > 0


def test_a_lost_dimension_is_lost_and_unexpected():
    events = stream()
    result = check(events, rows_of(events, ["campaign_id", "country"], dedup=True), DIMS, ["--dedup"])
    assert result["lost"] > 0 and result["unexpected"] > 0


def test_inflated_unique_users_are_seen():
    events = stream()
    rows = rows_of(events, DIMS, dedup=True)
    late = next(r for r in rows if r["revision"] == 1 and r["impressions_delta"] > 0)
    first = next(r for r in rows if r["revision"] == 0 and all(r[k] == late[k] for k in ["product_id", *DIMS, "window_start"])
                 and r["impression_user_hashes"])
    # The late update counts a user of revision 0 again: its hash and its total.
    late["impression_user_hashes"] = late["impression_user_hashes"] + first["impression_user_hashes"][:1]
    late["unique_impression_users"] += 1
    result = check(events, rows, DIMS, ALL)
    assert result["unique_mismatched"] == 1 and result["user_hash_mismatched"] == 1
    assert result["rollup_mismatched"] == 0, "one user counted twice is the same user in a sketch"


def test_a_duplicated_revision_and_a_broken_rollup():
    events = stream()
    rows = rows_of(events, DIMS, dedup=True)
    result = check(events, rows + rows[:1], DIMS, ALL)
    assert result["duplicated"] == 1 and result["mismatched"] == 1 and result["rollup_mismatched"] == 0
    database = Database("check_truth_rollup")
    database.insert(rows)
    database.session.query("INSERT INTO ctr_rollup_1h_v2 SELECT 'p-9', '', '', '', toDateTime(1700000000, 'UTC'), sumState(toUInt64(1)), "
                           "sumState(toUInt64(0)), sumState(toUInt64(0)), sumState(toDecimal64(0, 6)), uniqCombinedArrayState([toUInt64(1)]), "
                           "uniqCombinedArrayState([toUInt64(1)])")
    options = check_truth.parse_arguments(["t", "u", "d", "--dimensions", ",".join(DIMS)] + ALL)
    assert check_truth.compare_rollups(database.run, options.dimensions) == 1


def test_the_truth_must_answer_the_options():
    truth = truth_of(stream(), [])
    options = check_truth.parse_arguments(["t", "u", "d", "--dimensions", "country"])
    assert "--truth-dimensions" in check_truth.check_truth_matches(truth, options)
    truth["counts_users"] = False
    assert "--truth-uniques" in check_truth.check_truth_matches(truth, check_truth.parse_arguments(["t", "u", "d", "--check-uniques"]))
    with pytest.raises(SystemExit):
        check_truth.parse_arguments(["t", "u", "d", "--dimensions", "country,colour"])


def test_tab_separated_strings_are_unescaped():
    assert check_truth.unescape(r"a\tb\\c\nd") == "a\tb\\c\nd"
