#!/usr/bin/env python3
"""Load driver for scripts/bench (BENCH_ONLY=serve): CLIENTS concurrent workers, each
doing, for SECONDS, a fixed mix of requests one after another:

  60% status  one tenant's migration status
  20% list    every tenant
  20% create  a new tenant with a unique domain, provisioned and migrated to head

either against `tenantctl serve` over HTTP (one keep-alive connection per worker):
  GET /api/tenants/{id}/migration-status, GET /api/tenants, POST /api/tenants/
or through the command line (one process per request):
  tenantctl status --tenant ID -o json, tenantctl tenant list -o json,
  tenantctl tenant create DOMAIN --name N --migrate -o json

Prints one JSON document: per kind the count, errors (with up to 3 samples), p50 and
p99 latency in ms; and the total requests per second. Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import threading
import time


def percentile(sorted_ms, p):
    if not sorted_ms:
        return None
    i = min(len(sorted_ms) - 1, max(0, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return round(sorted_ms[i], 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["http", "cli"], required=True)
    ap.add_argument("--port", type=int)
    ap.add_argument("--bin")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--ids", type=int, required=True, help="tenant ids 1..IDS exist")
    ap.add_argument("--prefix", required=True, help="prefix of new domains")
    args = ap.parse_args()
    token = os.environ.get("TENANTCTL_API_TOKEN", "")

    lock = threading.Lock()
    lat = {"status": [], "list": [], "create": []}
    errors = {"status": [], "list": [], "create": []}
    start = time.monotonic()
    deadline = start + args.seconds

    def worker(w):
        rng = random.Random(w)
        conn = None
        n = 0
        while time.monotonic() < deadline:
            r = rng.random()
            kind = "status" if r < 0.6 else ("list" if r < 0.8 else "create")
            tenant = rng.randint(1, args.ids)
            n += 1
            domain = f"{args.prefix}-{w}-{n}"
            t0 = time.monotonic()
            err = None
            try:
                if args.mode == "http":
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
                    headers = {"Authorization": f"Bearer {token}"}
                    if kind == "status":
                        conn.request("GET", f"/api/tenants/{tenant}/migration-status", headers=headers)
                        want = 200
                    elif kind == "list":
                        conn.request("GET", "/api/tenants", headers=headers)
                        want = 200
                    else:
                        body = json.dumps({"tenant_name": domain, "domain": domain, "run_migrations": True})
                        headers["Content-Type"] = "application/json"
                        conn.request("POST", "/api/tenants/", body=body, headers=headers)
                        want = 201
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status != want:
                        err = f"{resp.status} {data[:200]!r}"
                    else:
                        json.loads(data)
                else:
                    if kind == "status":
                        argv = [args.bin, "status", "--tenant", str(tenant), "-o", "json"]
                    elif kind == "list":
                        argv = [args.bin, "tenant", "list", "-o", "json"]
                    else:
                        argv = [args.bin, "tenant", "create", domain, "--name", domain, "--migrate", "-o", "json"]
                    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
                    if p.returncode != 0:
                        err = f"exit {p.returncode}: {p.stderr[:200]!r}"
                    else:
                        json.loads(p.stdout)
            except Exception as e:  # a failed request is counted, not fatal
                err = repr(e)[:200]
                if conn is not None:
                    conn.close()
                    conn = None
            ms = (time.monotonic() - t0) * 1000
            with lock:
                if err is None:
                    lat[kind].append(ms)
                else:
                    errors[kind].append(err)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    out = {"mode": args.mode, "clients": args.clients, "seconds": round(elapsed, 2), "kinds": {}}
    total = 0
    for kind in ("status", "list", "create"):
        ms = sorted(lat[kind])
        total += len(ms) + len(errors[kind])
        out["kinds"][kind] = {
            "ok": len(ms),
            "errors": len(errors[kind]),
            "error_samples": errors[kind][:3],
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
        }
    out["requests"] = total
    out["rps"] = round(total / elapsed, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
