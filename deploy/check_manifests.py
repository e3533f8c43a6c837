#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes/*.yaml and deploy/compose.yaml (run by
deploy/check-manifests.sh, in its virtualenv).

1. Every Kubernetes manifest against the Kubernetes JSON schemas in strict mode
   (kubernetes-validate, offline), for the oldest Kubernetes the manifests support and the
   newest the pinned kubernetes-validate bundles.
2. What the README and the manifests' comments promise: the probes and Prometheus use the
   admin listener of the varco.toml in the ConfigMap, the Service exposes varco's TLS port
   only, the application binds loopback, sessions are in Redis, graceful shutdown fits the
   grace period, hardening, NetworkPolicies...
3. deploy/compose.yaml and deploy/compose/varco.toml, structurally.

One line per check, then `N passed, M failed`; exit status 1 when anything failed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
# 1.30: the oldest with the kubelet's preStop `sleep` action (deployment.yaml); 1.37: the
# newest schemas of the pinned kubernetes-validate (removed APIs show up here).
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
NOT_RESOURCES = {"kustomization.yaml"}

passed = 0
failed = 0


class Problem(Exception):
    pass


def need(cond, message):
    if not cond:
        raise Problem(message)


def run(desc, fn):
    global passed, failed
    try:
        fn()
    except Problem as e:
        failed += 1
        print(f"FAIL {desc}: {e}")
    except Exception as e:  # a check that crashes is a failed check, not a crashed run
        failed += 1
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"FAIL {desc}: {type(e).__name__}: {e} (line {where.lineno})")
    else:
        passed += 1
        print(f"ok   {desc}")


# ---------------------------------------------------------------------------------------
# Helpers


