"""CloudEvents out, checked with the official CloudEvents SDK for Python (`cloudevents`, the
version pinned in scripts/cloudevents-sdk, which runs this against a real `eventfold serve`).

Appends CloudEvents made by the SDK (structured mode with `to_structured`, binary mode with
`to_binary`) and reads them back as a CloudEvents batch, NDJSON of CloudEvents, and SSE and
NDJSON subscriptions of CloudEvents, each event parsed by the SDK (`from_http`, `from_json`).
Every attribute that went in (`id`, `source`, `type`, `time`, `subject`, `dataschema`,
`datacontenttype`, extensions, `traceparent`/`tracestate`) and the data must come back equal,
with eventfold's own extensions besides. Prints what differs and exits 1 on any mismatch.

    python cloudevents_sdk_check.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.error
import urllib.request

from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent, from_http, from_json

TIMEOUT_S = 20
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STREAM = "sdk-orders-1"
OWN = {"eventfoldstream", "eventfoldrevision", "eventfoldposition", "eventfoldid"}

base = sys.argv[1].rstrip("/")
failures = []


def request(method, path, headers, body=None):
    req = urllib.request.Request(base + path, data=body, headers=headers, method=method)
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        print(f"CloudEvents SDK check FAILED: {method} {path} with headers {headers} and body {body!r}")
        print(f"  answered {e.code}: {e.read().decode(errors='replace')}")
        sys.exit(1)


def sent_events():
    """(mode, event) pairs: what the SDK appends."""
    return [
        ("structured", CloudEvent({
            "id": "order-42-placed", "source": "https://shop.example/orders",
            "type": "order.placed", "time": "2026-11-22T10:00:00.5Z", "subject": "order-42",
            "dataschema": "https://shop.example/schemas/placed.json",
            "datacontenttype": "application/json", "tenant": "acme", "priority": 3,
            "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE",
        }, {"total": 12.5, "lines": [{"sku": "a", "n": 2}]})),
        ("structured", CloudEvent({
            "id": "note-1", "source": "/notes", "type": "note.added",
            "time": "2026-11-22T10:00:01Z", "datacontenttype": "text/plain",
            "traceparent": TRACEPARENT,
        }, "ünïcode text")),
        ("binary", CloudEvent({
            "id": "0192f6a0-7c1e-7a3b-9c1d-2f1e3a4b5c6d", "source": "/sensors/7",
            "type": "reading.taken", "time": "2026-11-22T10:00:02Z", "subject": "café",
            "datacontenttype": "application/octet-stream", "site": "north",
            "traceparent": TRACEPARENT,
        }, b"\x00\x01\x02\xff")),
        ("binary", CloudEvent({
            "id": "bin-json-1", "source": "/sensors/8", "type": "reading.taken",
            "time": "2026-11-22T10:00:03Z", "datacontenttype": "application/json",
            "traceparent": TRACEPARENT,
        }, {"celsius": 21.5})),
    ]


def check(where, sent, got, revision):
    want = sent.get_attributes()
    have = got.get_attributes()
    for k, v in want.items():
        if have.get(k) != v:
            failures.append(f"{where}: attribute {k}: sent {v!r}, read back {have.get(k)!r}")
    for k in OWN:
        if k not in have:
            failures.append(f"{where}: eventfold's extension {k} is missing")
    if have.get("eventfoldstream") != STREAM or have.get("eventfoldrevision") != str(revision):
        failures.append(f"{where}: eventfoldstream/eventfoldrevision {have.get('eventfoldstream')!r}/{have.get('eventfoldrevision')!r}")
    extra = set(have) - set(want) - OWN
    if extra:
        failures.append(f"{where}: attributes that were not sent: {sorted(extra)}")
    if got.get_data() != sent.get_data():
        failures.append(f"{where}: data: sent {sent.get_data()!r}, read back {got.get_data()!r}")


def main():
    events = sent_events()
    for mode, event in events:
        headers, body = (to_structured if mode == "structured" else to_binary)(event)
        with request("POST", f"/streams/{STREAM}", dict(headers), body) as r:
            if r.status != 201:
                failures.append(f"append ({mode}) answered {r.status}")
    n = len(events)

    # A read page as a CloudEvents batch: each item parsed by the SDK.
    with request("GET", f"/streams/{STREAM}?from=start",
                 {"Accept": "application/cloudevents-batch+json"}) as r:
        assert r.headers["Content-Type"] == "application/cloudevents-batch+json", r.headers["Content-Type"]
        batch = json.load(r)
    if len(batch) != n:
        failures.append(f"batch: {len(batch)} events, want {n}")
    for i, (item, (_, sent)) in enumerate(zip(batch, events)):
        got = from_http({"content-type": "application/cloudevents+json"}, json.dumps(item))
        check(f"batch event {i}", sent, got, i)

    # NDJSON of CloudEvents: each line a structured CloudEvent.
    with request("GET", f"/streams/{STREAM}?from=start",
                 {"Accept": "application/x-ndjson; format=cloudevents"}) as r:
        lines = [l for l in r.read().split(b"\n") if l]
    for i, (line, (_, sent)) in enumerate(zip(lines, events)):
        check(f"NDJSON line {i}", sent, from_json(line), i)
    if len(lines) != n:
        failures.append(f"NDJSON: {len(lines)} lines, want {n}")

    # Subscriptions: SSE and NDJSON of CloudEvents, read until the n events came.
    for accept in ("text/event-stream; format=cloudevents", "application/x-ndjson; format=cloudevents"):
        got = []
        with request("GET", f"/streams/{STREAM}/subscribe?from=start", {"Accept": accept}) as r:
            while len(got) < n:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if accept.startswith("text/event-stream"):
                    if line.startswith(b"data: "):
                        got.append(line[len(b"data: "):])
                elif line:
                    got.append(line)
        if len(got) != n:
            failures.append(f"subscription ({accept}): {len(got)} events, want {n}")
        for i, (data, (_, sent)) in enumerate(zip(got, events)):
            check(f"subscription ({accept}) event {i}", sent, from_json(data), i)

    if failures:
        print("CloudEvents SDK check FAILED:")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print(f"CloudEvents SDK check: {n} events (structured and binary mode) round-trip through a batch, NDJSON, SSE and NDJSON subscriptions")


main()
