#!/usr/bin/env python3
"""`make bench-scale` (part of `make bench`): many credentials at once.

One broker (`bucketgate-authz serve`, SQLite store) holds `--keys`
credentials (default 100,000, made with `creds create --count`), and three
Envoys (`--concurrency 2`) run each data plane in front of nginx: the wasm
and native filters poll the broker's feed, ext_authz asks it. Measured per
plane:

- how long after start the first key works (the feed's first load), and
  then how long until 20 answers in a row work on fresh connections (every
  worker has it: a wasm worker builds its own copy);
- Envoy's RSS (and the broker's) with every key loaded on every worker;
- after `creds revoke` of one key, how long until that key is refused on
  every worker (20 refusals in a row, each on a fresh connection, which
  the kernel spreads over the workers), while another key keeps working.
  Target: ≤ 2 s.

Writes <out>/scale.json and <out>/scale.md. Everything listens on 127.0.0.1;
every process it starts is stopped at the end.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import run as R

FEED_TOKEN = "bench-scale-feed-token-0123456789"
STORE_KEY = "bench scale store key: at least thirty-two characters"
PLANES = ["filter", "native", "ext_authz"]


def log(msg):
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def status(port, key):
    try:
        s, _ = R.one_request(port, R.signed("GET", R.OBJ, key))
        return s
    except OSError:
        return None


def until(what, check, seconds):
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise R.BenchError(f"{what}: not within {seconds} s")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(R.ROOT / "target/bench"))
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=2, help="Envoy workers")
    p.add_argument("--poll-ms", type=int, default=1000, help="the filters' feed poll period")
    p.add_argument("--planes", default=",".join(PLANES))
    p.add_argument("--patience", type=float, default=30, help="seconds to wait for a plane to load or refuse")
    args = p.parse_args()
    planes = args.planes.split(",")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bucketgate-scale-"))
    procs = R.Procs(work)
    env = dict(os.environ, BUCKETGATE_FEED_TOKEN=FEED_TOKEN, STOWAGE_SECRET_KEY=STORE_KEY)
    result = {"keys": args.keys, "envoy_concurrency": args.concurrency, "poll_ms": args.poll_ms, "planes": {},
              "notes": []}
    try:
        up_args = argparse.Namespace(nginx_workers=1, concurrency=args.concurrency, read_sample_rate=0.0)
        up = R.start_fast(procs, work, up_args)
        http_port, grpc_port = R.free_port(), R.free_port()
        config = work / "authz.json"
        settings = R.plugin_config(up, up_args)
        del settings["credentials"]
        for b in settings["backends"]:
            del b["access_key_id"], b["secret_access_key"]
        config.write_text(json.dumps({
            "database": str(work / "credentials.db"),
            "http_listen": f"127.0.0.1:{http_port}",
            "store_poll_ms": 100,
            "backends": [{"name": "up", "credentials": {"source": "static", "access_key_id": R.ADMIN[0],
                                                        "secret_access_key": R.ADMIN[1]}}],
            "ext_authz": settings,
        }))

        def cli(*a):
            return subprocess.run([str(R.AUTHZ), "--config", str(config), "creds", *a], env=env, check=True,
                                  capture_output=True, text=True).stdout

        t0 = time.monotonic()
        made = cli("create", "--bucket", f"up:{R.BUCKET}", "--count", str(args.keys), "--json").splitlines()
        result["create_s"] = round(time.monotonic() - t0, 2)
        log(f"{len(made)} credentials made in {result['create_s']} s")
        first, second = (json.loads(made[0]), json.loads(made[-1]))
        victim = (first["access_key_id"], first["secret_access_key"])
        control = (second["access_key_id"], second["secret_access_key"])

        broker = procs.start("authz", [str(R.AUTHZ), "--config", str(config), "serve", "--grpc-listen",
                                       f"127.0.0.1:{grpc_port}"], env=env)
        t0 = time.monotonic()
        R.wait_http(http_port, "/readyz", seconds=args.patience, proc=broker, name="bucketgate-authz")
        result["broker_ready_s"] = round(time.monotonic() - t0, 2)

        ports = {}
        for plane in planes:
            name = f"{plane}-scale"
            plugin = R.plugin_config(up, up_args)
            plugin["credentials"] = []
            for b in plugin["backends"]:
                del b["access_key_id"], b["secret_access_key"]
            plugin["feed"] = {"cluster": "bucketgate_feed", "token": FEED_TOKEN, "poll_ms": args.poll_ms,
                              "timeout_ms": 10_000}
            (work / f"plugin-{name}.json").write_text(json.dumps(plugin))
            flags = {"filter": ["--mode", "wasm", "--plugin-config", str(work / f"plugin-{name}.json"),
                                "--feed-cluster", f"bucketgate_feed=127.0.0.1:{http_port}"],
                     "native": ["--mode", "native", "--plugin-config", str(work / f"plugin-{name}.json"),
                                "--feed-cluster", f"bucketgate_feed=127.0.0.1:{http_port}"],
                     "ext_authz": ["--mode", "ext-authz", "--authz", f"127.0.0.1:{grpc_port}"]}[plane]
            port, admin = R.free_port(), R.free_port()
            cfg = subprocess.run(
                [sys.executable, str(R.ROOT / "envoy/gateway.py"), "--wasm", str(R.FILTER_WASM),
                 "--backend", f"backend_up=127.0.0.1:{up.port}", "--port", str(port), "--admin-port", str(admin),
                 "--access-log", str(work / f"access-{name}.log"), *flags],
                check=True, capture_output=True, text=True).stdout
            t0 = time.monotonic()
            R.run_envoy(procs, work, name, cfg, port, admin, up_args)
            rss = R.rss_kib(R.PIDS[f"envoy-{name}"])
            try:
                loaded = until(f"{plane}: the first key", lambda: status(port, control) == 200, args.patience)
            except R.BenchError as e:
                # Recorded, and the other planes still measured.
                tail = (work / f"envoy-{name}.log").read_text()[-600:]
                result["planes"][plane] = {"first_key_works_s": None, "envoy_rss_mib": round(rss / 1024, 1)
                                           if rss else None, "note": f"{e}; Envoy's log ends: {tail}"}
                result["notes"].append(f"{plane}: no key usable within {args.patience} s (see scale.json)")
                log(f"{plane}: {e}")
                # Stopped: its feed polls would keep the broker rendering
                # the whole snapshot every poll, which starves the others.
                procs.stop(only=[p for n, p in procs.procs if n == f"envoy-{name}"])
                continue
            ports[plane] = port
            rss = R.rss_kib(R.PIDS[f"envoy-{name}"])
            result["planes"][plane] = {"first_key_works_s": round(time.monotonic() - t0, 2),
                                       "envoy_rss_mib": round(rss / 1024, 1) if rss else None}
            log(f"{plane}: keys usable {loaded:.2f} s after Envoy was ready; Envoy RSS {rss} KiB")
        planes = [p for p in planes if p in ports]
        # Loaded on every worker: a wasm worker builds its own copy on its
        # first request after the feed changed, so the revocation below
        # must not race those builds. 20 answers in a row on fresh
        # connections (spread over the workers by the kernel).
        for plane in planes:
            t0 = time.monotonic()
            streak = 0

            def every_worker():
                nonlocal streak
                streak = streak + 1 if status(ports[plane], control) == 200 else 0
                return streak >= 20

            until(f"{plane}: every worker", every_worker, args.patience)
            result["planes"][plane]["every_worker_s"] = round(time.monotonic() - t0, 2)
            rss = R.rss_kib(R.PIDS[f"envoy-{plane}-scale"])
            result["planes"][plane]["envoy_rss_mib"] = round(rss / 1024, 1) if rss else None
        for plane in planes:
            st = status(ports[plane], victim)
            if st != 200:
                raise R.BenchError(f"{plane}: the key to revoke answers {st} before its revocation")
        result["broker_rss_mib"] = round((R.rss_kib(broker.pid) or 0) / 1024, 1)

        cli("revoke", victim[0])
        t0 = time.monotonic()
        pending = set(planes)
        streak = {p: 0 for p in planes}
        while pending and time.monotonic() - t0 < args.patience:
            for plane in list(pending):
                s = status(ports[plane], victim)
                streak[plane] = streak[plane] + 1 if s in (401, 403) else 0
                if streak[plane] == 1:
                    result["planes"][plane]["first_refusal_s"] = round(time.monotonic() - t0, 3)
                if streak[plane] >= 20:
                    result["planes"][plane]["revoked_everywhere_s"] = round(time.monotonic() - t0, 3)
                    pending.discard(plane)
            time.sleep(0.01)
        for plane in planes:
            r = result["planes"][plane]
            r.setdefault("revoked_everywhere_s", None)
            r["control_key_status_after"] = status(ports[plane], control)
            r["target_met"] = r["revoked_everywhere_s"] is not None and r["revoked_everywhere_s"] <= 2.0
            rss = R.rss_kib(R.PIDS[f"envoy-{plane}-scale"])
            r["envoy_rss_mib_after"] = round(rss / 1024, 1) if rss else None
            log(f"{plane}: {r}")
        result["broker_rss_mib_after"] = round((R.rss_kib(broker.pid) or 0) / 1024, 1)
    except R.BenchError as e:
        result["notes"].append(str(e))
        log(f"FAILED: {e} (work dir kept: {work})")
        procs.stop()
        write(args, result)
        sys.exit(1)
    finally:
        procs.stop()
    write(args, result)


def write(args, result):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# scale: {result['keys']} credentials in the broker's store", "",
             f"Envoy --concurrency {result['envoy_concurrency']}, feed poll {result['poll_ms']} ms; "
             f"`creds create --count` took {result.get('create_s')} s; broker ready after "
             f"{result.get('broker_ready_s')} s, RSS {result.get('broker_rss_mib')} MiB "
             f"({result.get('broker_rss_mib_after')} MiB at the end).", "",
             "| plane | keys usable after Envoy start | then on every worker after | Envoy RSS loaded | "
             "first 401 after revoke | refused on every worker after (≤ 2 s) | other key still | Envoy RSS at end |",
             "|---|---|---|---|---|---|---|---|"]
    for plane, r in result["planes"].items():
        if r.get("first_key_works_s") is None:
            lines.append(f"| {plane} | never (see notes) | – | {r.get('envoy_rss_mib')} MiB | – | – | – | – |")
            continue
        met = r.get("target_met")
        lines.append(f"| {plane} | {r.get('first_key_works_s')} s | {r.get('every_worker_s')} s | "
                     f"{r.get('envoy_rss_mib')} MiB | "
                     f"{r.get('first_refusal_s', '–')} s | {r.get('revoked_everywhere_s')} s "
                     f"({'met' if met else '**missed**'}) | {r.get('control_key_status_after')} | "
                     f"{r.get('envoy_rss_mib_after')} MiB |")
    if result["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in result["notes"]]
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
