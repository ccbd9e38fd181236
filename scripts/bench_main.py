#!/usr/bin/env python3
"""The hub's benchmark, with its baselines measured in the same run (see
BENCHMARKS.md for what each row means). Called by scripts/bench.sh:

  bench_main.py --binary target/release/yurthub --work DIR --out FILE [--quick]
  BENCH_ONLY=shared bench_main.py ...     # section 7 (shared watch) alone

Starts, on free loopback ports, all of them children of this process:
  - upstream nginx: the "apiserver", fixed JSON files over TLS (client
    certificates optional), /readyz -> 200 ok;
  - proxy nginx: a plain keep-alive reverse proxy to the same upstream (and a
    second server block in front of the watch upstream);
  - the watch upstream (bench_watch.py serve): TLS, a chunked watch stream;
  - hubs: cloud (pure pass-through), edge (caches kubelet's copies), offline
    (cache pre-filled, apiserver refused), and two in front of the watch upstream;
  - for the shared watch (section 7), once the others are stopped: the
    shared-watch upstream (bench_shared.py serve: Services and EndpointSlices
    that change) and, one after the other, three edge hubs in front of it.
Measures with wrk (throughput, latency percentiles) and Python (watch relay,
footprint from /proc, informers), prints one table to stdout and to FILE; progress goes
to stderr. Exits 1 when something is broken (a server never ready, a wrong
answer, a row with errors); a slow figure is never a failure. Every wait is
bounded; every child is stopped on exit."""
import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_coldstart  # noqa: E402
import bench_fixtures as fx  # noqa: E402
import bench_shared  # noqa: E402
import bench_watch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
KUBELET = "kubelet/v1.20.2"
PB_ACCEPT = "application/vnd.kubernetes.protobuf,application/json"
GET = "/api/v1/namespaces/default/configmaps/cm1"
LIST = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1"
READY_DEADLINE = 15.0


class Broken(Exception):
    """Something genuinely does not work: the run exits non-zero."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------- processes

class Children:
    """Every process this run starts; stopped in reverse order on exit."""

    def __init__(self, pidfile):
        self.procs = []
        self.pidfile = pidfile

    def start(self, name, args, log_path, env=None):
        out = open(log_path, "ab")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})})
        out.close()
        p.log_path = log_path
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=7)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
                p.kill()
                p.wait(timeout=5)
        self.procs = []


def proc_status(pid):
    """(VmRSS KiB, Threads, VmHWM KiB) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads", "VmHWM"):
            vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("Threads", 0), vals.get("VmHWM", 0)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy():
    """CPU seconds the whole machine has spent busy (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK  # all but idle and iowait; guest is inside user


def own_cpu():
    """CPU seconds of this process and of every child it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_cpu_idle(pid, quiet=1.0, deadline=30.0):
    """Waits (bounded) until a process has used no CPU for `quiet` seconds."""
    end = time.monotonic() + deadline
    last, since = cpu_ticks([pid]), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)  # poll interval
        now = cpu_ticks([pid])
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def rss_sum(pids):
    return sum((proc_status(p) or (0, 0, 0))[0] for p in pids)


class Sampler:
    """Samples RSS (sum) and threads (max) of some processes every 50 ms."""

    def __init__(self, pids):
        self.pids, self.max_rss, self.max_threads = pids, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            st = [proc_status(p) for p in self.pids]
            self.max_rss = max(self.max_rss, sum(s[0] for s in st if s))
            self.max_threads = max(self.max_threads, max((s[1] for s in st if s), default=0))
            self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)


# ---------------------------------------------------------------- HTTP checks

