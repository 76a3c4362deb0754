#!/usr/bin/env python3
"""`make soak` (not in `make test`): every data plane under a fixed request
rate for a long time (default 30 minutes), mixing every case of the load
benchmark — GET, HEAD and PUT of 1 KiB, ListBuckets, a bad signature, a
scope violation, and a signed aws-chunked upload every few seconds —
against nginx (the fast upstream of `make bench`).

Checked at the end, per plane:
- RSS flat: the Envoy's (and for ext_authz the service's) resident memory
  at the end is at most 5 % above what it was after the warm-up (the first
  sixth of the run, at least one minute), sampled every 30 s;
- no 5xx from the gateway itself (every response is 2xx, or the refusal the
  case asks for: 401 for a bad signature, 403 for another bucket).

Writes <out>/soak.json and <out>/soak.md and exits 1 when a check fails.
Everything listens on 127.0.0.1; every process it starts is stopped.
"""

import argparse
import http.client
import json
import pathlib
import sys
import tempfile
import threading
import time

import run as R

EXPECT = {"get_1k": 200, "head": 200, "put_1k": 201, "list_buckets": 200, "bad_signature": 401,
          "scope_violation": 403}


def log(msg):
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


class Load(threading.Thread):
    """A fixed request rate to one plane over one keep-alive connection;
    re-signs every RESIGN_AFTER_S."""

    def __init__(self, variant, port, rate, deadline, upload_bytes, upload_every):
        super().__init__(daemon=True)
        self.variant, self.port, self.rate, self.deadline = variant, port, rate, deadline
        self.upload_bytes, self.upload_every = upload_bytes, upload_every
        self.cap = self.capture()
        self.counts, self.unexpected, self.errors = {}, {}, 0

    def capture(self):
        """The signed-chunked upload, signed now (its signature is good for
        the 15-minute skew window: captured again after RESIGN_AFTER_S)."""
        if not self.upload_bytes:
            return None
        return R.capture_chunked(self.variant.key, self.upload_bytes, 65536)

    def sign(self):
        return {case: R.request_for(case, self.variant) for case in EXPECT}

    def send(self, conn, req):
        conn.request(req["method"], req["path"], body=req["body"] or None, headers=req["headers"])
        r = conn.getresponse()
        r.read()
        return r.status

    def run(self):
        reqs, signed_at = self.sign(), time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        cases = list(EXPECT)
        n, start, next_upload = 0, time.monotonic(), time.monotonic() + self.upload_every
        while time.monotonic() < self.deadline:
            if time.monotonic() - signed_at > R.RESIGN_AFTER_S:
                reqs, signed_at = self.sign(), time.monotonic()
            case = cases[n % len(cases)]
            try:
                status = self.send(conn, reqs[case])
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = None
            self.counts[(case, status)] = self.counts.get((case, status), 0) + 1
            if status != EXPECT[case] and not (case == "put_1k" and status in (200, 204)):
                self.unexpected[(case, status)] = self.unexpected.get((case, status), 0) + 1
            if self.cap and time.monotonic() >= next_upload:
                next_upload += self.upload_every
                if time.monotonic() - self.cap["signed_at"] > R.RESIGN_AFTER_S:
                    self.cap = self.capture()
                _, up_status, _ = R.replay(self.port, self.cap)
                key = ("put_chunked", up_status)
                self.counts[key] = self.counts.get(key, 0) + 1
                if not 200 <= up_status < 300:
                    self.unexpected[key] = self.unexpected.get(key, 0) + 1
            n += 1
            # Fixed rate: sleep until the next slot.
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(R.ROOT / "target/bench"))
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=float, default=100, help="requests per second per plane")
    p.add_argument("--variants", default="filter,native,ext_authz")
    p.add_argument("--upload-every", type=float, default=10, help="seconds between signed-chunked uploads")
    p.add_argument("--upload-mib", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args()
    variants = [R.VARIANTS[v] for v in args.variants.split(",")]
    work = pathlib.Path(tempfile.mkdtemp(prefix="bucketgate-soak-"))
    procs = R.Procs(work)
    bench_args = argparse.Namespace(nginx_workers=1, concurrency=args.concurrency, read_sample_rate=1.0)
    seconds = args.minutes * 60
    warm = max(60.0, seconds / 6)
    samples = {}
    result = {"minutes": args.minutes, "rate_per_plane": args.rate, "warm_up_s": warm, "planes": {}}
    ok = True
    try:
        up = R.start_fast(procs, work, bench_args)
        ports = {v.name: v.start(procs, work, up, bench_args, up.name) for v in variants}
        loads = []
        deadline = time.monotonic() + seconds
        for v in variants:
            loads.append(Load(v, ports[v.name], args.rate, deadline, args.upload_mib << 20, args.upload_every))
        started = time.monotonic()
        for ld in loads:
            ld.start()
        log(f"{len(loads)} plane(s) at {args.rate} rps each for {args.minutes} min (warm-up {warm:.0f} s)")
        while any(ld.is_alive() for ld in loads):
            t = round(time.monotonic() - started)
            for v in variants:
                for k, pid in R.service_pids(v.name, up.name).items():
                    samples.setdefault(f"{v.name}/{k}", []).append((t, R.rss_kib(pid)))
            time.sleep(30)
        for ld in loads:
            ld.join()
        for v, ld in zip(variants, loads):
            r = {"requests": sum(ld.counts.values()), "connection_errors": ld.errors,
                 "statuses": {f"{c} {s}": n for (c, s), n in sorted(ld.counts.items(), key=str)},
                 "unexpected": {f"{c} {s}": n for (c, s), n in sorted(ld.unexpected.items(), key=str)}}
            five = sum(n for (c, s), n in ld.unexpected.items() if s is not None and s >= 500)
            r["gateway_5xx"] = five
            r["ok_statuses"] = not ld.unexpected and not ld.errors
            for k in R.service_pids(v.name, up.name):
                series = [(t, kib) for t, kib in samples.get(f"{v.name}/{k}", []) if kib]
                after_warm = [kib for t, kib in series if t >= warm]
                if after_warm:
                    growth = after_warm[-1] / after_warm[0] - 1
                    r[f"{k}_rss_mib"] = [round(kib / 1024, 1) for _, kib in series]
                    r[f"{k}_rss_growth_after_warm_up"] = round(growth, 4)
                    r[f"{k}_rss_flat"] = growth <= 0.05
                    ok &= growth <= 0.05
            ok &= r["ok_statuses"]
            result["planes"][v.name] = r
            log(f"{v.name}: {r['requests']} requests, unexpected {r['unexpected']}, "
                f"RSS growth {r.get('envoy_rss_growth_after_warm_up')}")
    finally:
        procs.stop()
    result["passed"] = ok
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# soak: {args.minutes} min at {args.rate} rps per plane (every case mixed)", "",
             "| plane | requests | unexpected statuses | gateway 5xx | Envoy RSS after warm-up → end | growth | "
             "service RSS growth |", "|---|---|---|---|---|---|---|"]
    for name, r in result["planes"].items():
        rss = r.get("envoy_rss_mib") or []
        warm_i = next((i for i, (t, _) in enumerate(samples.get(f"{name}/envoy", [])) if t >= warm), 0)
        lines.append(f"| {name} | {r['requests']} | {r['unexpected'] or 'none'} | {r['gateway_5xx']} | "
                     f"{rss[warm_i] if rss else '–'} → {rss[-1] if rss else '–'} MiB | "
                     f"{r.get('envoy_rss_growth_after_warm_up')} | {r.get('service_rss_growth_after_warm_up', '–')} |")
    lines += ["", "passed" if ok else "**failed**"]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
