#!/usr/bin/env python3
"""Cold start: from process start to the first answers, with every apiserver
unreachable, for a small cache (baseline) and a cache of N objects. The
"apiserver" is a loopback socket that never answers (like a blackholed link:
connections hang instead of being refused), which is the hard case.

Prints median and spread over repetitions. Loopback only; every wait bounded."""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

binary, n_objects, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
DEADLINE = 10.0
# Accepts nothing: TCP connects complete in the backlog, TLS never answers.
SILENT = socket.socket()
SILENT.bind(("127.0.0.1", 0))
SILENT.listen(1024)
SILENT_URL = f"https://127.0.0.1:{SILENT.getsockname()[1]}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(cache, n):
    """n ConfigMaps and 110 pods for component kubelet, as the hub stores them."""
    cms = os.path.join(cache, "kubelet", "configmaps", "default")
    pods = os.path.join(cache, "kubelet", "pods", "default")
    os.makedirs(cms, mode=0o700)
    os.makedirs(pods, mode=0o700)
    for i in range(n):
        obj = {"kind": "ConfigMap", "apiVersion": "v1",
               "metadata": {"name": f"cm{i}", "namespace": "default", "resourceVersion": str(i + 1),
                            "uid": f"u{i}", "labels": {"app": f"a{i % 10}"}},
               "data": {"key": "x" * 200}}
        with open(os.path.join(cms, f"cm{i}.json"), "w") as f:
            json.dump(obj, f)
    for i in range(110):
        obj = {"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": f"p{i}", "namespace": "default", "resourceVersion": str(i + 1), "uid": f"p{i}"},
               "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}]}}
        with open(os.path.join(pods, f"p{i}.json"), "w") as f:
            json.dump(obj, f)
    shape = json.dumps(["", "", "spec.nodeName=edge-1"], separators=(",", ":"))
    with open(os.path.join(cache, "kubelet", "pods", "_lists.json"), "w") as f:
        json.dump({"version": 1, "shapes": {shape: {"kind": "PodList", "apiVersion": "v1"}}}, f)


def request(port, path):
    """One GET over a fresh connection; returns the status code, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: kubelet/v1.20.2\r\n"
                      f"Accept: application/json\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def first_answer(cache, path):
    """Seconds from spawn to the first 200 on path (proxy port)."""
    proxy, serve = free_port(), free_port()
    args = [binary, "--server-addr", SILENT_URL, "--node-name", "edge-1",
            "--proxy-port", str(proxy), "--serve-port", str(serve),
            "--disk-cache-path", cache, "--root-dir", cache + ".root",
            "--kubelet-ca-file", "/nonexistent", "--kubelet-client-certificate", "/nonexistent"]
    start = time.monotonic()
    hub = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "RUST_LOG": "error"})
    try:
        while time.monotonic() - start < DEADLINE:
            if request(proxy, path) == 200:
                return time.monotonic() - start
            time.sleep(0.0005)
        raise SystemExit(f"no answer on {path} within {DEADLINE}s")
    finally:
        hub.kill()
        hub.wait()


def measure(n, path):
    work = tempfile.mkdtemp(prefix="yurthub-bench-")
    try:
        cache = os.path.join(work, "cache")
        fill(cache, n)
        return [first_answer(cache, path) for _ in range(reps)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def row(name, samples):
    ms = [s * 1000 for s in samples]
    return f"{name:<52} {statistics.median(ms):8.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


get_path = "/api/v1/namespaces/default/configmaps/cm1"
pods_path = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1"
baseline = measure(0, "/api/v1/namespaces/default/pods/p1")
get_big = measure(n_objects, get_path)
list_big = measure(n_objects, pods_path)
print(f"cold start, the apiserver silent (blackholed) ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
print(row("baseline: first offline get, 110 objects cached", baseline))
print(row(f"first offline get, {n_objects + 110} objects cached", get_big))
print(row(f"first offline 110-pod list, {n_objects + 110} objects cached", list_big))
print(f"{'ratio get large/baseline':<52} {statistics.median(get_big) / statistics.median(baseline):8.2f}x")
