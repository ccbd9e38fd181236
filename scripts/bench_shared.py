#!/usr/bin/env python3
"""Shared watch: an "apiserver" holding Services and EndpointSlices that
change while clients list and watch them, and an informer-like client.
bench_main.py drives both (section 7 of the benchmark).

  bench_shared.py serve PORT CERT KEY LIFETIME_S SERVICES SLICES

serves, in JSON over TLS on 127.0.0.1:PORT:
  GET /readyz                                   200 "ok"
  any resource request whose Accept names no JSON: 406 (it speaks JSON only,
        as kube-apiserver refuses a media type it cannot serve)
  GET /api/v1/services, /api/v1/namespaces/NS/services,
      /apis/discovery.k8s.io/v1/endpointslices,
      /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices
        list: the current state (resourceVersion and limit ignored, as
        kube-apiserver's watch cache does for resourceVersion=0), gzip past
        128 KiB when the client accepts it (level 1, as kube-apiserver);
        watch=true: from resourceVersion, the changes after it (absent, ""
        or "0": every object as ADDED first), BOOKMARK every 5 s with
        allowWatchBookmarks=true, ended after timeoutSeconds, 410 Gone (an
        ERROR event) before the first version it has; labelSelector
        (=, ==, !=, key, !key) with objects entering or leaving a selection
        sent as ADDED or DELETED, as the apiserver's watch cache does
  GET /bench/churn?slices_per_s=K&seconds=D&services_per_s=M&seed=N
        starts the churn: K EndpointSlice changes a second for D seconds
        (every 25th a delete and a create, the others an endpoint's
        readiness), M Service changes a second (an annotation)
  GET /bench/stats    what it wrote since the last reset, per User-Agent,
                      resource and request kind (list/watch/other): requests,
                      body bytes (as sent: gzip lists compressed, watch
                      events without chunk framing), wire bytes (with heads
                      and framing, before TLS); and per client connection
  GET /bench/state    every object's namespace, name, resourceVersion, labels,
                      and the JSON bytes of each resource's objects
  GET /bench/reset    zeroes the counters
  anything else       404 with a Status
Its own /bench/ answers are not counted. Every socket has a deadline; it
exits by itself after LIFETIME_S. Stdlib only.

The client (Informer) does what a client-go informer does: list with
limit=500&resourceVersion=0, then watch from the list's resourceVersion with
bookmarks, watching again from the last version seen when a watch ends and
listing again after 410 Gone; it keeps name -> resourceVersion."""
import bisect
import gzip
import json
import random
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse

import bench_watch

SOCKET_TIMEOUT = 30.0
BOOKMARK_S = 5.0
GZIP_THRESHOLD = 128 * 1024
NAMESPACES = 24
KUBE_PROXY_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"

RESOURCES = {
    "services": {"kind": "Service", "apiVersion": "v1", "prefix": ["api", "v1"]},
    "endpointslices": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                       "prefix": ["apis", "discovery.k8s.io", "v1"]},
}
PATHS = {"services": "/api/v1/services", "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices"}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------- selectors