def duration_seconds(text: str) -> float:
    """humantime-style durations as varco writes them: "25s", "500ms", "5m", "1h 30m"."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*([a-z]+)", text)
    need(parts and "".join(n + u for n, u in parts) == re.sub(r"\s", "", text),
         f"cannot read duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def flatten_keys(table, prefix=""):
    """Every key path of a TOML document; array-of-tables indices left out."""
    out = set()
    for k, v in table.items():
        path = f"{prefix}{k}"
        out.add(path)
        if isinstance(v, dict):
            out |= flatten_keys(v, path + ".")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                out |= flatten_keys(x, path + ".")
    return out


def normalize_key(path: str) -> str:
    # Upstream names are the operator's: upstream.<name>.url.
    parts = path.split(".")
    if parts[0] == "upstream" and len(parts) > 1:
        parts[1] = "*"
    return ".".join(parts)


def documented_keys() -> set[str]:
    """Key paths shown in config/*.toml (commented-out keys included) and in README.md's
    toml blocks: the config loader rejects anything else."""
    keys = set()
    header = re.compile(r"^\s*#?\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*#?\s*([A-Za-z0-9_]+)\s*=")

    def scan(lines):
        table = ""
        for line in lines:
            if m := header.match(line):
                table = m.group(1)
                parts = table.split(".")
                keys.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif m := assign.match(line):
                keys.add(f"{table}.{m.group(1)}" if table else m.group(1))

    for f in sorted((ROOT / "config").glob("*.toml")):
        scan(f.read_text().splitlines())
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```toml\n(.*?)```", readme, re.S):
        scan(block.splitlines())
    return {normalize_key(k) for k in keys}


def undocumented(cfg: dict) -> list[str]:
    known = documented_keys()
    return sorted(k for k in flatten_keys(cfg) if normalize_key(k) not in known)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def preStop_sleep(container) -> float:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    cmd = (pre.get("exec") or {}).get("command") or []
    if cmd and cmd[0].endswith("sleep"):
        return float(cmd[1])
    return 0.0


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------
# Loading (problems here surface as failed checks below)

manifest_files = sorted(
    p for p in list(K8S.glob("*.yaml")) + list(K8S.glob("*.yml")) if p.name not in NOT_RESOURCES
)
docs: list[tuple[Path, dict]] = []
load_errors: list[str] = []
for f in manifest_files:
    try:
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                docs.append((f, d))
    except yaml.YAMLError as e:
        load_errors.append(f"{f.name}: {e}")


def objects(kind):
    return [d for _, d in docs if d.get("kind") == kind]


def workloads():
    return [d for _, d in docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")]


def pod_spec(w):
    return w["spec"]["template"]["spec"]


def gateway():
    """The Deployment with the varco container."""
    found = [w for w in objects("Deployment")
             if any(c["name"] == "varco" for c in pod_spec(w)["containers"])]
    need(len(found) == 1, f"expected one Deployment with a `varco` container, found {len(found)}")
    return found[0]


def container(w, name):
    found = [c for c in pod_spec(w)["containers"] if c["name"] == name]
    need(found, f"{w['metadata']['name']} has no container `{name}`")
    return found[0]


def varco_c():
    return container(gateway(), "varco")


def app_containers():
    return [c for c in pod_spec(gateway())["containers"] if c["name"] != "varco"]


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels") or {}


def container_port(c, port) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise Problem(f"container `{c['name']}` has no port named {port!r}")


def varco_args():
    c = varco_c()
    return (c.get("command") or []) + (c.get("args") or [])


def config_map_for(c, w, path):
    """(volume, key, mount) of the file `path` seen by container `c`."""
    mounts = sorted(c.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"]))
    for m in mounts:
        base = m["mountPath"].rstrip("/") + "/"
        if path.startswith(base):
            rest = path[len(base):]
            vol = next(v for v in pod_spec(w)["volumes"] if v["name"] == m["name"])
            return vol, rest, m
    raise Problem(f"`{path}` is on no volume mounted in container `{c['name']}`")


def varco_toml():
    cm_name = None
    args = varco_args()
    need("--config" in args, "varco is not started with --config")
    path = args[args.index("--config") + 1]
    vol, key, _ = config_map_for(varco_c(), gateway(), path)
    need("configMap" in vol, f"--config {path} is not on a ConfigMap volume")
    cm_name = vol["configMap"]["name"]
    cms = [cm for cm in objects("ConfigMap") if cm["metadata"]["name"] == cm_name]
    need(cms, f"ConfigMap {cm_name} is not among the manifests")
    need(key in (cms[0].get("data") or {}), f"ConfigMap {cm_name} has no key {key}")
    return tomllib.loads(cms[0]["data"][key])


def admin_port() -> int:
    addr = varco_toml()["server"].get("admin_address")
    need(addr, "varco.toml sets no server.admin_address")
    return host_port(addr)[1]


def tls_listener_port() -> int:
    tls = [lst for lst in varco_toml()["server"]["listener"] if "tls" in lst]
    need(len(tls) == 1, f"expected one TLS listener in varco.toml, found {len(tls)}")
    return host_port(tls[0]["address"])[1]


def app_port() -> int:
    ups = varco_toml().get("upstream") or {}
    need(ups, "varco.toml has no upstream")
    ports = set()
    for name, u in ups.items():
        url = urlsplit(u["url"])
        need(url.hostname == "127.0.0.1",
             f"upstream.{name}.url {u['url']} is not on the pod's loopback")
        ports.add(url.port or (443 if url.scheme == "https" else 80))
    need(len(ports) == 1, f"upstreams on several ports {sorted(ports)}")
    return ports.pop()


def redis_url():
    s = varco_toml().get("session") or {}
    need(s.get("store") == "redis", f"session.store is {s.get('store', 'memory')!r}, not \"redis\"")
    return urlsplit(s["redis"]["url"])


def redis_workload():
    host = redis_url().hostname
    svcs = [s for s in objects("Service") if s["metadata"]["name"] == host]
    need(svcs, f"no Service named {host} (the Redis URL's host)")
    found = [w for w in workloads() if matches(svcs[0]["spec"]["selector"], pod_labels(w))]
    need(len(found) == 1, f"Service {host} selects {len(found)} workloads")
    return svcs[0], found[0]


# ---------------------------------------------------------------------------------------
# 1. Schemas


def validate_schemas():
    """Runs kubernetes-validate once per version; returns {file name: [problems]}."""
    problems = {f.name: [] for f in manifest_files}
    passes = {f.name: 0 for f in manifest_files}
    exe = Path(sys.executable).parent / "kubernetes-validate"
    for version in KUBERNETES_VERSIONS:
        out = subprocess.run(
            [str(exe), "--strict", "-k", version, *map(str, manifest_files)],
            capture_output=True, text=True, cwd=K8S,
        )
        for line in (out.stdout + out.stderr).splitlines():
            m = re.match(r"(INFO|WARN|ERROR) (\S+) (.*)", line)
            name = Path(m.group(2)).name if m else None
            if m and name in problems:
                if m.group(1) == "INFO" and "passed" in m.group(3):
                    passes[name] += 1
                else:
                    problems[name].append(f"{version}: {m.group(1)} {m.group(3)}")
            elif line.strip():
                for p in problems.values():
                    p.append(f"{version}: {line.strip()}")
    counts = {f.name: sum(1 for g, _ in docs if g == f) for f in manifest_files}
    for name, n in counts.items():
        want = n * len(KUBERNETES_VERSIONS)
        if not problems[name] and passes[name] != want:
            problems[name].append(f"{passes[name]} of {want} resource validations passed")
    return problems


try:
    schema_problems = validate_schemas() if manifest_files else {}
except OSError as e:  # kubernetes-validate missing: every file fails, the run goes on
    schema_problems = {f.name: [f"cannot run kubernetes-validate: {e}"] for f in manifest_files}


def schema_check(name):
    def fn():
        need(not schema_problems[name], "; ".join(schema_problems[name])[:2000])
    return fn


def check_loaded():
    need(manifest_files, f"no manifests in {K8S}")
    need(not load_errors, "; ".join(load_errors))


def check_kustomization():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = k.get("resources") or []
    present = sorted(f.name for f in manifest_files)
    need(sorted(listed) == present,
         f"resources {sorted(listed)} differ from the manifests present {present}")


def check_no_secrets():
    secrets = [d["metadata"]["name"] for d in objects("Secret")]
    need(not secrets, f"Secret manifests {secrets} committed (create them with kubectl)")


# ---------------------------------------------------------------------------------------
# 2. What the README and the comments promise


def check_config_parses():
    cfg = varco_toml()
    need(cfg.get("mode", "serve") == "serve", "the ConfigMap's varco.toml is not mode = \"serve\"")
    need("serve" in varco_args(), "varco is not started with `serve`")


def varco_accepts(text: str, name: str):
    """`varco check-config` (the binary make test built, or VARCO_BIN) on `text`: the only
    problems allowed are files that exist in the pod or container, not here."""
    import os, subprocess, tempfile
    binary = os.environ.get("VARCO_BIN", "target/debug/varco")
    need(os.path.exists(binary), f"{binary} not built (make test builds it; or set VARCO_BIN)")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run([binary, "check-config", "--config", f.name],
                             capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(f.name)
    problems = [l.strip() for l in (out.stdout + out.stderr).splitlines() if l.strip().startswith("- ")]
    other = [p for p in problems if "does not exist" not in p]
    need(out.returncode == 0 or (problems and not other),
         f"{name}: varco check-config: {other or (out.stdout + out.stderr).strip()}")


def check_config_loader():
    import yaml as _yaml
    for doc in _yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")):
        if doc and doc.get("kind") == "ConfigMap":
            varco_accepts(doc["data"]["varco.toml"], "configmap.yaml")
    varco_accepts(open("deploy/compose/varco.toml").read(), "compose/varco.toml")


def check_config_keys():
    bad = undocumented(varco_toml())
    need(not bad, f"keys not in config/*.toml nor README.md: {bad}")


def check_redis_store():
    url = redis_url()
    svc, _ = redis_workload()
    ports = [p["port"] for p in svc["spec"]["ports"]]
    need((url.port or 6379) in ports, f"Redis URL port {url.port} not among Service ports {ports}")


def check_redis_password():
    path = varco_toml()["session"]["redis"].get("password_file")
    need(path, "session.redis.password_file is not set")
    vol, key, _ = config_map_for(varco_c(), gateway(), path)
    need("secret" in vol, f"{path} is not on a Secret volume")
    secret = vol["secret"]["secretName"]
    items = {i["path"]: i["key"] for i in vol["secret"].get("items") or []}
    secret_key = items.get(key, key)
    _, redis = redis_workload()
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for c in pod_spec(redis)["containers"] for e in c.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    ]
    need({"name": secret, "key": secret_key} in [{"name": r["name"], "key": r["key"]} for r in refs],
         f"Redis does not take its password from Secret {secret} key {secret_key}")
    args = " ".join(c_arg for c in pod_spec(redis)["containers"]
                    for c_arg in (c.get("command") or []) + (c.get("args") or []))
    need("--requirepass" in args, "Redis is not started with --requirepass")


def config_files(cfg):
    files = []
    for i, lst in enumerate(cfg["server"].get("listener") or []):
        for k in ("cert", "key", "client_ca"):
            if k in (lst.get("tls") or {}):
                files.append((f"server.listener[{i}].tls.{k}", lst["tls"][k]))
    for i, key in enumerate((cfg.get("assertion") or {}).get("key") or []):
        files.append((f"assertion.key[{i}].private_key", key["private_key"]))
    redis = (cfg.get("session") or {}).get("redis") or {}
    for k in ("password_file", "ca"):
        if k in redis:
            files.append((f"session.redis.{k}", redis[k]))
    return files


def check_files_mounted():
    """Every file varco.toml names is one key of a read-only Secret or ConfigMap volume."""
    files = config_files(varco_toml())
    need(len(files) >= 4, f"only {len(files)} files named in varco.toml")
    for key, path in files:
        vol, rest, mount = config_map_for(varco_c(), gateway(), path)
        need("secret" in vol or "configMap" in vol, f"{key} = {path}: not a Secret/ConfigMap volume")
        need(mount.get("readOnly") is True, f"{key} = {path}: volume {vol['name']} not read-only")
        need("/" not in rest and rest, f"{key} = {path}: not a file directly in {mount['mountPath']}")
        src = vol.get("secret") or vol.get("configMap")
        items = [i["path"] for i in src.get("items") or []]
        need(not items or rest in items, f"{key} = {path}: {rest} not among the volume's items")


def check_active_kid():
    a = varco_toml()["assertion"]
    kids = [k["kid"] for k in a.get("key") or []]
    need(a.get("active_kid") in kids, f"active_kid {a.get('active_kid')!r} not in {kids}")


def check_probes():
    c = varco_c()
    port = admin_port()
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet")
        need(get, f"varco has no httpGet {probe}")
        need(get.get("path") == path, f"{probe} path {get.get('path')} is not the admin listener's {path}")
        need(container_port(c, get["port"]) == port, f"{probe} port is not admin_address's {port}")
        need(get.get("scheme", "HTTP") == "HTTP", f"{probe} scheme is not HTTP (the admin listener has no TLS)")


def check_prometheus():
    ann = gateway()["spec"]["template"]["metadata"].get("annotations") or {}
    need(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape")
    need(ann.get("prometheus.io/port") == str(admin_port()), "prometheus.io/port is not the admin port")
    need(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")
    need(ann.get("prometheus.io/scheme", "http") == "http", "prometheus.io/scheme is not http")
    ports = [p["containerPort"] for p in varco_c().get("ports") or []]
    need(admin_port() in ports, "the admin port is not a container port of varco")


def check_listener_port():
    ports = [p["containerPort"] for p in varco_c().get("ports") or []]
    need(tls_listener_port() in ports, f"TLS listener port {tls_listener_port()} not in varco's ports {ports}")


def check_service():
    labels = pod_labels(gateway())
    svcs = [s for s in objects("Service") if matches(s["spec"].get("selector") or {}, labels)]
    need(svcs, "no Service selects the gateway pods")
    for s in svcs:
        for p in s["spec"]["ports"]:
            target = container_port(varco_c(), p.get("targetPort", p["port"]))
            need(target == tls_listener_port(),
                 f"Service {s['metadata']['name']} exposes {target}, not only varco's {tls_listener_port()}")
        need(s["spec"].get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer", "NodePort"), "odd type")


def check_app_loopback():
    port = app_port()
    apps = app_containers()
    need(apps, "no application container beside varco")
    for c in apps:
        words = [str(e.get("value", "")) for e in c.get("env") or []] + \
            [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        need(any(f"127.0.0.1:{port}" in w for w in words),
             f"container {c['name']} is not told to bind 127.0.0.1:{port}")
        need(not any("0.0.0.0" in w for w in words), f"container {c['name']} mentions 0.0.0.0")
        need(not c.get("ports"), f"container {c['name']} declares ports {c.get('ports')}")
    every = [p["containerPort"] for c in pod_spec(gateway())["containers"] for p in c.get("ports") or []]
    need(port not in every, f"the application's port {port} is a container port")


def check_replicas():
    spec = gateway()["spec"]
    need(spec.get("replicas", 1) >= 2, f"replicas {spec.get('replicas', 1)} < 2")
    st = spec.get("strategy") or {}
    need(st.get("type", "RollingUpdate") == "RollingUpdate", "strategy is not RollingUpdate")
    need((st.get("rollingUpdate") or {}).get("maxUnavailable") == 0, "maxUnavailable is not 0")


def check_shutdown():
    grace = pod_spec(gateway()).get("terminationGracePeriodSeconds", 30)
    drain = duration_seconds(varco_toml()["server"].get("drain_timeout", "30s"))
    pre = preStop_sleep(varco_c())
    need(grace > pre + drain,
         f"terminationGracePeriodSeconds {grace} <= varco's preStop {pre} + drain_timeout {drain}")
    for c in app_containers():
        app_pre = preStop_sleep(c)
        need(app_pre >= pre + drain,
             f"{c['name']} preStop {app_pre}s < varco's preStop + drain_timeout ({pre + drain}s): "
             "it would stop under in-flight requests")
        need(grace > app_pre, f"terminationGracePeriodSeconds {grace} <= {c['name']} preStop {app_pre}")


def check_security_contexts():
    for w in workloads():
        spec = pod_spec(w)
        pod = spec.get("securityContext") or {}
        name = w["metadata"]["name"]
        need(spec.get("automountServiceAccountToken") is False, f"{name}: service account token mounted")
        for c in spec["containers"] + (spec.get("initContainers") or []):
            sc = c.get("securityContext") or {}
            where = f"{name}/{c['name']}"
            need(sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot")
            uid = sc.get("runAsUser", pod.get("runAsUser"))
            need(isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid}")
            need(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            need(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
            need("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: drop ALL")
            need(not (sc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities")
            sec = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
            need(sec == "RuntimeDefault", f"{where}: seccompProfile {sec}")
            need(not sc.get("privileged"), f"{where}: privileged")
    vc = varco_c().get("securityContext") or {}
    uid = vc.get("runAsUser", (pod_spec(gateway()).get("securityContext") or {}).get("runAsUser"))
    need(uid == 10001, f"varco runs as {uid}, not the image's 10001")


def check_resources():
    for w in workloads():
        for c in pod_spec(w)["containers"]:
            r = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    need(res in (r.get(kind) or {}), f"{w['metadata']['name']}/{c['name']}: no {kind}.{res}")


def check_read_only_mounts():
    for w in workloads():
        vols = {v["name"]: v for v in pod_spec(w).get("volumes") or []}
        for c in pod_spec(w)["containers"]:
            for m in c.get("volumeMounts") or []:
                v = vols.get(m["name"], {})
                if "secret" in v or "configMap" in v:
                    need(m.get("readOnly") is True,
                         f"{w['metadata']['name']}/{c['name']}: {m['name']} mounted writable")


def check_images():
    for w in workloads():
        for c in pod_spec(w)["containers"]:
            img = c["image"]
            need(":" in img.rsplit("/", 1)[-1] or "@" in img, f"{img}: no tag")
            need(not img.endswith(":latest"), f"{img}: :latest")


def check_pdb():
    labels = pod_labels(gateway())
    pdbs = [p for p in objects("PodDisruptionBudget") if matches(p["spec"]["selector"]["matchLabels"], labels)]
    need(len(pdbs) == 1, f"{len(pdbs)} PodDisruptionBudgets select the gateway pods")
    need(pdbs[0]["spec"].get("minAvailable") == 1, "minAvailable is not 1")
    need(gateway()["spec"]["replicas"] > 1, "minAvailable 1 with one replica blocks every drain")


def check_anti_affinity():
    aa = (pod_spec(gateway()).get("affinity") or {}).get("podAntiAffinity") or {}
    terms = aa.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    need(any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
             and matches(t["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels(gateway()))
             for t in terms), "no preferred anti-affinity across nodes for the gateway pods")


def policy_for(labels):
    found = [n for n in objects("NetworkPolicy") if matches(n["spec"]["podSelector"].get("matchLabels") or {}, labels)]
    need(len(found) == 1, f"{len(found)} NetworkPolicies select pods labelled {labels}")
    return found[0]


def check_gateway_ingress():
    np = policy_for(pod_labels(gateway()))["spec"]
    need("Ingress" in np.get("policyTypes", []), "no Ingress policy type")
    listener, admin = tls_listener_port(), admin_port()
    seen = set()
    for rule in np.get("ingress") or []:
        ports = [p.get("port") for p in rule.get("ports") or []]
        need(ports, "an ingress rule without ports opens every port")
        for p in ports:
            need(p in (listener, admin, "https", "admin"), f"ingress admits port {p}")
            seen.add(p)
            if p in (admin, "admin"):
                need(rule.get("from") and all("namespaceSelector" in f for f in rule["from"]),
                     "the admin port is open beyond a namespace selector")
    need(seen & {listener, "https"}, f"varco's {listener} is not admitted")
    need(app_port() not in seen, "the application's port is admitted")


def check_gateway_egress():
    np = policy_for(pod_labels(gateway()))["spec"]
    need("Egress" in np.get("policyTypes", []), "no Egress policy type")
    rules = np.get("egress") or []
    _, redis = redis_workload()
    rport = redis_url().port or 6379

    def allows(port, proto="TCP", to=None):
        for r in rules:
            if any(p.get("port") == port and p.get("protocol", "TCP") == proto for p in r.get("ports") or []):
                if to is None or any(matches((t.get("podSelector") or {}).get("matchLabels") or {}, to)
                                     for t in r.get("to") or []):
                    return True
        return False

    need(allows(rport, to=pod_labels(redis)), f"no egress to the Redis pods on {rport}")
    need(allows(53, "UDP") and allows(53, "TCP"), "no DNS egress (53 UDP and TCP)")
    need(allows(443), "no HTTPS egress (identity providers)")


def check_redis_policy():
    _, redis = redis_workload()
    np = policy_for(pod_labels(redis))["spec"]
    need(set(np.get("policyTypes", [])) == {"Ingress", "Egress"}, "policyTypes is not Ingress + Egress")
    need(not np.get("egress"), "Redis may open connections")
    rules = np.get("ingress") or []
    need(rules, "no ingress rule: nothing reaches Redis")
    for r in rules:
        need(r.get("from") and all(set(f) == {"podSelector"} and
                                   matches(f["podSelector"]["matchLabels"], pod_labels(gateway()))
                                   for f in r["from"]), "Redis admits more than the varco pods")
        need([p.get("port") for p in r.get("ports") or []] in ([6379], ["redis"]), "Redis admits other ports")


# ---------------------------------------------------------------------------------------
# 3. Compose

compose_cache = {}


def compose():
    if "c" not in compose_cache:
        compose_cache["c"] = yaml.safe_load(COMPOSE.read_text())
    return compose_cache["c"]


def svc(name):
    s = (compose().get("services") or {}).get(name)
    need(s, f"no service {name}")
    return s


def compose_varco_toml():
    vols = svc("varco").get("volumes") or []
    srcs = [v.split(":")[0] for v in vols if isinstance(v, str) and ":/etc/varco/varco.toml" in v]
    need(srcs, "varco mounts no /etc/varco/varco.toml")
    return tomllib.loads((COMPOSE.parent / srcs[0]).read_text())


def words(cmd):
    return cmd.split() if isinstance(cmd, str) else [str(x) for x in cmd or []]


def check_compose_services():
    services = compose().get("services") or {}
    need({"varco", "redis", "backend"} <= set(services), f"services {sorted(services)}")
    dep = svc("varco").get("depends_on") or {}
    need("redis" in dep, "varco does not depend on redis")
    if isinstance(dep, dict):
        need(dep["redis"].get("condition") == "service_healthy", "varco does not wait for a healthy redis")
        need("healthcheck" in svc("redis"), "redis has no healthcheck")


def check_compose_ports():
    for name in ("redis", "backend"):
        need(not svc(name).get("ports"), f"{name} publishes ports to the host")
    for p in svc("varco").get("ports") or []:
        need(str(p).startswith("127.0.0.1:"), f"varco publishes {p} beyond the host's loopback")
    nets = compose().get("networks") or {}
    for name in ("redis", "backend"):
        for n in svc(name).get("networks") or ["default"]:
            need((nets.get(n) or {}).get("internal") is True, f"{name} is on non-internal network {n}")


def check_compose_images():
    for name in ("varco", "backend"):
        need(svc(name).get("image") == "varco:local", f"{name} is not the varco:local image")
        need(svc(name).get("read_only") is True, f"{name} has a writable root filesystem")
        need(str(svc(name).get("user", "")).startswith("10001"), f"{name} does not run as 10001")
    need(words(svc("backend").get("command"))[:1] == ["echo"], "backend is not `varco echo`")


def check_compose_config():
    cfg = compose_varco_toml()
    bad = undocumented(cfg)
    need(not bad, f"keys not in config/*.toml nor README.md: {bad}")
    cmd = words(svc("varco").get("command"))
    need(cmd and cmd[0] in ("demo", "serve"), f"varco command {cmd}")
    need(cfg.get("mode", "serve") == cmd[0], f"`varco {cmd[0]}` with mode = {cfg.get('mode', 'serve')!r}")
    need("--config" in cmd and cmd[cmd.index("--config") + 1] == "/etc/varco/varco.toml",
         "varco is not given /etc/varco/varco.toml")
    if cmd[0] == "demo":
        certs = cmd[cmd.index("--certs-dir") + 1] if "--certs-dir" in cmd else "certs/dev"
        tls = [lst["tls"] for lst in cfg["server"]["listener"] if "tls" in lst]
        need(tls and tls[0]["cert"].startswith(certs + "/"), "the TLS listener does not use --certs-dir")
        need(any(str(v).split(":")[1] == certs for v in svc("varco").get("volumes") or []
                 if ":" in str(v)), f"{certs} is not a volume (the root filesystem is read-only)")
    else:
        need(cfg["assertion"].get("key"), "serve mode without [[assertion.key]]")


def check_compose_redis():
    cfg = compose_varco_toml()
    s = cfg.get("session") or {}
    need(s.get("store") == "redis", "session.store is not redis")
    url = urlsplit(s["redis"]["url"])
    need(url.hostname == "redis", f"Redis URL host {url.hostname} is not the redis service")
    pw = s["redis"].get("password_file", "")
    need(pw.startswith("/run/secrets/"), "password_file is not a compose secret")
    secret = pw.rsplit("/", 1)[1]
    for name in ("varco", "redis"):
        need(secret in [x if isinstance(x, str) else x.get("source") for x in svc(name).get("secrets") or []],
             f"{name} does not get secret {secret}")
    need("requirepass" in " ".join(words(svc("redis").get("command"))), "redis has no requirepass")
    f = COMPOSE.parent / (compose().get("secrets") or {})[secret]["file"]
    need(f.is_file(), f"{f} missing")
    need(not f.read_text().endswith("\n"), f"{f} ends with a newline (Redis would keep it)")


def check_compose_backend():
    cfg = compose_varco_toml()
    cmd = words(svc("backend").get("command"))
    need("--listen" in cmd, "backend has no --listen")
    _, port = host_port(cmd[cmd.index("--listen") + 1])
    for name, u in (cfg.get("upstream") or {}).items():
        url = urlsplit(u["url"])
        need((url.hostname, url.port) == ("backend", port),
             f"upstream.{name}.url {u['url']} is not the backend service on {port}")


def check_docker_compose():
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
                         capture_output=True, text=True)
    need(out.returncode == 0, (out.stderr or out.stdout).strip()[:2000])


# ---------------------------------------------------------------------------------------

def main():
    print(f"Kubernetes manifests in {K8S.relative_to(ROOT)} (schemas: Kubernetes "
          f"{' and '.join(KUBERNETES_VERSIONS)}, strict)")
    run("manifests parse as YAML", check_loaded)
    for f in manifest_files:
        run(f"schema: {f.name}", schema_check(f.name))
    run("kustomization.yaml lists every manifest", check_kustomization)
    run("no Secret manifests (created with kubectl, README.md)", check_no_secrets)
    run("the ConfigMap's varco.toml parses, mode serve, `varco serve --config` points at it", check_config_parses)
    run("varco.toml: every key is documented (config/*.toml, README.md)", check_config_keys)
    run("varco check-config accepts the ConfigMap's and compose's varco.toml (but files mounted at run time)", check_config_loader)
    run("varco.toml: session.store = redis, URL host/port are the Redis Service", check_redis_store)
    run("varco.toml: Redis password file = the Secret key Redis requires", check_redis_password)
    run("varco.toml: every file it names is on a read-only Secret/ConfigMap volume", check_files_mounted)
    run("varco.toml: assertion.active_kid has a key", check_active_kid)
    run("probes: readyz/healthz on the admin listener (server.admin_address), plain HTTP", check_probes)
    run("Prometheus annotations: the admin listener's /metrics", check_prometheus)
    run("varco's container port is its TLS listener's", check_listener_port)
    run("Services expose varco's TLS port only (not the app's, not admin)", check_service)
    run("upstream on 127.0.0.1, app container binds 127.0.0.1 and declares no port", check_app_loopback)
    run("replicas >= 2, RollingUpdate with maxUnavailable 0", check_replicas)
    run("grace period > preStop + drain_timeout; app outlives varco's drain", check_shutdown)
    run("securityContext: non-root, read-only root, no escalation, drop ALL, RuntimeDefault", check_security_contexts)
    run("resources: requests and limits (cpu, memory) on every container", check_resources)
    run("Secret and ConfigMap volumes mounted read-only", check_read_only_mounts)
    run("images tagged, none :latest", check_images)
    run("PodDisruptionBudget minAvailable 1 on the gateway pods", check_pdb)
    run("preferred pod anti-affinity across nodes", check_anti_affinity)
    run("NetworkPolicy ingress: varco's TLS port, admin from a namespace only, never the app", check_gateway_ingress)
    run("NetworkPolicy egress: Redis, DNS, HTTPS", check_gateway_egress)
    run("Redis NetworkPolicy: only the varco pods, no egress", check_redis_policy)

    print(f"Compose file {COMPOSE.relative_to(ROOT)}")
    run("services varco, redis, backend; varco waits for a healthy redis", check_compose_services)
    run("redis and backend not published; varco on the host's loopback only", check_compose_ports)
    run("varco and backend: varco:local, read-only, uid 10001; backend is `varco echo`", check_compose_images)
    run("compose/varco.toml: keys documented, mode matches the command, certs writable", check_compose_config)
    run("compose/varco.toml: sessions in the redis service, password from a shared secret", check_compose_redis)
    run("compose/varco.toml: upstream is the backend service's port", check_compose_backend)
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        run("docker compose config", check_docker_compose)
    else:
        print("skip docker compose config (docker compose not installed)")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
