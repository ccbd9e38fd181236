#!/usr/bin/env python3
"""Cold start: from process start to the first answers, with every apiserver
unreachable, for a small cache (baseline) and a cache of N objects. The
"apiserver" is a loopback socket that never answers (like a blackholed link:
connections hang instead of being refused), which is the hard case.

  bench_coldstart.py BINARY N_OBJECTS REPS     # prints its own table

bench_main.py imports measure_all() to fold the rows into the full table.
Prints median and spread over repetitions. Loopback only; every wait bounded."""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

DEADLINE = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HELP = {}


def has_flag(binary, flag):
    """Whether the binary's --help lists a flag (newer hubs have more listeners)."""
    if binary not in _HELP:
        _HELP[binary] = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10).stdout
    return flag in _HELP[binary]


def port_flags(binary):
    """A free port for every listener flag the binary has besides --proxy-port
    and --serve-port (e.g. --proxy-secure-port), so that several hubs can run
    at once and none collides with a default port in use."""
    return [x for f in ("--proxy-secure-port",) if has_flag(binary, f) for x in (f, str(free_port()))]


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


def first_answer(binary, silent_url, cache, path):
    """Seconds from spawn to the first 200 on path (proxy port). A hub that
    exits at once (a free port taken meanwhile by another process) is
    started again on other ports, at most twice."""
    for _ in range(3):
        took = first_answer_once(binary, silent_url, cache, path)
        if took is not None:
            return took
    raise SystemExit(f"cold start: the hub exited at start three times (ports taken?)")


def first_answer_once(binary, silent_url, cache, path):
    """As first_answer; None if the hub exited before answering."""
    proxy, serve = free_port(), free_port()
    args = [binary, "--server-addr", silent_url, "--node-name", "edge-1",
            "--proxy-port", str(proxy), "--serve-port", str(serve), "--proxy-secure-port", "0",
            "--disk-cache-path", cache, "--root-dir", cache + ".root",
            "--kubelet-ca-file", "/nonexistent", "--kubelet-client-certificate", "/nonexistent",
            *port_flags(binary)]
    start = time.monotonic()
    hub = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "RUST_LOG": "error"})
    try:
        while time.monotonic() - start < DEADLINE:
            if request(proxy, path) == 200:
                return time.monotonic() - start
            if hub.poll() is not None:
                return None
            time.sleep(0.0005)  # poll interval while waiting for the first answer
        raise SystemExit(f"cold start: no answer on {path} within {DEADLINE}s")
    finally:
        hub.kill()
        hub.wait()


def measure(binary, silent_url, n, path, reps):
    work = tempfile.mkdtemp(prefix="yurthub-bench-")
    try:
        cache = os.path.join(work, "cache")
        fill(cache, n)
        return [first_answer(binary, silent_url, cache, path) for _ in range(reps)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


GET_PATH = "/api/v1/namespaces/default/configmaps/cm1"
PODS_PATH = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1"


def measure_all(binary, n_objects, reps):
    """{"baseline": [s...], "get": [s...], "list": [s...]} for the apiserver silent."""
    # Accepts nothing: TCP connects complete in the backlog, TLS never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1024)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        return {"baseline": measure(binary, url, 0, "/api/v1/namespaces/default/pods/p1", reps),
                "get": measure(binary, url, n_objects, GET_PATH, reps),
                "list": measure(binary, url, n_objects, PODS_PATH, reps)}


def row(name, samples):
    ms = [s * 1000 for s in samples]
    return f"{name:<52} {statistics.median(ms):8.1f} ms  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def main():
    binary, n_objects, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = measure_all(binary, n_objects, reps)
    print(f"cold start, the apiserver silent (blackholed) ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
    print(row("baseline: first offline get, 110 objects cached", r["baseline"]))
    print(row(f"first offline get, {n_objects + 110} objects cached", r["get"]))
    print(row(f"first offline 110-pod list, {n_objects + 110} objects cached", r["list"]))
    print(f"{'ratio get large/baseline':<52} {statistics.median(r['get']) / statistics.median(r['baseline']):8.2f}x")


if __name__ == "__main__":
    main()
