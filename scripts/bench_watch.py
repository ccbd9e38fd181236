#!/usr/bin/env python3
"""Watch relay latency: an upstream that streams watch events with the time each
was written, and a client that records when it read each one.

  bench_watch.py serve PORT CERT KEY EVENTS INTERVAL_MS LIFETIME_S

serves, over TLS on 127.0.0.1:PORT:
  GET /readyz                          200 "ok" (the hub's health probe)
  GET ...?watch=true (any path)        200, chunked application/json: EVENTS
                                       MODIFIED ConfigMap events, one every
                                       INTERVAL_MS, each carrying the
                                       time.perf_counter_ns() read just before
                                       its write, then the terminating chunk
  anything else                        404
and exits by itself after LIFETIME_S. Every client socket has a deadline.

The client (watch_latencies) speaks HTTP/1.1 over a raw socket (TLS when asked),
decodes the chunked body and returns read-time minus write-time per event.
perf_counter_ns is CLOCK_MONOTONIC on Linux: one clock for both processes.
Stdlib only."""
import json
import socket
import ssl
import sys
import threading
import time

SOCKET_TIMEOUT = 30.0


# ---------------------------------------------------------------- server

def _event(i, ts):
    obj = {"kind": "ConfigMap", "apiVersion": "v1",
           "metadata": {"name": "cm1", "namespace": "default", "resourceVersion": str(100000 + i),
                        "uid": "6b7c401f-375f-4a22-ba8f-283462de07d0",
                        "annotations": {"bench/written-ns": str(ts), "bench/seq": str(i)}},
           "data": {"key": "x" * 200}}
    return (json.dumps({"type": "MODIFIED", "object": obj}, separators=(",", ":")) + "\n").encode()


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > 65536:
            return None, b""
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def _serve_conn(raw, ctx, events, interval):
    raw.settimeout(SOCKET_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        raw.close()
        return
    buf = b""
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            target = head.split("\r\n", 1)[0].split(" ")[1]
            path, _, query = target.partition("?")
            # Skip a request body (e.g. the hub's POST of a CSR) so that the
            # next request on this keep-alive connection is parsed right.
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (line.partition(":") for line in head.split("\r\n")[1:])}
            if "chunked" in fields.get("transfer-encoding", "").lower():
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            length = int(fields.get("content-length", "0") or 0)
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            if path == "/readyz":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                continue
            if "watch=true" in query.split("&") or "watch=1" in query.split("&"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                next_at = time.monotonic() + interval
                for i in range(events):
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # event pacing, not synchronisation
                    next_at += interval
                    body = _event(i, time.perf_counter_ns())
                    conn.sendall(b"%x\r\n%s\r\n" % (len(body), body))
                conn.sendall(b"0\r\n\r\n")
                continue
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def serve_tls(port, cert, key, lifetime, serve_conn):
    """Accepts TLS connections on 127.0.0.1:port for `lifetime` seconds,
    each served by serve_conn(raw_socket, ssl_context) on its own thread
    (shared with bench_shared.py)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(256)
    ls.settimeout(0.5)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            raw, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve_conn, args=(raw, ctx), daemon=True).start()


def serve(port, cert, key, events, interval_ms, lifetime):
    serve_tls(port, cert, key, lifetime,
              lambda raw, ctx: _serve_conn(raw, ctx, events, interval_ms / 1000.0))


# ---------------------------------------------------------------- client

def watch_latencies(port, path, user_agent, tls_ca=None, deadline_s=60.0, accept="application/json"):
    """Opens one watch, reads until the stream ends; returns the per-event
    latencies in microseconds (read time - write time), and the status line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = raw
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        conn = ctx.wrap_socket(raw, server_hostname="localhost")
    end = time.monotonic() + deadline_s
    try:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n"
                     f"Accept: {accept}\r\nConnection: close\r\n\r\n".encode())
        head, buf = read_head(conn, b"")
        if head is None:
            raise RuntimeError("watch: no response head")
        status = head.split("\r\n", 1)[0]
        if " 200 " not in status + " ":
            raise RuntimeError(f"watch: {status}")
        chunked = "transfer-encoding: chunked" in head.lower()
        out, body = [], b""

        def more():
            nonlocal buf
            if time.monotonic() > end:
                raise RuntimeError("watch: deadline passed")
            chunk = conn.recv(65536)
            if not chunk:
                return False
            buf += chunk
            return True

        def take_lines(now):
            nonlocal body
            while b"\n" in body:
                line, body = body.split(b"\n", 1)
                if line.strip():
                    ev = json.loads(line)
                    written = int(ev["object"]["metadata"]["annotations"]["bench/written-ns"])
                    out.append((now - written) / 1000.0)

        while True:
            if chunked:
                while b"\r\n" not in buf:
                    if not more():
                        return out, status
                size_line, rest = buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    buf = rest
                    if not more():
                        return out, status
                    rest = buf
                if size == 0:
                    return out, status
                body += rest[:size]
                buf = rest[size + 2:]
                take_lines(time.perf_counter_ns())
            else:
                if buf:
                    body += buf
                    buf = b""
                    take_lines(time.perf_counter_ns())
                if not more():
                    return out, status
    finally:
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]),
              float(sys.argv[7]))
    else:
        sys.exit(__doc__)
