#!/usr/bin/env python3
"""Offline checks of docker/ that schema validators cannot make: references between files.

Run by scripts/check-deploy.sh inside its venv (PyYAML and kubernetes-validate come from
there). Each check appends "file: problem" to PROBLEMS; the exit status is 1 when any.

* compose: depends_on names services, bind mounts exist, named volumes are declared, host
  ports don't collide, build context and Dockerfile exist, and what the configs mounted into
  the stack point at (Prometheus target, Grafana datasource, Pake's backends) is a service.
* kubernetes: every manifest validates (strict) against the bundled Kubernetes schemas of
  an old and a current release; selectors match the pod labels, named ports exist, the
  Secret/ConfigMap references resolve, the grace period covers preStop + shutdown_timeout.
* Dockerfile: multi-stage, non-root, the ports, the HEALTHCHECK, STOPSIGNAL, COPY sources.
* Grafana: panel ids and layout, the datasource variable and provisioning agree, every
  PromQL expression parses (promtool), every template variable used is defined.
* metric names used by alerts and dashboard are defined in src/ or announced (EXPECTED).
"""

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROBLEMS = []

# Metrics announced for work in progress (Redis proxy, circuit breakers, rate limits): the
# dashboard and alerts use these exact names before the code that exports them lands.
EXPECTED = {
    "pake_redis_l1_hits_total",
    "pake_redis_l1_misses_total",
    "pake_redis_backend_errors_total",
    "pake_redis_command_duration_seconds",
    "pake_circuit_state",
    "pake_circuit_open_total",
    "pake_rate_limited_total",
    # named by the runbook hints; exported next to the L1 counters by the Redis proxy
    "pake_redis_l1_evictions_total",
    "pake_redis_l1_invalidations_total",
    "pake_redis_l1_flushes_total",
}

KUBERNETES_VERSIONS = ("1.29", "1.37")


def problem(path, text):
    PROBLEMS.append(f"{Path(path).relative_to(ROOT)}: {text}")


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- compose


def host_of(url):
    """`http://prometheus:9090/x` or `redis://u:p@redis-1:6379` -> host name."""
    m = re.match(r"^[a-z]+://(?:[^@/]*@)?([^:/]+)", url)
    return m.group(1) if m else None


def check_compose():
    path = DOCKER / "docker-compose.yml"
    (compose,) = load_yaml(path)
    services = compose.get("services", {})
    declared_volumes = set((compose.get("volumes") or {}).keys())
    used_volumes = set()
    published = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problem(path, f"service {name} depends on unknown service {dep}")
        for vol in svc.get("volumes", []):
            check_compose_volume(path, name, vol, declared_volumes, used_volumes)
        for port in svc.get("ports", []):
            host = published_port(port)
            if host in published:
                problem(path, f"host port {host} published by {published[host]} and {name}")
            published[host] = name
        check_compose_build(path, name, svc.get("build"))
    for vol in sorted(declared_volumes - used_volumes):
        problem(path, f"volume {vol} is declared but no service mounts it")
    check_compose_configs(path, services)