def parse_selector(text):
    """[(key, op, value)] for the label selector forms informers use."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("!"):
            out.append((part[1:].strip(), "absent", None))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        else:
            out.append((part, "exists", None))
    return out


def selects(selector, labels):
    for k, op, v in selector:
        if op == "absent" and k in labels:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
    return True


# ---------------------------------------------------------------- the cluster

class Obj:
    """One object at one resourceVersion, encoded once."""
    __slots__ = ("namespace", "name", "rv", "labels", "full", "item")

    def __init__(self, resource, doc):
        meta = doc["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.rv = int(meta["resourceVersion"])
        self.labels = dict(meta.get("labels") or {})
        spec = RESOURCES[resource]
        self.item = dumps(doc).encode()  # as in a list: no kind, apiVersion
        self.full = dumps({"kind": spec["kind"], "apiVersion": spec["apiVersion"], **doc}).encode()


def _uid(kind, n):
    return f"{kind:0>8.8}-5b1e-4c2a-9d3f-{n:012d}"


def _ip(n, base=96):
    return f"10.{base + (n >> 16) % 8}.{(n >> 8) & 255}.{n & 255}"


def _time(n):
    return f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z"


def service_doc(i, rv, gen):
    ns, name = f"ns-{i % NAMESPACES}", f"svc-{i}"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": f"shop-{i % 7}"}
    if i % 50 == 17:
        labels["service.kubernetes.io/service-proxy-name"] = "other-proxy"
    headless = i % 10 == 9
    ip = "None" if headless else _ip(i)
    fields = {"f:metadata": {"f:annotations": {".": {}, "f:bench/generation": {}},
                             "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}}},
              "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, 'k:{"port":80,"protocol":"TCP"}': {
                  ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                  "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}
    return {
        "metadata": {"name": name, "namespace": ns, "uid": _uid("svc", i), "resourceVersion": str(rv),
                     "creationTimestamp": _time(i), "labels": labels,
                     "annotations": {"bench/generation": str(gen)},
                     "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                        "apiVersion": "v1", "time": _time(i + gen), "fieldsType": "FieldsV1",
                                        "fieldsV1": fields}]},
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                 "selector": {"app.kubernetes.io/name": name}, "clusterIP": ip, "clusterIPs": [ip],
                 "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    }


def slice_doc(j, svc, rv, gen):
    """EndpointSlice j of Service svc as the endpointslice controller writes
    it (without managedFields): 1 to 3 endpoints, one port (about 1.1 KB)."""
    ns, service = f"ns-{svc % NAMESPACES}", f"svc-{svc}"
    n = j * 7919 % 27 ** 5  # one suffix per j (7919 is prime to 27)
    suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[n // 27 ** k % 27] for k in range(5))
    name = f"{service}-{suffix}"
    labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
              "kubernetes.io/service-name": service}
    if svc % 10 == 9:
        labels["service.kubernetes.io/headless"] = ""
    endpoints = []
    for k in range(1 + j % 3):
        pod = f"{service}-7d9f{j % 97:02d}-{suffix[k:]}{k}"
        endpoints.append({"addresses": [_ip(j * 4 + k, 160)],
                          "conditions": {"ready": (gen + k) % 5 != 0, "serving": True, "terminating": False},
                          "nodeName": f"edge-{(j + k) % 40}",
                          "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": _uid("pod", j * 4 + k)},
                          "zone": f"zone-{(j + k) % 3}"})
    return {
        "metadata": {"name": name, "generateName": f"{service}-", "namespace": ns, "uid": _uid("eps", j),
                     "resourceVersion": str(rv), "generation": gen + 1, "creationTimestamp": _time(j),
                     "labels": labels,
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": _time(j + gen)},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                          "uid": _uid("svc", svc), "controller": True,
                                          "blockOwnerDeletion": True}]},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }


class Cluster:
    """Objects, the global resourceVersion and every change since the start."""

    def __init__(self, n_services, n_slices):
        self.cond = threading.Condition()
        self.n_services = n_services
        self.rv = 1000
        self.objects = {r: {} for r in RESOURCES}  # resource -> (ns, name) -> Obj
        self.gen = {}  # (resource, index) -> generation
        self.slice_of = {}  # (ns, name) of a slice -> (index, service)
        for i in range(n_services):
            self._put("services", Obj("services", service_doc(i, self._next(), 0)))
        for j in range(n_slices):
            self._new_slice(j, j % n_services)
        self.first_rv = self.rv  # watches from before this are 410 Gone
        self.log_rvs = []  # ascending
        self.log = []  # (rv, resource, type, obj, previous)
        self.next_slice = n_slices
        self.churn = {"running": False, "slices": 0, "services": 0, "last_rv": self.rv}

    def _next(self):
        self.rv += 1
        return self.rv

    def _put(self, resource, obj):
        self.objects[resource][(obj.namespace, obj.name)] = obj

    def _new_slice(self, j, svc):
        obj = Obj("endpointslices", slice_doc(j, svc, self._next(), 0))
        self._put("endpointslices", obj)
        self.slice_of[(obj.namespace, obj.name)] = (j, svc)
        self.gen[("endpointslices", j)] = 0
        return obj

    def _record(self, resource, kind, obj, previous):
        self.log_rvs.append(obj.rv)
        self.log.append((obj.rv, resource, kind, obj, previous))

    def change_slice(self, rng, replace):
        with self.cond:
            key = rng.choice(sorted(self.objects["endpointslices"]))
            previous = self.objects["endpointslices"][key]
            j, svc = self.slice_of[key]
            if replace:
                doc = json.loads(previous.item)
                doc["metadata"]["resourceVersion"] = str(self._next())
                gone = Obj("endpointslices", doc)
                del self.objects["endpointslices"][key]
                del self.slice_of[key]
                self._record("endpointslices", "DELETED", gone, previous)
                obj = self._new_slice(self.next_slice, svc)
                self.next_slice += 1
                self._record("endpointslices", "ADDED", obj, None)
            else:
                gen = self.gen[("endpointslices", j)] + 1
                self.gen[("endpointslices", j)] = gen
                obj = Obj("endpointslices", slice_doc(j, svc, self._next(), gen))
                self._put("endpointslices", obj)
                self._record("endpointslices", "MODIFIED", obj, previous)
            self.churn["slices"] += 1
            self.churn["last_rv"] = self.rv
            self.cond.notify_all()

    def change_service(self, rng):
        with self.cond:
            i = rng.randrange(self.n_services)
            key = (f"ns-{i % NAMESPACES}", f"svc-{i}")
            previous = self.objects["services"][key]
            gen = self.gen.get(("services", i), 0) + 1
            self.gen[("services", i)] = gen
            obj = Obj("services", service_doc(i, self._next(), gen))
            self._put("services", obj)
            self._record("services", "MODIFIED", obj, previous)
            self.churn["services"] += 1
            self.churn["last_rv"] = self.rv
            self.cond.notify_all()

    def run_churn(self, slices_per_s, seconds, services_per_s, seed):
        rng = random.Random(seed)
        steps = int(slices_per_s * seconds)
        svc_every = max(1, round(slices_per_s / services_per_s)) if services_per_s > 0 else 0
        start = time.monotonic()
        try:
            for n in range(steps):
                delay = start + n / slices_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing, not synchronisation
                self.change_slice(rng, replace=n % 25 == 24)
                if svc_every and n % svc_every == svc_every - 1:
                    self.change_service(rng)
        finally:
            with self.cond:
                self.churn["running"] = False

    def list_body(self, resource, namespace, selector):
        with self.cond:
            objs = [o for o in self.objects[resource].values()
                    if (not namespace or o.namespace == namespace) and selects(selector, o.labels)]
            rv = self.rv
        spec = RESOURCES[resource]
        head = dumps({"kind": spec["kind"] + "List", "apiVersion": spec["apiVersion"],
                      "metadata": {"resourceVersion": str(rv)}})[:-1].encode()
        return head + b',"items":[' + b",".join(o.item for o in objs) + b"]}"

    def state(self):
        with self.cond:
            return {"rv": self.rv,
                    "json_bytes": {r: sum(len(o.full) for o in objs.values()) for r, objs in self.objects.items()},
                    **{r: [[o.namespace, o.name, str(o.rv), o.labels] for o in objs.values()]
                       for r, objs in self.objects.items()}}


# ---------------------------------------------------------------- counters

class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.watches_open = {}  # resource -> watches open now (not reset)
        self.reset()

    def reset(self):
        with self.lock:
            self.by = {}  # "ua|resource|kind" -> [requests, body, wire]
            self.conns = {}  # id -> {"peer", "agents", "body", "wire"}
            self.watches_max = dict(self.watches_open)
            self.watches_total = {}
            self.since = time.time()

    def request(self, key):
        with self.lock:
            self.by.setdefault(key, [0, 0, 0])[0] += 1

    def wrote(self, conn_id, peer, key, body, wire):
        with self.lock:
            e = self.by.setdefault(key, [0, 0, 0])
            e[1] += body
            e[2] += wire
            c = self.conns.setdefault(conn_id, {"peer": peer, "agents": [], "body": 0, "wire": 0})
            agent = key.split("|", 1)[0]
            if agent not in c["agents"]:
                c["agents"].append(agent)
            c["body"] += body
            c["wire"] += wire

    def watch(self, resource, delta):
        with self.lock:
            n = self.watches_open.get(resource, 0) + delta
            self.watches_open[resource] = n
            self.watches_max[resource] = max(self.watches_max.get(resource, 0), n)
            if delta > 0:
                self.watches_total[resource] = self.watches_total.get(resource, 0) + 1

    def snapshot(self):
        with self.lock:
            return {"by": dict(self.by), "conns": list(self.conns.values()),
                    "watches_open": dict(self.watches_open), "watches_max": dict(self.watches_max),
                    "watches_total": dict(self.watches_total), "seconds": time.time() - self.since}


# ---------------------------------------------------------------- server

def _route(path):
    """(resource, namespace) of a collection path, or None."""
    parts = [p for p in path.split("/") if p]
    for resource, spec in RESOURCES.items():
        n = len(spec["prefix"])
        if parts[:n] != spec["prefix"]:
            continue
        rest = parts[n:]
        if len(rest) == 3 and rest[0] == "namespaces":
            rest, ns = rest[2:], rest[1]
        else:
            ns = ""
        if rest == [resource]:
            return resource, ns
    return None


def _status(code, reason, message):
    return dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}).encode()


class Server:
    def __init__(self, cluster, counters):
        self.cluster, self.counters = cluster, counters
        self.conn_seq = 0
        self.lock = threading.Lock()

    def serve_conn(self, raw, ctx):
        raw.settimeout(SOCKET_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.conn_seq += 1
            conn_id = self.conn_seq
        try:
            peer = "%s:%d" % raw.getpeername()
            # The same socket under TLS's feet: a watch ends as soon as its
            # client has gone (nothing more is written, or counted, for it).
            probe = raw.dup()
        except OSError:
            raw.close()
            return
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            probe.close()
            return
        buf = b""
        try:
            while True:
                head, buf = bench_watch.read_head(conn, buf)
                if head is None:
                    return
                lines = head.split("\r\n")
                target = lines[0].split(" ")[1]
                fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                if "chunked" in fields.get("transfer-encoding", "").lower():
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                length = int(fields.get("content-length", "0") or 0)
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                keep = self.answer(conn, probe, conn_id, peer, target, fields)
                if not keep or fields.get("connection", "").lower() == "close":
                    return
        except (OSError, ssl.SSLError, ValueError, IndexError):
            pass
        finally:
            for sock in (conn, probe):
                try:
                    sock.close()
                except OSError:
                    pass

    def answer(self, conn, probe, conn_id, peer, target, fields):
        """Answers one request; False: close the connection."""
        path, _, query = target.partition("?")
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        agent = fields.get("user-agent", "")
        if path.startswith("/bench/"):
            return self.control(conn, path, q)
        route = _route(path)
        resource = route[0] if route else "other"
        watch = q.get("watch") in ("true", "1")
        kind = "watch" if route and watch else "list" if route else "other"
        key = f"{agent}|{resource}|{kind}"
        self.counters.request(key)

        def send(status, ctype, body, extra=b""):
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: no-cache, private\r\n").encode() + extra + b"\r\n"
            conn.sendall(head + body)
            self.counters.wrote(conn_id, peer, key, len(body), len(head) + len(body))
            return True

        if path in ("/readyz", "/healthz", "/livez"):
            return send("200 OK", "text/plain; charset=utf-8", b"ok")
        if not route:
            return send("404 Not Found", "application/json", _status(404, "NotFound", f"{path} not found"))
        resource, ns = route
        # It speaks JSON only: an Accept without it gets 406, as
        # kube-apiserver answers a media type it cannot serve.
        accept = fields.get("accept", "").lower()
        if accept and not any(t in accept for t in ("application/json", "*/*", "application/*")):
            return send("406 Not Acceptable", "application/json",
                        _status(406, "NotAcceptable", f"only application/json, not {accept}"))
        selector = parse_selector(q.get("labelSelector", ""))
        if not watch:
            body = self.cluster.list_body(resource, ns, selector)
            extra = b""
            if len(body) > GZIP_THRESHOLD and "gzip" in fields.get("accept-encoding", "").lower():
                body = gzip.compress(body, compresslevel=1, mtime=0)
                extra = b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"
            return send("200 OK", "application/json", body, extra)
        return self.watch(conn, probe, conn_id, peer, key, resource, ns, selector, q)

    def watch(self, conn, probe, conn_id, peer, key, resource, ns, selector, q):
        """A watch stream; False: the client went away."""
        cluster = self.cluster
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(q.get("timeoutSeconds") or 1800)
        end = time.monotonic() + (timeout if timeout > 0 else 1800)
        rv_text = q.get("resourceVersion", "")
        spec = RESOURCES[resource]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        conn.sendall(head)
        self.counters.wrote(conn_id, peer, key, 0, len(head))
        self.counters.watch(resource, +1)

        def write(events):
            body = b"".join(events)
            framed = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
            conn.sendall(framed)
            self.counters.wrote(conn_id, peer, key, len(body), len(framed))

        def event(kind, raw):
            return b'{"type":"' + kind.encode() + b'","object":' + raw + b"}\n"

        def visible(o):
            return (not ns or o.namespace == ns) and selects(selector, o.labels)

        try:
            with cluster.cond:
                if rv_text in ("", "0"):
                    initial = [event("ADDED", o.full) for o in cluster.objects[resource].values() if visible(o)]
                    after = cluster.rv
                else:
                    initial, after = [], int(rv_text)
                pos = bisect.bisect_right(cluster.log_rvs, after)
            if after < cluster.first_rv:
                status = _status(410, "Expired", f"too old resource version: {after} ({cluster.first_rv})")
                write([event("ERROR", status)])
            else:
                if initial:
                    write(initial)
                next_bookmark = time.monotonic() + BOOKMARK_S
                while time.monotonic() < end:
                    # The client sends nothing during a watch: anything to
                    # read (its TLS close, its FIN) means it has gone.
                    if select.select([probe], [], [], 0)[0]:
                        return False
                    with cluster.cond:
                        if pos >= len(cluster.log):
                            wait = min(end, next_bookmark, time.monotonic() + 0.2) - time.monotonic()
                            cluster.cond.wait(max(0.0, wait))
                        entries = cluster.log[pos:]
                        pos = len(cluster.log)
                        now_rv = cluster.rv
                    out = []
                    for _, res, kind, obj, prev in entries:
                        if res != resource:
                            continue
                        now, before = visible(obj), prev is not None and visible(prev)
                        if kind == "MODIFIED":
                            if now and before:
                                out.append(event("MODIFIED", obj.full))
                            elif now:
                                out.append(event("ADDED", obj.full))
                            elif before:
                                out.append(event("DELETED", _at(prev, obj.rv)))
                        elif kind == "ADDED" and now:
                            out.append(event("ADDED", obj.full))
                        elif kind == "DELETED" and before:
                            out.append(event("DELETED", obj.full))
                    if bookmarks and time.monotonic() >= next_bookmark:
                        out.append(event("BOOKMARK", _bookmark(spec, now_rv)))
                        next_bookmark = time.monotonic() + BOOKMARK_S
                    if out:
                        write(out)
            conn.sendall(b"0\r\n\r\n")
            self.counters.wrote(conn_id, peer, key, 0, 5)
            return True
        finally:
            self.counters.watch(resource, -1)

    def control(self, conn, path, q):
        if path == "/bench/churn":
            with self.cluster.cond:
                busy = self.cluster.churn["running"]
                if not busy:
                    self.cluster.churn["running"] = True
            if not busy:
                threading.Thread(target=self.cluster.run_churn, daemon=True, args=(
                    float(q.get("slices_per_s", "20")), float(q.get("seconds", "10")),
                    float(q.get("services_per_s", "1")), int(q.get("seed", "1")))).start()
            body = dumps({"started": not busy}).encode()
        elif path == "/bench/stats":
            with self.cluster.cond:
                churn = dict(self.cluster.churn)
                rv = self.cluster.rv
            body = dumps({**self.counters.snapshot(), "churn": churn, "rv": rv}).encode()
        elif path == "/bench/state":
            body = dumps(self.cluster.state()).encode()
        elif path == "/bench/reset":
            self.counters.reset()
            body = b"{}"
        else:
            body = _status(404, "NotFound", path)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        return True


def _at(obj, rv):
    """The object as it was, at another resourceVersion (an object leaving a
    selection is DELETED with its last state at the change's version)."""
    doc = json.loads(obj.full)
    doc["metadata"]["resourceVersion"] = str(rv)
    return dumps(doc).encode()


def _bookmark(spec, rv):
    doc = {"kind": spec["kind"], "apiVersion": spec["apiVersion"],
           "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}
    if spec["kind"] == "EndpointSlice":
        doc.update({"addressType": "", "endpoints": None})
    else:
        doc.update({"spec": {}, "status": {"loadBalancer": {}}})
    return dumps(doc).encode()


def serve(port, cert, key, lifetime, n_services, n_slices):
    server = Server(Cluster(n_services, n_slices), Counters())
    bench_watch.serve_tls(port, cert, key, lifetime, server.serve_conn)


# ---------------------------------------------------------------- client

class Stopped(Exception):
    pass


class _Reader:
    """Buffered reads of one socket, giving up at a deadline or when stopped."""

    def __init__(self, sock, stop, deadline):
        self.sock, self.stop, self.deadline = sock, stop, deadline
        self.buf = bytearray()

    def _more(self):
        while True:
            if self.stop.is_set():
                raise Stopped()
            if time.monotonic() > self.deadline:
                raise TimeoutError("client deadline passed")
            try:
                chunk = self.sock.recv(262144)
            except (socket.timeout, TimeoutError):
                continue
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
            return

    def until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            self._more()

    def some(self):
        """Whatever has arrived (waiting for something)."""
        if not self.buf:
            self._more()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self):
        lines = self.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, fields

    def chunk(self):
        """The next chunk of a chunked body; b"" at its end."""
        size = int(self.until(b"\r\n").split(b";")[0], 16)
        data = self.exactly(size) if size else b""
        self.until(b"\r\n")  # after the data; after the last chunk, the empty trailer
        return data


class Informer(threading.Thread):
    """One informer of one resource: list, then watch; state name -> rv."""

    def __init__(self, port, agent, resource, selector="", tls_ca=None, deadline_s=120.0, watch_seconds=600):
        super().__init__(daemon=True)
        self.port, self.agent, self.resource, self.tls_ca = port, agent, resource, tls_ca
        self.selector_text, self.selector = selector, parse_selector(selector)
        self.deadline = time.monotonic() + deadline_s
        self.watch_seconds = watch_seconds
        self.stop = threading.Event()
        self.watching = threading.Event()
        self.lock = threading.Lock()
        self.state, self.rv = {}, ""
        self.lists = self.watches = self.events = self.bookmarks = self.gone = 0
        self.body_bytes = 0
        self.error = None
        self.sock = None

    def _connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = raw
        if self.tls_ca:
            sock = ssl.create_default_context(cafile=self.tls_ca).wrap_socket(raw, server_hostname="localhost")
        sock.settimeout(0.25)  # short reads, so that stop is seen; the deadline bounds the whole
        self.sock = sock
        return sock, _Reader(sock, self.stop, self.deadline)

    def _request(self, sock, query):
        sel = ("labelSelector=" + urllib.parse.quote(self.selector_text, safe="") + "&") if self.selector_text else ""
        # client-go's order: parameters sorted by name
        path = PATHS[self.resource] + "?" + query.replace("{sel}", sel)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {self.agent}\r\n"
                     "Accept: application/json, */*\r\nAccept-Encoding: gzip\r\n\r\n".encode())

    def _list(self):
        sock, r = self._connect()
        try:
            self._request(sock, "{sel}limit=500&resourceVersion=0")
            status, fields = r.head()
            if "chunked" in fields.get("transfer-encoding", "").lower():
                parts = []
                while True:
                    c = r.chunk()
                    if not c:
                        break
                    parts.append(c)
                body = b"".join(parts)
            else:
                body = r.exactly(int(fields.get("content-length", "0")))
            self.body_bytes += len(body)
            if fields.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if status != 200:
                raise RuntimeError(f"list: status {status}: {body[:200]!r}")
            doc = json.loads(body)
            state = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                     for o in doc.get("items") or []}
            with self.lock:
                self.state, self.rv = state, doc["metadata"]["resourceVersion"]
                self.lists += 1
        finally:
            sock.close()

    def _watch(self):
        """One watch; False: list again (410 Gone)."""
        sock, r = self._connect()
        try:
            self._request(sock, "allowWatchBookmarks=true&{sel}resourceVersion=" + self.rv +
                          f"&timeoutSeconds={self.watch_seconds}&watch=true")
            status, fields = r.head()
            if status != 200:
                raise RuntimeError(f"watch: status {status}")
            self.watches += 1
            self.watching.set()
            pending = b""
            chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            while True:
                try:
                    data = r.chunk() if chunked else r.some()
                except EOFError:
                    if chunked:
                        raise
                    return True
                if chunked and not data:
                    return True
                self.body_bytes += len(data)
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip() and not self._apply(json.loads(line)):
                        return False
        finally:
            sock.close()

    def _apply(self, ev):
        kind, meta = ev["type"], ev["object"].get("metadata") or {}
        if kind == "ERROR":
            if ev["object"].get("code") == 410:
                self.gone += 1
                return False
            raise RuntimeError(f"watch ERROR event: {ev['object']}")
        with self.lock:
            rv = meta.get("resourceVersion", self.rv)
            if kind == "BOOKMARK":
                self.bookmarks += 1
            else:
                key = (meta.get("namespace", ""), meta["name"])
                if kind == "DELETED":
                    self.state.pop(key, None)
                else:
                    self.state[key] = rv
                self.events += 1
            self.rv = rv
        return True

    def run(self):
        try:
            while not self.stop.is_set():
                self._list()
                while not self.stop.is_set() and self._watch():
                    pass
        except Stopped:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the driver
            if not self.stop.is_set():
                self.error = f"{type(e).__name__}: {e}"

    def close(self):
        self.stop.set()
        self.join(timeout=3)

    def snapshot(self):
        with self.lock:
            return dict(self.state)


def expected(state, resource, selector_text):
    """name -> rv an informer with this selector should hold, from /bench/state."""
    sel = parse_selector(selector_text)
    return {(ns, name): rv for ns, name, rv, labels in state[resource] if selects(sel, labels)}


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
    else:
        sys.exit(__doc__)