def http_get(port, path, headers=None, tls_ca=None, timeout=2.0):
    """(status, headers dict lower-cased, body) or raises OSError."""
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        conn = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_for(what, probe, proc=None, deadline=READY_DEADLINE):
    """Polls probe() until it returns true; Broken after the deadline or if proc died."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            tail = ""
            try:
                with open(proc.log_path, errors="replace") as f:
                    tail = "".join(f.readlines()[-5:])
            except (OSError, AttributeError):
                pass
            raise Broken(f"{what}: process exited with {proc.returncode}; its log ends:\n{tail}")
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            last = e
        time.sleep(0.02)  # poll interval
    raise Broken(f"{what}: not ready within {deadline:.0f}s ({last})")


# ---------------------------------------------------------------- nginx

NGINX_COMMON = """user root;
worker_processes auto;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
{body}
}}
"""

UPSTREAM_BODY = """  etag off;
  types {{ }}
  default_type application/json;
  server {{
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {pki[server_crt]};
    ssl_certificate_key {pki[server_key]};
    ssl_client_certificate {pki[ca]};
    ssl_verify_client optional;
    ssl_session_cache shared:up:1m;
    location = /readyz {{ default_type text/plain; return 200 "ok"; }}
    location = /nginx_status {{ default_type text/plain; stub_status; }}
    location = {get} {{ alias {docs}/cm1.json; }}
    location = {list} {{ alias {docs}/cmlist.json; }}
    location / {{ return 404; }}
  }}"""

PROXY_BODY = """  upstream api {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s; }}
  upstream watchapi {{ server 127.0.0.1:{watch_up}; keepalive 8; }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_buffering off;
  proxy_buffer_size 32k;
  proxy_buffers 4 32k;
  proxy_ssl_certificate {pki[client_crt]};
  proxy_ssl_certificate_key {pki[client_key]};
  proxy_ssl_trusted_certificate {pki[ca]};
  proxy_ssl_verify on;
  proxy_ssl_name localhost;
  proxy_ssl_session_reuse on;
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ proxy_pass https://api; }} }}
  server {{ listen 127.0.0.1:{watch_port}; location / {{ proxy_pass https://watchapi; proxy_read_timeout 120s; }} }}"""


# The hub's own offline answers, saved to files and served by nginx as they
# are: the baseline an answer from memory is measured against.
STATIC_BODY = """  etag off;
  types {{ }}
  default_type application/json;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{locations}
    location / {{ return 404; }}
  }}"""


def start_nginx(children, name, work, body):
    d = os.path.join(work, name)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(d=d, body=body))
    return children.start(name, ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf],
                          os.path.join(d, "stdout.log"))


# ---------------------------------------------------------------- hub

def start_hub(children, binary, work, name, server, mode, pki, extra=()):
    proxy, serve = free_ports(2)
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    cache = os.path.join(d, "cache")
    os.makedirs(cache, exist_ok=True)
    args = [binary, "--server-addr", server, "--proxy-port", str(proxy), "--serve-port", str(serve),
            "--disk-cache-path", cache, "--root-dir", os.path.join(d, "root"),
            "--kubelet-ca-file", pki["ca"], "--kubelet-client-certificate", pki["client_pem"],
            "--node-name", fx.NODE, "--working-mode", mode, *bench_coldstart.port_flags(binary), *extra]
    if bench_coldstart.has_flag(binary, "--tls-cert-file"):
        # A serving certificate for the hub's secure port, so that it does not
        # ask the benchmark's upstream for one (a CSR) every few seconds.
        args += ["--tls-cert-file", pki["server_crt"], "--tls-private-key-file", pki["server_key"]]
    p = children.start(name, args, os.path.join(d, "hub.log"), env={"RUST_LOG": "info"})
    return {"name": name, "proc": p, "pid": p.pid, "proxy": proxy, "serve": serve, "cache": cache}


def pb_items(body):
    """Items in a protobuf list: k8s envelope -> Unknown.raw (2) -> repeated items (2)."""
    raw = next(p for n, _, p in fx._fields(body[4:]) if n == 2)
    return sum(1 for n, _, _ in fx._fields(raw) if n == 2)


def metric(hub, name):
    _, _, body = http_get(hub["serve"], "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and (len(line) > len(name) and line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- wrk

WRK_LUA = """{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk(work, url, conns, seconds, headers):
    key = "-".join(f"{k}={v}" for k, v in sorted(headers.items()))
    script = os.path.join(work, "wrk-" + str(abs(hash(key))) + ".lua")
    if not os.path.exists(script):
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        with open(script, "w") as f:
            f.write(WRK_LUA.format(headers=lines))
    args = ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "5s",
            "-s", script, url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    for line in r.stdout.splitlines():
        if line.startswith("JSON "):
            return json.loads(line[5:])
    raise Broken(f"wrk {url}: no result (exit {r.returncode}): {r.stderr.strip()[:300]}")


# ---------------------------------------------------------------- shared watch

# The four local clients of section 7, as User-Agent and label selector
# (kube-proxy's own, on both resources); the unit is one of them alone.
SHARED_AGENTS = [("kube-proxy/v1.30.0", bench_shared.KUBE_PROXY_SELECTOR), ("coredns/1.11.1", ""),
                 ("flanneld/0.25", ""), ("node-agent/1.0", "")]
SHARED_UNIT = "coredns/1.11.1"
SHARED_RESOURCES = ("services", "endpointslices")
SHARED_LABELS = {"services": "services.v1", "endpointslices": "endpointslices.v1.discovery.k8s.io"}
SHARED_UA = "yurthub/shared-watch"


def metrics_of(hub):
    """Every sample of the hub's /metrics: 'name{labels}' -> value."""
    _, _, body = http_get(hub["serve"], "/metrics", timeout=5)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def shared_metric(metrics, name, resource, encoding="json"):
    return metrics.get(f'{name}{{resource="{SHARED_LABELS[resource]}",encoding="{encoding}"}}')


def shared_received(metrics, resource):
    """Bytes the hub received for a resource, every encoding (a protobuf
    state the JSON-only upstream refused counts its refusal)."""
    return sum(shared_metric(metrics, "node_yurthub_shared_watch_received_bytes_total", resource, e) or 0
               for e in ("json", "pb"))


def shared_phase(name, sub, binary, work, pki, up_port, agents, hub_flags, churn, problems, wait_healthy=True):
    """One row of section 7: the informers of `agents` against the upstream
    (hub_flags None) or a hub in front of it (started now; with wait_healthy,
    the informers start once it counts its apiserver healthy); the churn;
    their convergence. Returns what the upstream wrote meanwhile and what
    the hub reported."""
    def up(path):
        return json.loads(http_get(up_port, path, tls_ca=pki["ca"], timeout=10)[2])

    rate, seconds, services_per_s = churn
    # The watches of the row before end within 0.2 s of their client (bounded wait).
    end = time.monotonic() + 3
    while sum(up("/bench/stats")["watches_open"].values()) and time.monotonic() < end:
        time.sleep(0.05)  # poll interval
    up("/bench/reset")
    hub = None
    port, ca = up_port, pki["ca"]
    if hub_flags is not None:
        hub = start_hub(sub, binary, work, name, f"https://127.0.0.1:{up_port}", "edge", pki, hub_flags)
        wait_for(f"{name} /v1/readyz", lambda: http_get(hub["serve"], "/v1/readyz")[0] == 200, hub["proc"])
        t_ready = time.monotonic()
        if wait_healthy:
            wait_for(f"{name}: a healthy apiserver",
                     lambda: b"no healthy" not in http_get(hub["serve"], "/v1/readyz")[2], hub["proc"])
        res_healthy_s = time.monotonic() - t_ready
        if wait_healthy:
            # The response filters' context lists the Services and watches
            # them once the apiserver is healthy: on its own (sharing off) or
            # through the shared watch. That one-off cost of a starting hub
            # is in every such row, or in none.
            end = time.monotonic() + 8
            by = lambda: up("/bench/stats")["by"]
            while time.monotonic() < end and not (by().get("yurthub|services|watch")
                                                  or by().get(f"{SHARED_UA}|services|watch")):
                time.sleep(0.05)  # poll interval
        res_context_s = time.monotonic() - t_ready - res_healthy_s
        port, ca = hub["proxy"], None
    res = {"hub": hub}
    if hub:
        res["rss_start"] = proc_status(hub["pid"])[0]
        res["healthy_s"], res["context_s"] = res_healthy_s, res_context_s
    infs = [bench_shared.Informer(port, agent, resource, sel, tls_ca=ca, deadline_s=seconds + 90)
            for agent, sel in agents for resource in SHARED_RESOURCES]
    sampler = Sampler([hub["pid"]] if hub else [])
    try:
        with sampler:
            t0 = time.monotonic()
            for inf in infs:
                inf.start()
            for inf in infs:
                if not inf.watching.wait(max(0.1, t0 + 20 - time.monotonic())):
                    raise Broken(f"shared watch, {name}: {inf.agent} {inf.resource} is not watching after 20 s "
                                 f"({inf.error or 'no error'}; lists {inf.lists})")
            res["synced_s"] = time.monotonic() - t0
            if hub:
                res["metrics_before"] = metrics_of(hub)
            up(f"/bench/churn?slices_per_s={rate}&seconds={seconds}&services_per_s={services_per_s}&seed=7")
            end = time.monotonic() + seconds + 15
            while up("/bench/stats")["churn"]["running"]:
                if time.monotonic() > end:
                    raise Broken(f"shared watch, {name}: the upstream's churn did not end")
                time.sleep(0.05)  # poll interval
            churn_end = time.monotonic()
            state = up("/bench/state")
            want = {(inf.agent, inf.resource): bench_shared.expected(state, inf.resource, inf.selector_text)
                    for inf in infs}
            waited, pending = 15.0, infs
            while pending and time.monotonic() < churn_end + waited:
                pending = [inf for inf in pending if inf.snapshot() != want[(inf.agent, inf.resource)]]
                if pending:
                    time.sleep(0.02)  # poll interval
            res["converged_ms"] = (time.monotonic() - churn_end) * 1000
            res["pending"] = []
            for inf in pending:
                got, exp = inf.snapshot(), want[(inf.agent, inf.resource)]
                missing = [k for k in exp if k not in got]
                extra = [k for k in got if k not in exp]
                stale = [(k, got[k], exp[k]) for k in exp if k in got and got[k] != exp[k]]
                res["pending"].append(
                    f"{inf.agent} {inf.resource}: {len(got)} objects, upstream {len(exp)}; missing {missing[:3]}, "
                    f"extra {extra[:3]}, stale (have, want) {stale[:3]}; last rv {inf.rv}, upstream "
                    f"{state['rv']}; {inf.lists} list(s), {inf.watches} watch(es), {inf.gone} 410(s), "
                    f"error {inf.error}")
            res["stats"] = up("/bench/stats")
            res["state"] = state
            if hub:
                res["metrics_after"] = metrics_of(hub)
                res["rss_end"] = proc_status(hub["pid"])[0]
            res["errors"] = [f"{inf.agent} {inf.resource}: {inf.error}" for inf in infs if inf.error]
            res["informers"] = len(infs)
            res["events"] = sum(inf.events for inf in infs)
            res["client_bytes"] = sum(inf.body_bytes for inf in infs)
    finally:
        for inf in infs:
            inf.stop.set()
        for inf in infs:
            inf.join(timeout=3)
        if hub:
            hub["proc"].terminate()
            try:
                hub["proc"].wait(timeout=7)
            except subprocess.TimeoutExpired:
                hub["proc"].kill()
                hub["proc"].wait(timeout=5)
    res["rss_peak"] = sampler.max_rss
    for p in res["pending"]:
        problems.append(f"shared watch, {name}: not converged {waited:.0f} s after the churn: {p}")
    for e in res["errors"]:
        problems.append(f"shared watch, {name}: {e}")
    return res


def shared_section(children, binary, work, pki, quick, problems):
    """Section 7: bytes from the apiserver for four local informers of
    Services and EndpointSlices, through the hub with and without the shared
    watch, against one informer alone; the shared state's memory."""
    n_services, n_slices = 200, 1000
    churn = (20, 2, 1) if quick else (20, 10, 1)  # EndpointSlice changes/s, seconds, Service changes/s
    up_port = free_ports(1)[0]
    sub = Children(children.pidfile)
    try:
        upstream = sub.start("shared-upstream", [sys.executable, os.path.join(HERE, "bench_shared.py"), "serve",
                                                 str(up_port), pki["server_crt"], pki["server_key"], "1800",
                                                 str(n_services), str(n_slices)],
                             os.path.join(work, "shared-upstream.log"))
        wait_for("shared-watch upstream", lambda: http_get(up_port, "/readyz", tls_ca=pki["ca"])[0] == 200, upstream)
        log("shared watch: one informer client direct")
        rows = [("direct", "one informer client (coredns), direct (TLS)",
                 shared_phase("shared-direct", sub, binary, work, pki, up_port, [(SHARED_UNIT, "")], None,
                              churn, problems))]
        # The hub counts its apiserver healthy after one probe instead of two
        # (10 s apart): the informers start once it does, as on a running node.
        healthy = ["--heartbeat-healthy-threshold", "1"]
        for key, label, name, flags, wait in (
                ("on", "hub, shared watch on (default), 4 clients", "hub-shared-on", healthy, True),
                ("off", "hub, shared watch off, 4 clients", "hub-shared-off",
                 healthy + ["--shared-watch-resources="], True),
                ("boot", "hub, shared watch on, 4 clients start with it", "hub-shared-boot", [], False)):
            log(f"shared watch: {label}")
            rows.append((key, label, shared_phase(name, sub, binary, work, pki, up_port, SHARED_AGENTS, flags,
                                                  churn, problems, wait_healthy=wait)))
    finally:
        sub.stop_all()
    return shared_table(rows, churn, n_services, n_slices, problems)


def shared_bytes(res):
    """Upstream body bytes of one row: (for the clients, the hub's own,
    {agent: bytes}, {kind: bytes}) where "for the clients" is every list and
    watch of the two resources asked by a client or by the shared watch."""
    clients = {a for a, _ in SHARED_AGENTS} | {SHARED_UA}
    for_clients, own, by_agent, by_kind = 0, 0, {}, {}
    for key, (_, body, _) in res["stats"]["by"].items():
        agent, resource, kind = key.split("|")
        if agent in clients and resource in SHARED_RESOURCES:
            for_clients += body
            by_agent[agent] = by_agent.get(agent, 0) + body
            by_kind[kind] = by_kind.get(kind, 0) + body
        else:
            own += body
            label = {"yurthub": "yurthub (filter context)", "": "no User-Agent (probes)"}.get(agent, agent)
            k = f"{label} {resource if resource != 'other' else 'other paths'}"
            by_agent[k] = by_agent.get(k, 0) + body
    return for_clients, own, by_agent, by_kind


def shared_table(rows, churn, n_services, n_slices, problems):
    W = 50
    rate, seconds, services_per_s = churn
    res_of = {key: res for key, _, res in rows}
    direct, on = res_of["direct"], res_of["on"]
    out = []
    eps_json = on["state"]["json_bytes"]["endpointslices"]
    out.append(f"7. SHARED WATCH  informers of Services and EndpointSlices (list, then watch with bookmarks; JSON, "
               f"gzip lists) as kube-proxy (its label selector), coredns, flanneld, node-agent; upstream: Python TLS "
               f"server, {n_services} Services, {n_slices:,} EndpointSlices ({eps_json / n_slices / 1000:.1f} KB "
               f"each); churn {rate}/s for {seconds} s: {int(rate * seconds)} EndpointSlice changes (every 25th a "
               f"delete and a create), {int(services_per_s * seconds)} Service changes")
    out.append(f"{'':<{W}}{'B from upstream':>16}{'x 1 client':>11}{'hub own B':>11}{'watches':>8}{'hub RSS':>11}"
               f"{'EPS state':>11}{'objects':>8}")
    unit = shared_bytes(direct)[0]
    for key, label, res in rows:
        mine, own, _, _ = shared_bytes(res)
        watches = sum(res["stats"]["watches_max"].values())
        hub = res["hub"]
        mem = objects = "-"
        if hub:
            m = shared_metric(res["metrics_before"], "node_yurthub_shared_watch_memory_bytes", "endpointslices")
            o = shared_metric(res["metrics_before"], "node_yurthub_shared_watch_objects", "endpointslices")
            if m is not None:
                mem, objects = kib(m / 1024), f"{o:,.0f}"
        out.append(f"{label:<{W}}{mine:>16,}{mine / unit:>10.2f}x{(f'{own:,}' if hub else '-'):>11}{watches:>8}"
                   f"{(kib(res['rss_end']) if hub else '-'):>11}{mem:>11}{objects:>8}")
    for key, _, res in rows:
        mine, own, by_agent, by_kind = shared_bytes(res)
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(by_kind.items()))
        agents = ", ".join(f"{a} {v:,}" for a, v in sorted(by_agent.items(), key=lambda kv: -kv[1]))
        line = f"  {key}: {kinds}; by User-Agent: {agents}"
        if res["hub"]:
            line += f"; with the hub's own: {(mine + own) / unit:.2f}x one client"
        out.append(line)
    ma, mb = on["metrics_after"], on["metrics_before"]
    received = {r: shared_received(ma, r) for r in SHARED_RESOURCES}
    counted = sum(v[1] for k, v in on["stats"]["by"].items() if k.startswith(SHARED_UA + "|"))
    out.append(f"  on: hub metric shared_watch_received_bytes_total: Services {received['services']:,.0f} + "
               f"EndpointSlices {received['endpointslices']:,.0f} = {sum(received.values()):,.0f} "
               f"(the upstream counted {counted:,} for {SHARED_UA})")
    if sum(received.values()) != counted:
        problems.append(f"shared watch: the hub counted {sum(received.values()):,.0f} bytes received, the "
                        f"upstream {counted:,} sent to {SHARED_UA}")
    parts = []
    for r in SHARED_RESOURCES:
        before = shared_metric(mb, "node_yurthub_shared_watch_memory_bytes", r)
        after = shared_metric(ma, "node_yurthub_shared_watch_memory_bytes", r)
        n = shared_metric(ma, "node_yurthub_shared_watch_objects", r)
        if before is None or after is None:
            parts.append(f"{r}: no shared state")
            continue
        parts.append(f"{r} {n:,.0f} objects, {kib(before / 1024)} before the churn, {kib(after / 1024)} after "
                     f"(kept changes); their JSON {kib(on['state']['json_bytes'][r] / 1024)}")
    out.append("  on: shared state: " + "; ".join(parts))
    streams = sum(shared_metric(ma, "node_yurthub_shared_watch_upstream_streams", r) or 0 for r in SHARED_RESOURCES)
    watchers = sum(shared_metric(ma, "node_yurthub_shared_watch_watchers", r) or 0 for r in SHARED_RESOURCES)
    out.append(f"  on: {streams:.0f} upstream streams, {watchers:.0f} local watches served (metrics)")
    out.append("  hub RSS at start, peak: " + ", ".join(
        f"{key} {kib(res['rss_start'])}, {kib(res['rss_peak'])}" for key, _, res in rows if res["hub"]))
    boot = res_of.get("boot")
    if boot:
        out.append(f"  boot: default flags, the informers start as soon as the hub answers /v1/readyz, before it "
                   f"counts its apiserver healthy (two probes 10 s apart); on and off: one probe "
                   f"(--heartbeat-healthy-threshold 1), healthy {on['healthy_s'] * 1000:,.0f} ms after /v1/readyz, "
                   f"then the informers wait for the filter context's Services watch: "
                   f"{on['context_s'] * 1000:,.0f} ms (on), {res_of['off']['context_s'] * 1000:,.0f} ms (off)")
    conv = []
    for key, _, res in rows:
        ok = res["informers"] - len(res["pending"])
        conv.append(f"{key} {ok}/{res['informers']} in {res['converged_ms']:,.0f} ms")
    out.append("  every informer's final state (name -> resourceVersion) equals the upstream's, after the last "
               "change: " + ", ".join(conv))
    return out


# ---------------------------------------------------------------- formatting

def profiler(label, conns, pids, seconds, rep):
    """With BENCH_PROFILE=<part of a row's label> (and BENCH_PROFILE_CONNS,
    default 32), records the row's process for the length of its first run:
    `perf record -g` into BENCH_PROFILE_OUT/perf.data, or with
    BENCH_PROFILE_TOOL=strace a `strace -c -f` summary into
    BENCH_PROFILE_OUT/strace.txt. Read with `perf report -i ... --stdio`."""
    want = os.environ.get("BENCH_PROFILE")
    if not want or want not in label or rep != 0 or len(pids) != 1:
        return None
    if conns != int(os.environ.get("BENCH_PROFILE_CONNS", "32")):
        return None
    out = os.environ.get("BENCH_PROFILE_OUT", "/tmp/yurthub-profile")
    os.makedirs(out, exist_ok=True)
    pid = str(pids[0])
    if os.environ.get("BENCH_PROFILE_TOOL") == "strace":
        cmd = ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", pid,
               "-o", os.path.join(out, "strace.txt")]
    else:
        # BENCH_PROFILE_CALLGRAPH=dwarf gives callers in a release build (no frame pointers).
        graph = os.environ.get("BENCH_PROFILE_CALLGRAPH")
        how = ["--call-graph", "dwarf,16384", "-F", "499"] if graph == "dwarf" else ["-g", "-F", "1999"]
        cmd = ["perf", "record", *how, "-p", pid, "-o", os.path.join(out, "perf.data"),
               "--", "sleep", str(seconds)]
    log(f"profiling {label} ({' '.join(cmd[:3])}) into {out}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def fnum(x):
    return f"{x:,.0f}"


def kib(k):
    return f"{k / 1024:.1f} MiB"


# ---------------------------------------------------------------- the run

def cpuinfo():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def title(quick, only=""):
    return (f"yurthub benchmark  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cores ({cpuinfo()}), "
            f"Linux {os.uname().release}, {'QUICK' if quick else 'full'} run" + (f", only {only}" if only else ""))


def hub_warnings(work, names):
    out = []
    for h in names:
        try:
            with open(os.path.join(work, h, "hub.log"), errors="replace") as f:
                bad = [line.rstrip().split("] ", 1)[-1] for line in f if " WARN " in line or " ERROR " in line]
        except OSError:
            continue
        if bad:
            out.append(f"{h} log: {len(bad)} warnings/errors: " + " | ".join(sorted(set(bad))[:3])[:300])
    return out


def run_only_shared(children, binary, work, quick, problems):
    """BENCH_ONLY=shared: section 7 alone."""
    log("fixtures: PKI")
    pki = fx.make_pki(os.path.join(work, "pki"))
    out = [title(quick, "shared watch (BENCH_ONLY=shared)"), ""]
    out += shared_section(children, binary, work, pki, quick, problems)
    out.append("")
    out += hub_warnings(work, ("hub-shared-on", "hub-shared-off", "hub-shared-boot"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    quick = a.quick
    reps = int(os.environ.get("BENCH_REPS", 1 if quick else 5))
    seconds = int(os.environ.get("BENCH_SECONDS", 1 if quick else 3))
    n_bulk = 1000 if quick else 10000
    watch_events = 50 if quick else 200
    watch_reps = 1 if quick else 3
    cold_objects, cold_reps = (500, 2) if quick else (10000, 7)
    n_watches = 100
    work = os.path.abspath(a.work)
    binary = os.path.abspath(a.binary)
    children = Children(a.pidfile)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    t_start = time.monotonic()
    busy_start, own_start = machine_busy(), own_cpu()
    problems = []
    only = os.environ.get("BENCH_ONLY", "")
    if only not in ("", "shared"):
        log(f"BENCH_ONLY={only}: the only section that runs alone is 'shared'")
        return 2
    try:
        if only == "shared":
            lines = run_only_shared(children, binary, work, quick, problems)
        else:
            lines = run(children, binary, work, quick, reps, seconds, n_bulk, watch_events, watch_reps,
                        cold_objects, cold_reps, n_watches, problems)
    except Exception as e:  # noqa: BLE001 - any failure of the run is reported as broken
        if not isinstance(e, Broken):
            import traceback
            traceback.print_exc()
        log(f"BROKEN: {e}")
        with open(a.out, "w") as f:
            f.write(f"yurthub benchmark {time.strftime('%Y-%m-%d %H:%M')}: BROKEN: {e}\n")
        children.stop_all()
        return 1
    finally:
        children.stop_all()
    wall = time.monotonic() - t_start
    others = (machine_busy() - busy_start) - (own_cpu() - own_start)
    mode = f"{'quick' if quick else 'full'} mode, " + (f"only {only}" if only else
                                                    f"{reps} rep(s) x {seconds} s per wrk row")
    lines.append(f"run took {wall:.0f} s ({mode}); other processes on the machine used {max(others, 0):.0f} CPU s "
                 f"meanwhile ({max(others, 0) / wall:.2f} of {os.cpu_count()} cores on average: more than ~0.1 "
                 "means noisier figures)")
    if problems:
        lines.append("PROBLEMS (the run exits 1):")
        lines += [f"  - {p}" for p in problems]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(a.out, "w") as f:
        f.write(text)
    return 1 if problems else 0


def run(children, binary, work, quick, reps, seconds, n_bulk, watch_events, watch_reps,
        cold_objects, cold_reps, n_watches, problems):
    out = []
    log("fixtures: PKI, upstream documents, offline cache")
    pki = fx.make_pki(os.path.join(work, "pki"))
    sizes = fx.upstream_docs(os.path.join(work, "docs"))
    up_port, np_port, watch_up, np_watch = free_ports(4)

    # --- servers
    upstream = start_nginx(children, "nginx-upstream", work, UPSTREAM_BODY.format(
        port=up_port, pki=pki, get=GET, list=LIST, docs=os.path.join(work, "docs")))
    proxy_ng = start_nginx(children, "nginx-proxy", work, PROXY_BODY.format(
        up=up_port, watch_up=watch_up, port=np_port, watch_port=np_watch, pki=pki))
    watch_srv = children.start("watch-upstream", [sys.executable, os.path.join(HERE, "bench_watch.py"), "serve",
                                                  str(watch_up), pki["server_crt"], pki["server_key"],
                                                  str(watch_events), "20", "3600"],
                               os.path.join(work, "watch-upstream.log"))
    wait_for("upstream nginx", lambda: http_get(up_port, "/readyz", tls_ca=pki["ca"])[0] == 200, upstream)
    wait_for("proxy nginx", lambda: http_get(np_port, GET)[0] == 200, proxy_ng)
    wait_for("watch upstream", lambda: http_get(watch_up, "/readyz", tls_ca=pki["ca"])[0] == 200, watch_srv)
    up_url = f"https://127.0.0.1:{up_port}"
    hub_cloud = start_hub(children, binary, work, "hub-cloud", up_url, "cloud", pki)
    hub_edge = start_hub(children, binary, work, "hub-edge", up_url, "edge", pki)
    hub_wc = start_hub(children, binary, work, "hub-watch-cloud", f"https://127.0.0.1:{watch_up}", "cloud", pki)
    hub_we = start_hub(children, binary, work, "hub-watch-edge", f"https://127.0.0.1:{watch_up}", "edge", pki)
    for h in (hub_cloud, hub_edge, hub_wc, hub_we):
        wait_for(f"{h['name']} /v1/readyz", lambda h=h: http_get(h["serve"], "/v1/readyz")[0] == 200, h["proc"])

    log(f"offline cache: {n_bulk} + 100 ConfigMaps, 110 pods (JSON and protobuf)")
    off_dir = os.path.join(work, "hub-offline", "cache")
    fx.fill_cache(off_dir, n_bulk)
    t0 = time.monotonic()
    hub_off = start_hub(children, binary, work, "hub-offline", "https://127.0.0.1:1", "edge", pki)
    wait_for("hub-offline first offline GET",
             lambda: http_get(hub_off["proxy"], GET, {"User-Agent": KUBELET})[0] == 200, hub_off["proc"])
    off_first = time.monotonic() - t0

    proxy_pids = [proxy_ng.pid] + children_of(proxy_ng.pid)
    upstream_pids = [upstream.pid] + children_of(upstream.pid)
    idle = {"hub": proc_status(hub_cloud["pid"]), "hub-offline": proc_status(hub_off["pid"]),
            "nginx-proxy": rss_sum(proxy_pids), "nginx-upstream": rss_sum(upstream_pids),
            "nginx-proxy-procs": len(proxy_pids)}

    # --- correctness before measuring: every row must answer what it should
    log("checking every answer once")
    ref = {GET: http_get(up_port, GET, tls_ca=pki["ca"])[2], LIST: http_get(up_port, LIST, tls_ca=pki["ca"])[2]}
    for name, port, ua in [("nginx proxy", np_port, "bench"), ("hub cloud", hub_cloud["proxy"], "bench"),
                           ("hub edge", hub_edge["proxy"], KUBELET)]:
        for path in (GET, LIST):
            st, hd, body = http_get(port, path, {"User-Agent": ua})
            if st != 200 or body != ref[path] or not hd.get("content-type", "").startswith("application/json"):
                raise Broken(f"{name} GET {path}: {st}, {len(body)} bytes (upstream: {len(ref[path])})")
    static_files = {}
    offline_rows = [("GET  one ConfigMap, JSON", GET, "application/json", None),
                    ("GET  one ConfigMap, protobuf", GET, PB_ACCEPT, None),
                    ("LIST 100 ConfigMaps, JSON", LIST, "application/json", 100),
                    ("LIST 100 ConfigMaps, protobuf", LIST, PB_ACCEPT, 100),
                    ("LIST 110-pod node pod list, JSON", PODS, "application/json", 110),
                    ("LIST 110-pod node pod list, protobuf", PODS, PB_ACCEPT, 110)]
    for label, path, accept, n_items in offline_rows:
        st, hd, body = http_get(hub_off["proxy"], path, {"User-Agent": KUBELET, "Accept": accept})
        pb = accept == PB_ACCEPT
        ok = st == 200 and (body[:4] == b"k8s\0") == pb
        if ok and not pb and n_items:
            ok = len(json.loads(body)["items"]) == n_items
        if ok and pb and n_items:
            ok = pb_items(body) == n_items
        if not ok:
            raise Broken(f"hub offline {label}: status {st}, {len(body)} bytes, "
                         f"content-type {hd.get('content-type')}: {body[:200]!r}")
        if label.startswith("GET  one ConfigMap, JSON"):
            sizes["offline-get"] = len(body)
        if accept == "application/json":
            static_files[path] = body

    # The same bytes as static files behind nginx (plain HTTP, as the hub).
    static_dir = os.path.join(work, "static")
    os.makedirs(static_dir, exist_ok=True)
    locations = []
    for n, (path, body) in enumerate(static_files.items()):
        name = os.path.join(static_dir, f"{n}.json")
        with open(name, "wb") as f:
            f.write(body)
        locations.append(f"    location = {path.split('?')[0]} {{ alias {name}; }}")
    static_port = free_ports(1)[0]
    static_ng = start_nginx(children, "nginx-static", work,
                            STATIC_BODY.format(port=static_port, locations="\n".join(locations)))
    wait_for("static nginx", lambda: http_get(static_port, GET)[0] == 200, static_ng)
    static_pids = [static_ng.pid] + children_of(static_ng.pid)

    # --- throughput and latency
    pass_targets = [("direct to upstream (wrk over TLS)", "direct", f"https://127.0.0.1:{up_port}", "bench/1.0", None),
                    ("nginx reverse proxy", "nginx", f"http://127.0.0.1:{np_port}", "bench/1.0", proxy_pids),
                    ("hub, cloud mode (pass-through)", "hub", f"http://127.0.0.1:{hub_cloud['proxy']}", "bench/1.0",
                     [hub_cloud["pid"]]),
                    ("hub, edge mode, kubelet (caches copies)", "hub-edge", f"http://127.0.0.1:{hub_edge['proxy']}",
                     KUBELET, [hub_edge["pid"]])]
    rows = []  # (section, key, label, conns, url, headers, pids)
    for path_label, path in (("GET ", GET), ("LIST", LIST)):
        for conns in (1, 8, 16, 32):
            for label, key, base, ua, pids in pass_targets:
                if quick and conns == 1 and (path == LIST or key in ("nginx", "hub-edge")):
                    continue
                # 8 and 16: where the hub's upstream connection pool (8 idle per server) runs out
                if conns in (8, 16) and (quick or key != "hub" or path != GET):
                    continue
                rows.append(("pass", key, f"{path_label} {label}", path, conns, base + path, {"User-Agent": ua}, pids))
    for label, path, accept, _ in offline_rows:
        for conns in (1, 32):
            if quick and conns == 1:
                continue
            rows.append(("offline", "offline", label, path, conns, f"http://127.0.0.1:{hub_off['proxy']}{path}",
                         {"User-Agent": KUBELET, "Accept": accept}, [hub_off["pid"]]))
            if accept == "application/json" and path != LIST:
                rows.append(("offline", "static", "  the same bytes: nginx, static file", path, conns,
                             f"http://127.0.0.1:{static_port}{path.split('?')[0]}", {"User-Agent": KUBELET},
                             static_pids))
    if not quick:
        log("warm-up")
        for _, _, base, ua, _ in pass_targets:
            wrk(work, base + GET, 32, 1, {"User-Agent": ua})
    def upstream_accepts():
        text = http_get(up_port, "/nginx_status", tls_ca=pki["ca"])[2].decode()
        return int(text.splitlines()[2].split()[0])

    results = {i: [] for i in range(len(rows))}
    accepted = {i: [] for i in range(len(rows))}  # upstream TLS connections opened per run
    cpu = {}  # (key, path) -> [ticks, requests]
    peaks = {}  # key -> (max rss KiB, max threads)
    total = len(rows) * reps
    done = 0
    for rep in range(reps):
        for i, (section, key, label, path, conns, url, headers, pids) in enumerate(rows):
            done += 1
            log(f"[{done}/{total}] {label}, {conns} conn(s)")
            pids = pids or []
            before = cpu_ticks(pids)
            acc = upstream_accepts() if section == "pass" else 0
            tracer = profiler(label, conns, pids, seconds, rep)
            with Sampler(pids) as s:
                r = wrk(work, url, conns, seconds, headers)
            if tracer:
                tracer.wait(timeout=seconds + 30)
            ticks = cpu_ticks(pids) - before
            if section == "pass":
                accepted[i].append(upstream_accepts() - acc - 1)
            c = cpu.setdefault((key, path), [0, 0])
            c[0] += ticks
            c[1] += r["requests"]
            pk = peaks.get(key, (0, 0))
            peaks[key] = (max(pk[0], s.max_rss), max(pk[1], s.max_threads))
            results[i].append(r)

    wait_cpu_idle(hub_edge["pid"])  # its cache writer may still be draining copies
    load_status = {"hub": proc_status(hub_cloud["pid"]), "hub-edge": proc_status(hub_edge["pid"]),
                   "hub-offline": proc_status(hub_off["pid"])}
    dropped = metric(hub_edge, "node_yurthub_cache_dropped_total")
    written = metric(hub_edge, "node_yurthub_cache_objects_written_total")
    index = {part: metric(hub_off, f'node_yurthub_cache_index_bytes{{part="{part}"}}')
             for part in ("objects", "entries")}
    index_objects = metric(hub_off, "node_yurthub_cache_index_objects")

    # --- watch relay
    log("watch relay")
    watch_path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=120"
    watch_rows = [("direct to upstream (TLS)", watch_up, "bench/1.0", pki["ca"]),
                  ("nginx reverse proxy", np_watch, "bench/1.0", None),
                  ("hub, cloud mode", hub_wc["proxy"], "bench/1.0", None),
                  ("hub, edge mode, kubelet (caches events)", hub_we["proxy"], KUBELET, None)]
    watch_res = []
    for label, port, ua, ca in watch_rows:
        lats, per_rep = [], []
        for _ in range(watch_reps):
            try:
                ls, status = bench_watch.watch_latencies(port, watch_path, ua, tls_ca=ca,
                                                         deadline_s=watch_events * 0.02 + 30)
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                raise Broken(f"watch via {label}: {e}")
            if len(ls) != watch_events:
                raise Broken(f"watch via {label}: {len(ls)} of {watch_events} events arrived ({status})")
            lats += ls
            per_rep.append(med(ls))
        watch_res.append((label, lats, per_rep))

    # --- held offline watches
    log(f"{n_watches} held offline watches")
    socks = []
    try:
        for i in range(n_watches):
            s = socket.create_connection(("127.0.0.1", hub_off["proxy"]), timeout=5)
            s.sendall(f"GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=600 HTTP/1.1\r\n"
                      f"Host: x\r\nUser-Agent: {KUBELET}\r\nAccept: application/json\r\n\r\n".encode())
            socks.append(s)
        for s in socks:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise Broken(f"offline watch: {head[:100]!r}")
        watches_status = proc_status(hub_off["pid"])
    finally:
        for s in socks:
            s.close()
    quarantined = metric(hub_off, "node_yurthub_cache_quarantined_files_total")
    if quarantined:
        problems.append(f"hub-offline quarantined {quarantined:.0f} of the benchmark's cache files")

    children.stop_all()

    # --- cold start
    log(f"cold start ({cold_objects} objects, {cold_reps} reps)")
    cold = bench_coldstart.measure_all(binary, cold_objects, cold_reps)

    # --- shared watch
    shared = shared_section(children, binary, work, pki, quick, problems)

    # ================================================================ table
    W = 50  # label column

    def rps_of(r):
        return r["requests"] / (r["duration_us"] / 1e6)

    out.append(title(quick))
    out.append(f"wrk rows: {reps} run(s) of {seconds} s each, rows interleaved; p50/p99 = wrk's latency percentiles, "
               "median over runs; req/s = median (min-max) over runs")
    out.append("")

    def table(section, with_upstream):
        hdr = f"{'':<{W}}{'conns':>5}{'p50 us':>9}{'p99 us':>9}{'req/s':>9}  {'(min-max)':<15}{'B/resp':>8}"
        if with_upstream:
            hdr += f"{'new upstream conns/run':>24}"
        out.append(hdr)
        for i, row in enumerate(rows):
            if row[0] != section:
                continue
            label, conns, rs = row[2], row[4], results[i]
            rps = [rps_of(r) for r in rs]
            errs = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] for r in rs)
            reqs = sum(r["requests"] for r in rs)
            if reqs == 0 or errs > 0.01 * reqs:
                problems.append(f"{label} ({conns} conns): {errs} errors in {reqs} requests")
            spread = f"({fnum(min(rps))}-{fnum(max(rps))})"
            line = (f"{label:<{W}}{conns:>5}{med([r['p50'] for r in rs]):>9,.0f}{med([r['p99'] for r in rs]):>9,.0f}"
                    f"{med(rps):>9,.0f}  {spread:<15}{sum(r['bytes'] for r in rs) / max(reqs, 1):>8,.0f}")
            if with_upstream:
                line += f"{med(accepted[i]):>24,.0f}"
            if errs:
                line += f"  ERRORS: {errs}"
            out.append(line)

    summary = {}
    for i, row in enumerate(rows):
        summary[(row[1], row[3], row[4])] = (med([r["p50"] for r in results[i]]),
                                             med([rps_of(r) for r in results[i]]))

    def ratio(x, y, k):
        return f"{x[k] / y[k]:.2f}x" if x and y and y[k] else "-"

    out.append(f"1. PASS-THROUGH  upstream: nginx serving fixed JSON over TLS. GET = one ConfigMap ({sizes['cm1']} B), "
               f"LIST = ConfigMapList of 100 ({sizes['cmlist'] / 1024:.1f} KiB)")
    table("pass", True)
    out.append(f"{'ratios (of the medians above)':<{W}}{'conns':>5}{'p50 hub/direct':>16}{'hub/nginx':>11}"
               f"{'req/s hub/direct':>18}{'hub/nginx':>11}{'req/s edge/cloud':>18}")
    for pl, path in (("GET", GET), ("LIST", LIST)):
        for conns in (1, 32):
            h = summary.get(("hub", path, conns))
            d, n, e = (summary.get((k, path, conns)) for k in ("direct", "nginx", "hub-edge"))
            if h:
                out.append(f"{pl:<{W}}{conns:>5}{ratio(h, d, 0):>16}{ratio(h, n, 0):>11}{ratio(h, d, 1):>18}"
                           f"{ratio(h, n, 1):>11}{ratio(e, h, 1):>18}")
    out.append(f"hub edge mode: {written:.0f} cache writes, {dropped:.0f} copies dropped (writer queue full, "
               "by design: the client is never slowed)")
    out.append("")
    out.append("2. OFFLINE  the hub answers from its cache, apiserver refused (https://127.0.0.1:1), "
               f"User-Agent kubelet, {n_bulk + 210:,} objects cached")
    table("offline", False)
    for pl, path in (("GET", GET), ("LIST", LIST)):
        for conns in (1, 32):
            o, d = summary.get(("offline", path, conns)), summary.get(("direct", path, conns))
            if o and d:
                out.append(f"{'ratio offline JSON / direct upstream, ' + pl:<{W}}{conns:>5}"
                           f"{'p50 ' + ratio(o, d, 0):>16}{'':>11}{'req/s ' + ratio(o, d, 1):>18}")
    for pl, path in (("GET", GET), ("110-pod list", PODS)):
        for conns in (1, 32):
            o, s = summary.get(("offline", path, conns)), summary.get(("static", path, conns))
            if o and s:
                out.append(f"{'ratio offline JSON / nginx static, ' + pl:<{W}}{conns:>5}"
                           f"{'p50 ' + ratio(o, s, 0):>16}{'':>11}{'req/s ' + ratio(o, s, 1):>18}")
    out.append("")
    out.append(f"3. WATCH RELAY  upstream write -> client read of one event; {watch_reps} stream(s) x "
               f"{watch_events} events, one per 20 ms; upstream: Python TLS server")
    out.append(f"{'':<{W}}{'events':>7}{'p50 us':>9}{'p99 us':>9}{'max us':>9}  p50 per stream (min-max)")
    for label, lats, per_rep in watch_res:
        out.append(f"{label:<{W}}{len(lats):>7}{med(lats):>9,.0f}{pct(lats, 99):>9,.0f}{max(lats):>9,.0f}"
                   f"  ({min(per_rep):,.0f}-{max(per_rep):,.0f})")
    base = med(watch_res[0][1])
    out.append(f"{'p50 added over direct':<{W}}{'':>7}  hub {med(watch_res[2][1]) - base:,.0f} us, "
               f"hub caching {med(watch_res[3][1]) - base:,.0f} us, nginx {med(watch_res[1][1]) - base:,.0f} us")
    out.append("")
    out.append("4. FOOTPRINT  RSS = VmRSS, threads = Threads (/proc/PID/status); CPU = utime+stime (/proc/PID/stat) "
               "per 10,000 requests, over every wrk run of that row")
    fp = [("hub RSS idle, cloud mode, after start", kib(idle["hub"][0]), f"{idle['hub'][1]} threads"),
          ("hub RSS peak under load, cloud mode", kib(peaks["hub"][0]), f"{peaks['hub'][1]} threads at most"),
          ("hub RSS peak under load, edge mode (caching)", kib(peaks["hub-edge"][0]),
           f"{peaks['hub-edge'][1]} threads at most"),
          ("hub RSS edge mode, after its runs, once idle", kib(load_status["hub-edge"][0]),
           f"{load_status['hub-edge'][1]} threads; cloud mode after its runs: {kib(load_status['hub'][0])}"),
          (f"hub RSS offline, {n_bulk + 210:,} objects cached, at start", kib(idle["hub-offline"][0]),
           f"{idle['hub-offline'][1]} threads; first answer {off_first * 1000:.0f} ms after spawn"),
          ("hub RSS offline, after the offline runs", kib(load_status["hub-offline"][0]),
           f"peak (VmHWM) {kib(load_status['hub-offline'][2])}"),
          (f"hub offline cache index, {index_objects:,.0f} objects",
           kib((index["objects"] + index["entries"]) / 1024),
           f"object bytes kept {kib(index['objects'] / 1024)} (cap 16 MiB), entries {kib(index['entries'] / 1024)}"),
          (f"hub RSS offline, {n_watches} held watches open", kib(watches_status[0]),
           f"{watches_status[1]} threads"),
          (f"nginx proxy RSS idle ({idle['nginx-proxy-procs']} processes, summed)", kib(idle["nginx-proxy"]), ""),
          ("nginx proxy RSS peak under load (summed)", kib(peaks["nginx"][0]), "")]
    for key, label in (("hub", "hub cloud"), ("hub-edge", "hub edge (caching)"), ("nginx", "nginx proxy"),
                       ("offline", "hub offline"), ("static", "nginx static file")):
        for pl, path in (("GET", GET), ("LIST", LIST), ("pod list", PODS)):
            t, n = cpu.get((key, path), (0, 0))
            if n:
                fp.append((f"CPU s per 10,000 requests, {label}, {pl}", f"{t / TICK / n * 10000:.2f} s",
                           f"{n:,} requests, {t / TICK:.1f} CPU s"))
    for label, val, note in fp:
        out.append(f"{label:<{W}}{val:>12}  {note}")
    out.append("")
    out.append(f"5. COLD START  process start -> first offline answer, apiserver silent (blackholed); "
               f"{cold_reps} reps")
    out.append(f"{'':<{W}}{'median':>12}  (min-max)")
    for key, label in (("baseline", "baseline: first offline get, 110 objects cached"),
                       ("get", f"first offline get, {cold_objects + 110:,} objects cached"),
                       ("list", f"first offline 110-pod list, {cold_objects + 110:,} objects")):
        ms = [x * 1000 for x in cold[key]]
        out.append(f"{label:<{W}}{med(ms):>9.1f} ms  ({min(ms):.1f}-{max(ms):.1f})")
    out.append(f"{'ratio get large/baseline':<{W}}{med(cold['get']) / med(cold['baseline']):>11.2f}x")
    out.append("")
    out.append("6. BINARY SIZE")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    libs = []
    ldd = subprocess.run(["ldd", nginx_bin], capture_output=True, text=True, timeout=10).stdout
    for line in ldd.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].split() and parts[1].split()[0].startswith("/"):
            path = parts[1].split()[0]
            if "libc.so" not in path:
                libs.append(os.path.realpath(path))
    out.append(f"{'yurthub (release: opt-level z, LTO, stripped)':<{W}}{os.path.getsize(binary) / 1048576:>9.2f} MiB"
               "  needs only libc, libgcc_s")
    out.append(f"{'nginx ' + nginx_bin + ' (Debian)':<{W}}{os.path.getsize(nginx_bin) / 1048576:>9.2f} MiB"
               f"  + {sum(os.path.getsize(p) for p in libs) / 1048576:.2f} MiB of shared libraries besides libc "
               f"({', '.join(os.path.basename(p).split('.so')[0] for p in libs)})")
    out.append("")
    out += shared
    out.append("")
    out += hub_warnings(work, ("hub-cloud", "hub-edge", "hub-offline", "hub-watch-cloud", "hub-watch-edge",
                               "hub-shared-on", "hub-shared-off", "hub-shared-boot"))
    return out


if __name__ == "__main__":
    sys.exit(main())