def check_compose_volume(path, service, vol, declared, used):
    if isinstance(vol, dict):
        source, kind = vol.get("source", ""), vol.get("type", "volume")
    else:
        source = vol.split(":", 1)[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    if kind == "bind":
        if not (path.parent / source).exists():
            problem(path, f"service {service} mounts {source}, which is not in the repository")
    elif source:
        used.add(source)
        if source not in declared:
            problem(path, f"service {service} mounts volume {source}, not declared under volumes:")


def published_port(port):
    if isinstance(port, dict):
        return str(port.get("published"))
    parts = str(port).split("/")[0].split(":")
    return parts[-2] if len(parts) >= 2 else parts[-1]


def check_compose_build(path, service, build):
    if build is None:
        return
    context = path.parent / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    if not context.is_dir():
        problem(path, f"service {service} builds from {context}, which does not exist")
    elif not (context / dockerfile).is_file():
        problem(path, f"service {service} builds {dockerfile}, not found in its context")


def mounted_file(path, svc, target):
    """The repository file a service mounts at `target` (or None)."""
    for vol in svc.get("volumes", []):
        if isinstance(vol, str) and vol.split(":")[1:2] == [target]:
            return path.parent / vol.split(":")[0]
    return None


def check_compose_configs(path, services):
    """What the mounted configs point at must be services of this stack."""

    def need(service, what, host):
        if host not in services:
            problem(path, f"{what} points at {host!r}, which is not a service (for {service})")

    prom = load_yaml(DOCKER / "prometheus/prometheus.yml")[0]
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                if not target.startswith("localhost"):
                    need("prometheus", f"scrape job {job['job_name']}", target.split(":")[0])
    for ds in load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")[0]["datasources"]:
        need("grafana", f"datasource {ds['name']}", host_of(ds["url"]))
    pake = services.get("pake", {})
    env = pake.get("environment", {})
    config = mounted_file(path, pake, env.get("PAKE_CONFIG", ""))
    if config is None:
        problem(path, "pake: PAKE_CONFIG is not a file mounted into the service")
    else:
        cfg = tomllib.loads(config.read_text())
        for db in cfg.get("databases", []):
            need("pake", f"database {db['name']}", db["host"])
            for r in db.get("replicas", []):
                need("pake", f"a replica of {db['name']}", r["host"])
    if "PAKE_REDIS" in env:
        need("pake", "PAKE_REDIS", host_of(env["PAKE_REDIS"]))
    init = services.get("redis-cluster-init", {}).get("environment", {})
    for node in str(init.get("REDIS_NODES", "")).split():
        need("redis-cluster-init", "REDIS_NODES", node)


# ---------------------------------------------------------------- kubernetes


def check_kubernetes():
    docs = []
    for path in sorted((DOCKER / "kubernetes").glob("*.yaml")):
        for doc in load_yaml(path):
            docs.append((path, doc))
    by_kind = {}
    for path, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((path, doc))
        if doc.get("kind") == "Kustomization":
            for res in doc.get("resources", []):
                if not (path.parent / res).is_file():
                    problem(path, f"resource {res} does not exist")
        elif doc.get("kind") != "ServiceMonitor":  # a CRD: no bundled schema
            validate_kubernetes(path, doc)
    one = lambda kind: (by_kind.get(kind) or [(None, None)])[0]  # noqa: E731
    dpath, deployment = one("Deployment")
    if deployment is None:
        problem(DOCKER / "kubernetes", "no Deployment")
        return
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check_selectors(by_kind, deployment, labels)
    check_pod(dpath, pod["spec"], by_kind)


def validate_kubernetes(path, doc):
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            problem(path, f"{doc['kind']} invalid for Kubernetes {version} at {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(path, e.message)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_selectors(by_kind, deployment, labels):
    name = deployment["metadata"]["name"]
    for path, d in by_kind.get("Deployment", []):
        if not matches(d["spec"]["selector"]["matchLabels"], labels):
            problem(path, "Deployment selector does not match its pod labels")
    for kind in ("PodDisruptionBudget",):
        for path, d in by_kind.get(kind, []):
            if not matches(d["spec"]["selector"]["matchLabels"], labels):
                problem(path, f"{kind} selector matches no Pake pod")
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    services = by_kind.get("Service", [])
    for path, svc in services:
        if not matches(svc["spec"]["selector"], labels):
            problem(path, "Service selector matches no Pake pod")
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                problem(path, f"Service targetPort {p['targetPort']} is not a container port")
    for path, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", name):
            problem(path, f"HPA scales {ref['kind']}/{ref['name']}, not Deployment/{name}")
    for path, sm in by_kind.get("ServiceMonitor", []):
        svc_ports = {p["name"] for _, s in services for p in s["spec"]["ports"]}
        if not any(matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]) for _, s in services):
            problem(path, "ServiceMonitor selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in svc_ports:
                problem(path, f"ServiceMonitor port {ep['port']} is not a Service port")


def check_pod(path, spec, by_kind):
    config_maps = {d["metadata"]["name"]: d for _, d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for _, d in by_kind.get("Secret", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in config_maps:
            problem(path, f"volume {v['name']} uses ConfigMap {v['configMap']['name']}, not defined")
    for c in spec["containers"]:
        ports = {p["name"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                problem(path, f"{probe} uses port {port}, not a container port")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
            problem(path, "readinessProbe must GET /ready")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
            problem(path, "livenessProbe must GET /health")
        if "cpu" not in c.get("resources", {}).get("requests", {}):
            problem(path, "no CPU request: the HPA's utilization target needs one")
        env = {e["name"]: e for e in c.get("env", [])}
        for e in env.values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in secrets.get(ref["name"], {}).get("stringData", {}):
                problem(path, f"env {e['name']} reads {ref['name']}/{ref['key']}, not in any Secret here")
        config = check_config_mount(path, c, env, volumes, config_maps)
        check_grace(path, spec, c, config)


def check_config_mount(path, container, env, volumes, config_maps):
    """PAKE_CONFIG must be a key of the ConfigMap mounted at its directory; returns the TOML."""
    file = Path(env.get("PAKE_CONFIG", {}).get("value", ""))
    for m in container.get("volumeMounts", []):
        vol = volumes.get(m["name"], {})
        if Path(m["mountPath"]) == file.parent and "configMap" in vol:
            data = config_maps.get(vol["configMap"]["name"], {}).get("data", {})
            if file.name in data:
                return tomllib.loads(data[file.name])
    problem(path, f"PAKE_CONFIG {file} is not a ConfigMap key mounted at {file.parent}")
    return {}


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(text).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


def check_grace(path, spec, container, config):
    pre = container.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    sleep = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" else pre.get("sleep", {}).get("seconds", 0)
    if not pre:
        problem(path, "no preStop hook: endpoints may still route to a draining pod")
    drain = seconds(config.get("general", {}).get("shutdown_timeout", "30s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if drain is None or grace <= sleep + drain:
        problem(path, f"terminationGracePeriodSeconds {grace} must exceed preStop {sleep}s + shutdown_timeout {drain}s")


# ---------------------------------------------------------------- Dockerfile


def check_dockerfile():
    path = DOCKER / "Dockerfile"
    text = path.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    if len(stages) < 2:
        problem(path, "must be multi-stage (a builder and a runtime image)")
        return
    final = lines[stages[-1]:]
    def instr(name):
        return [ln.split(None, 1)[1] if " " in ln else "" for ln in final if ln.split()[0].upper() == name]
    users = instr("USER")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problem(path, "the runtime stage must run as a non-root USER")
    exposed = {p.split("/")[0] for e in instr("EXPOSE") for p in e.split()}
    for port in ("6432", "6380", "9930"):
        if port not in exposed:
            problem(path, f"EXPOSE {port} missing")
    health = " ".join(instr("HEALTHCHECK"))
    if "--health-check" not in health or "--service=pake" not in health:
        problem(path, "HEALTHCHECK must run pake orchestration --health-check --service=pake")
    if instr("STOPSIGNAL") != ["SIGTERM"]:
        problem(path, "STOPSIGNAL SIGTERM missing")
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split("\n")
    kept = {ln[1:].strip().rstrip("/") for ln in ignore if ln.startswith("!")}
    for ln in lines:
        if ln.upper().startswith("COPY ") and "--from=" not in ln:
            for src in ln.split()[1:-1]:
                if src.startswith("--"):
                    continue
                if not (ROOT / src).exists():
                    problem(path, f"COPY {src}: not in the build context (the repository root)")
                elif "*" in ignore and src.rstrip("/") not in kept:
                    problem(path, f"COPY {src}: excluded by Dockerfile.dockerignore")


# ---------------------------------------------------------------- Grafana


def check_dashboard():
    path = DOCKER / "grafana/dashboards/pake.json"
    dash = json.loads(path.read_text())
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    builtin = {"__rate_interval", "__interval", "__range"}
    ds_var = variables.get("datasource", {})
    provisioned = load_yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yml")[0]["datasources"]
    if ds_var.get("current", {}).get("value") not in {d["uid"] for d in provisioned}:
        problem(path, "the datasource variable's default is not the provisioned datasource uid")
    check_layout(path, dash["panels"])
    exprs = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(path, f"panel {p['title']!r} does not use the ${{datasource}} variable")
        if not p.get("targets"):
            problem(path, f"panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                if var not in variables and var not in builtin:
                    problem(path, f"panel {p['title']!r} uses ${var}, not a dashboard variable")
    check_promql(path, exprs)
    provider = load_yaml(DOCKER / "grafana/provisioning/dashboards/pake.yml")[0]["providers"][0]
    (compose,) = load_yaml(DOCKER / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    if f"./grafana/dashboards:{provider['options']['path']}:ro" not in mounts:
        problem(path, f"the dashboard provider reads {provider['options']['path']}, where compose mounts no dashboards")
    return dash


def check_layout(path, panels):
    ids, cells = set(), {}
    for p in panels:
        if p["id"] in ids:
            problem(path, f"panel id {p['id']} used twice")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            problem(path, f"panel {p['title']!r} is outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problem(path, f"panel {p['title']!r} overlaps {cells[(x, y)]!r}")
                    return
                cells[(x, y)] = p["title"]


def check_promql(path, exprs):
    """Parse every query with promtool, variables replaced by values of the right kind."""
    rules = []
    for i, (title, expr) in enumerate(exprs):
        concrete = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
                    .replace("$__range", "1h"))
        concrete = re.sub(r"\$\{?\w+\}?", ".*", concrete)
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    if out.returncode != 0:
        problem(path, "a query does not parse:\n" + out.stdout + out.stderr)


# ---------------------------------------------------------------- metric names


def check_metric_names(dashboard):
    defined = set()
    for rs in (ROOT / "src").rglob("*.rs"):
        defined.update(re.findall(r'"(pake_[a-z0-9_]+)"', rs.read_text()))
    used = {}
    alerts = DOCKER / "prometheus/alerts.yml"
    sources = [(alerts, alerts.read_text()),
               (DOCKER / "grafana/dashboards/pake.json", json.dumps(dashboard))]
    for path, text in sources:
        for name in re.findall(r"\b(pake_[a-z0-9_]+)", text):
            used.setdefault(re.sub(r"_(bucket|sum|count)$", "", name), path)
    for name, path in sorted(used.items()):
        if name not in defined and name not in EXPECTED:
            problem(path, f"metric {name} is neither exported by src/ nor announced in EXPECTED")
    pending = sorted(EXPECTED - defined)
    if pending:
        print(f"    (announced, not exported yet: {', '.join(pending)})")


def main():
    check_compose()
    check_kubernetes()
    check_dockerfile()
    dashboard = check_dashboard()
    check_metric_names(dashboard)
    for p in dict.fromkeys(PROBLEMS):  # each problem once, in order
        print(f"check-deploy: {p}", file=sys.stderr)
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
