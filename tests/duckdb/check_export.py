#!/usr/bin/env python3
"""Loads a `profiledb export --format parquet` directory into DuckDB and checks its
counts and joins against what the `profiledb` command answers about the same database.

    python3 tests/duckdb/check_export.py PROFILEDB_BINARY DB_DIR EXPORT_DIR

EXPORT_DIR holds one full run and the incremental runs after it (or a full run alone);
they are applied with the README's rule: for each key keep the row with the highest
`_commit`, and drop it when `_deleted`. Prints one line
per check and `N passed, M failed`; exits 1 when a check fails, 3 when the `duckdb`
package is missing (the caller decides whether that is a skip).
"""

import json
import subprocess
import sys

try:
    import duckdb
except ImportError as e:  # the Rust test turns this into a loud SKIPPED
    print(f"duckdb is not importable: {e}", file=sys.stderr)
    sys.exit(3)

# The key columns of each table (the README's table of tables).
KEYS = {
    "people": ["pid"],
    "attributes": ["person", "name"],
    "activities": ["seq"],
    "deliveries": ["delivery_id"],
    "metrics": ["delivery_id", "metric"],
    "devices": ["person", "token"],
    "relationships": ["person", "object_type", "object_id"],
    "objects": ["object_type", "object_id"],
    "object_types": ["id"],
    "segment_memberships": ["segment", "person"],
    "topic_preferences": ["person", "topic"],
    "segments": ["id"],
    "topics": ["id"],
    "suppressions": ["kind", "value"],
}


def cli(binary, db, *args):
    out = subprocess.run(
        [binary, "--db", db, *args], check=True, capture_output=True, text=True
    ).stdout
    return out


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    binary, db, export = sys.argv[1:]
    con = duckdb.connect()
    for table, key in KEYS.items():
        # The current state: latest row per key, deleted keys dropped.
        con.execute(
            f"""CREATE VIEW {table} AS
                SELECT * EXCLUDE (_commit, _deleted) FROM read_parquet('{export}/{table}/*.parquet')
                QUALIFY row_number() OVER (PARTITION BY {', '.join(key)} ORDER BY _commit DESC) = 1
                    AND NOT _deleted"""
        )

    def one(sql):
        return con.execute(sql).fetchall()[0][0]

    def count(condition):
        return int(cli(binary, db, "query", condition, "--count").strip())

    stats = json.loads(cli(binary, db, "stats", "--json"))
    segments = json.loads(cli(binary, db, "segment", "list", "--json"))
    checks = []

    def check(what, got, want):
        ok = got == want
        checks.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {what}: duckdb {got}, profiledb {want}")

    for table in ["people", "objects", "deliveries", "devices", "segments"]:
        check(f"rows of {table} = stats.{table}", one(f"SELECT count(*) FROM {table}"), stats[table])
    check("people = query all", one("SELECT count(*) FROM people"), count("all"))
    check(
        "unsubscribed people = query unsubscribed",
        one("SELECT count(*) FROM people WHERE unsubscribed"),
        count("unsubscribed"),
    )
    # people × segment_memberships × segments, by name
    for s in segments:
        got = one(
            f"""SELECT count(DISTINCT p.pid) FROM people p
                JOIN segment_memberships m ON m.person = p.pid
                JOIN segments s ON s.id = m.segment
                WHERE s.name = '{s["name"].replace("'", "''")}'"""
        )
        check(f"members of segment {s['name']!r} = segment list size", got, s["size"])
        check(f"members of segment #{s['id']} = query segment:#{s['id']}", got, count(f"segment:#{s['id']}"))
    # deliveries × metrics
    check(
        "metrics whose delivery is another person's",
        one("SELECT count(*) FROM metrics m JOIN deliveries d USING (delivery_id) WHERE m.person <> d.person"),
        0,
    )
    check(
        "metrics without a delivery",
        one("SELECT count(*) FROM metrics m ANTI JOIN deliveries d USING (delivery_id)"),
        0,
    )
    for metric in ["sent", "delivered", "opened"]:
        got = one(
            f"""SELECT count(DISTINCT d.person) FROM deliveries d
                JOIN metrics m USING (delivery_id) JOIN people p ON p.pid = d.person
                WHERE m.metric = '{metric}'"""
        )
        check(f"people with a delivery {metric} = query delivery:{metric}", got, count(f"delivery:{metric}"))
    # topics: explicit preferences, else the topic's default
    for topic in [1, 2, 3]:
        got = one(
            f"""SELECT count(*) FROM people p CROSS JOIN (SELECT * FROM topics WHERE id = {topic}) t
                LEFT JOIN topic_preferences tp ON tp.person = p.pid AND tp.topic = t.id
                WHERE coalesce(tp.subscribed, t.default_subscribed)"""
        )
        check(f"people receiving topic {topic} = query topic:{topic}", got, count(f"topic:{topic}"))
    got = one(
        """SELECT count(DISTINCT a.person) FROM activities a JOIN people p ON p.pid = a.person
           WHERE a.kind = 'event' AND a.name = 'purchase'"""
    )
    check("people with a purchase event = query event:purchase", got, count("event:purchase"))
    got = one(
        """SELECT count(*) FROM attributes a JOIN people p ON p.pid = a.person
           WHERE a.name = 'plan' AND a.value_string = 'pro'"""
    )
    check("people on plan pro = query attr.plan = \"pro\"", got, count('attr.plan = "pro"'))
    got = one("SELECT count(*) FROM attributes WHERE name = 'age' AND value_int > 40")
    check("people over 40 = query attr.age > 40", got, count("attr.age > 40"))
    got = one(
        """SELECT count(DISTINCT r.person) FROM relationships r JOIN objects o
           USING (object_type, object_id) WHERE o.object_type = 1"""
    )
    related = one("SELECT count(DISTINCT person) FROM relationships WHERE object_type = 1")
    check("people related to a type-1 object = query related:1", related, count("related:1"))
    check("relationships to objects that exist (joined) <= all", got <= related, True)

    passed, failed = checks.count(True), checks.count(False)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
