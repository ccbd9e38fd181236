"""Fixtures for the benchmarks (imported by bench_main.py; stdlib only).

- a throw-away PKI made with openssl: CA, server certificate for 127.0.0.1 and
  localhost, a node client certificate+key in one PEM (what the hub presents);
- the JSON an apiserver would return for a ConfigMap and a ConfigMapList of 100;
- a hub cache directory in the documented on-disk layout (README, "On-disk
  layout"), with JSON objects and protobuf objects derived from the captured
  fixtures in tests/fixtures/protobuf/ (names rewritten by re-encoding the
  protobuf, so every length stays consistent).
"""
import json
import os
import subprocess

NODE = "edge-1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PB_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "protobuf")


# ---------------------------------------------------------------- PKI

def make_pki(d):
    """Writes ca.crt, server.crt/.key, client.crt/.key and client.pem (cert+key)."""
    os.makedirs(d, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=bench-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    for name, subj, ext in [
        ("server", "/CN=kube-apiserver",
         "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
         "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", f"/O=system:nodes/CN=system:node:{NODE}",
         "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
         "extendedKeyUsage=clientAuth\n"),
    ]:
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        run("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    with open(os.path.join(d, "client.pem"), "w") as out:
        for part in ("client.crt", "client.key"):
            with open(os.path.join(d, part)) as f:
                out.write(f.read())
    return {k: os.path.join(d, v) for k, v in {
        "ca": "ca.crt", "server_crt": "server.crt", "server_key": "server.key",
        "client_crt": "client.crt", "client_key": "client.key", "client_pem": "client.pem"}.items()}


# ---------------------------------------------------------------- JSON objects

def configmap(name, namespace, rv, size=200):
    """A ConfigMap roughly as kube-apiserver 1.20 returns it (about 0.5 KiB)."""
    return {
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": namespace,
            "selfLink": f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            "uid": f"6b7c401f-375f-4a22-b{rv:011d}", "resourceVersion": str(rv),
            "creationTimestamp": "2021-01-14T09:12:29Z", "labels": {"app": f"a{rv % 10}"},
            "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                               "time": "2021-01-14T09:12:29Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:data": {".": {}, "f:key": {}}}}],
        },
        "data": {"key": "x" * size},
    }


def pod(name, namespace, rv, node=NODE):
    """A Pod shaped like the captured tests/fixtures/protobuf/p1.pb (kubectl
    apply annotation, managedFields, defaulted spec), so that the JSON and
    protobuf pod lists carry the same objects."""
    applied = dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "annotations": {}, "labels": {"app": "web"}, "name": name, "namespace": namespace},
        "spec": {"automountServiceAccountToken": False, "containers": [{"image": "busybox", "name": "c"}],
                 "nodeName": node}})
    fields = {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                             "f:labels": {".": {}, "f:app": {}}},
              "f:spec": {"f:automountServiceAccountToken": {}, "f:containers": {'k:{"name":"c"}': {
                  ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
                  "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
                  "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:nodeName": {}, "f:restartPolicy": {},
                  "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}
    toleration = {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": f"fadf9bfb-c49e-4374-be59-{rv:012d}",
                     "resourceVersion": str(rv), "creationTimestamp": "2021-01-14T09:12:29Z",
                     "labels": {"app": "web"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
                     "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                        "apiVersion": "v1", "time": "2021-01-14T09:12:29Z",
                                        "fieldsType": "FieldsV1", "fieldsV1": fields}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {},
                                 "terminationMessagePath": "/dev/termination-log",
                                 "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "default", "serviceAccount": "default", "nodeName": node,
                 "automountServiceAccountToken": False, "securityContext": {},
                 "schedulerName": "default-scheduler",
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", **toleration},
                                 {"key": "node.kubernetes.io/unreachable", **toleration}],
                 "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority"},
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def upstream_docs(d, n_list=100):
    """Files the upstream nginx serves: cm1.json (one object) and cmlist.json."""
    os.makedirs(d, exist_ok=True)
    items = []
    for i in range(n_list):
        o = configmap(f"cm{i}", "default", 1000 + i)
        items.append({k: v for k, v in o.items() if k not in ("kind", "apiVersion")})
    lst = {"kind": "ConfigMapList", "apiVersion": "v1",
           "metadata": {"selfLink": "/api/v1/namespaces/default/configmaps",
                        "resourceVersion": str(1000 + n_list)}, "items": items}
    with open(os.path.join(d, "cm1.json"), "w") as f:
        f.write(dumps(configmap("cm1", "default", 1001)))
    with open(os.path.join(d, "cmlist.json"), "w") as f:
        f.write(dumps(lst))
    return {"cm1": os.path.getsize(os.path.join(d, "cm1.json")),
            "cmlist": os.path.getsize(os.path.join(d, "cmlist.json"))}


# ---------------------------------------------------------------- protobuf

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(b, i):
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(msg):
    """[(number, wire_type, payload)] where payload is bytes for every wire type
    (length-delimited: the content; others: the raw value bytes)."""
    out, i = [], 0
    while i < len(msg):
        key, i = _read_varint(msg, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            start = i
            _, i = _read_varint(msg, i)
            out.append((num, wt, msg[start:i]))
        elif wt == 1:
            out.append((num, wt, msg[i:i + 8]))
            i += 8
        elif wt == 5:
            out.append((num, wt, msg[i:i + 4]))
            i += 4
        elif wt == 2:
            n, i = _read_varint(msg, i)
            out.append((num, wt, msg[i:i + n]))
            i += n
        else:
            raise ValueError(f"unsupported wire type {wt}")
    return out


def _encode(fields):
    out = bytearray()
    for num, wt, payload in fields:
        out += _varint(num << 3 | wt)
        if wt == 2:
            out += _varint(len(payload))
        out += payload
    return bytes(out)


def _patch(msg, path, value):
    """Replaces the length-delimited field at `path` (field numbers, outermost
    first) with `value` (bytes), re-encoding every enclosing length."""
    fields = _fields(msg)
    for k, (num, wt, payload) in enumerate(fields):
        if num == path[0] and wt == 2:
            new = value if len(path) == 1 else _patch(payload, path[1:], value)
            fields[k] = (num, wt, new)
            return _encode(fields)
    raise ValueError(f"field {path[0]} not found")


def pb_object(template, name, namespace, rv):
    """A protobuf object (k8s envelope) from a captured one, with metadata name (1),
    namespace (3), uid (5) and resourceVersion (6) replaced."""
    assert template[:4] == b"k8s\0"
    msg = template[4:]
    # Unknown.raw (2) -> object.metadata (1) -> ObjectMeta fields.
    msg = _patch(msg, [2, 1, 1], name.encode())
    msg = _patch(msg, [2, 1, 3], namespace.encode())
    msg = _patch(msg, [2, 1, 5], f"00000000-0000-0000-0000-{rv:012d}".encode())
    msg = _patch(msg, [2, 1, 6], str(rv).encode())
    return b"k8s\0" + msg


# ---------------------------------------------------------------- hub cache

def _write(path, data):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, 0o600)


def _lists(path, shapes):
    """_lists.json (src/cache/lists.rs): {"version":1,"shapes":{key: type}} where
    key is the JSON array [namespace, labelSelector, fieldSelector]."""
    doc = {"version": 1, "shapes": {dumps(list(shape)): {"kind": kind, "apiVersion": "v1",
                                                        "encodings": enc}
                                    for shape, (kind, enc) in shapes.items()}}
    _write(path, dumps(doc))


def fill_cache(cache, n_bulk, n_list=100, n_pods=110, component="kubelet"):
    """A cache for `component`:
    configmaps/default/cm0..cm{n_list-1} in JSON and protobuf (listed shape
    namespace=default, both encodings), configmaps/bulk/b0..b{n_bulk-1} JSON only
    (the "10,000 cached objects"), pods/default/p0..p{n_pods-1} on node edge-1 in
    JSON and protobuf (listed shape fieldSelector=spec.nodeName=edge-1)."""
    with open(os.path.join(PB_FIXTURES, "cm1.pb"), "rb") as f:
        cm_pb = f.read()
    with open(os.path.join(PB_FIXTURES, "p1.pb"), "rb") as f:
        pod_pb = f.read()
    base = os.path.join(cache, component)
    cms = os.path.join(base, "configmaps")
    for i in range(n_list):
        _write(os.path.join(cms, "default", f"cm{i}.json"), dumps(configmap(f"cm{i}", "default", 1000 + i)))
        _write(os.path.join(cms, "default", f"cm{i}.pb"), pb_object(cm_pb, f"cm{i}", "default", 1000 + i))
    for i in range(n_bulk):
        _write(os.path.join(cms, "bulk", f"b{i}.json"), dumps(configmap(f"b{i}", "bulk", 100000 + i)))
    _lists(os.path.join(cms, "_lists.json"), {("default", "", ""): ("ConfigMapList", ["json", "pb"])})
    pods = os.path.join(base, "pods")
    for i in range(n_pods):
        _write(os.path.join(pods, "default", f"p{i}.json"), dumps(pod(f"p{i}", "default", 5000 + i)))
        _write(os.path.join(pods, "default", f"p{i}.pb"), pb_object(pod_pb, f"p{i}", "default", 5000 + i))
    _lists(os.path.join(pods, "_lists.json"),
           {("", "", f"spec.nodeName={NODE}"): ("PodList", ["json", "pb"])})
