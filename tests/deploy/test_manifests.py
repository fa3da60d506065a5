"""deploy/: Kubernetes manifests, compose file, Prometheus and Grafana config, Dockerfile.

Kubernetes objects are checked against the API schemas that ``kubernetes-validate``
ships (offline, strict: unknown fields fail). The compose file is checked by
``docker compose config`` when the compose plugin is installed, else by
``docker-compose config``, else structurally — and the test says which, as a
warning in the summary. Dashboards and scrape configs may only query metrics
popgate registers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.status import _route_counter
from popgate.policies.loader import load as load_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSIONS = ("1.28.0", "1.33.0")
KEY = "x" * 43


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for _, d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- Kubernetes -------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_api_schema(version: str) -> None:
    """Every object in deploy/k8s validates (strict) against the Kubernetes API schema."""
    import kubernetes_validate

    docs = [(f, d) for f, d in k8s_docs() if d.get("kind") != "Kustomization"]
    kinds = {d["kind"] for _, d in docs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "StatefulSet",
    } <= kinds
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                f"{'.'.join(map(str, exc.path))}"
            )


def test_kustomization_lists_every_manifest() -> None:
    """``kubectl apply -k deploy/k8s`` applies every file there."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_deployment_probes_resources_and_wiring() -> None:
    """Probes hit the admin port's /healthz and /readyz; resources are set; Service, HPA and
    PDB select the Deployment's pods; mounted keys are the ones the config names."""
    dep = by_kind("Deployment", "popgate")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert set(c["resources"]) == {"requests", "limits"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    labels = pod["metadata"]["labels"]
    svc, pdb, hpa = (
        by_kind("Service", "popgate"),
        by_kind("PodDisruptionBudget"),
        by_kind("HorizontalPodAutoscaler"),
    )
    redis_svc = by_kind("Service", "redis")
    assert redis_svc["spec"]["clusterIP"] == "None"
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    cfg = tomllib.loads(by_kind("ConfigMap", "popgate-config")["data"]["popgate.toml"])
    assert int(cfg["server"]["admin"].rsplit(":", 1)[1]) == ports["admin"]
    assert int(cfg["server"]["listen"].rsplit(":", 1)[1]) == ports["http"]
    conf_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in next(m for m in c["volumeMounts"] if m["name"] == "config"), (
        "a subPath mount never sees ConfigMap updates (SIGHUP reload would reread the old file)"
    )
    assert c["args"][c["args"].index("--config") + 1] == f"{conf_mount}/popgate.toml"
    assert cfg["policy"]["file"] == f"{conf_mount}/policy.toml"
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > cfg["server"]["shutdown_timeout"] + 5, "room to drain after preStop"
    secret = by_kind("Secret", "popgate-keys")
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "keys")
    named = set(
        re.findall(r'secret_file = "([^"]+)"', by_kind("ConfigMap", "popgate-config")["data"]["popgate.toml"])
    )
    assert named == {f"{mount}/{k}" for k in secret["stringData"]}
    sts = by_kind("StatefulSet", "redis")
    conf = by_kind("ConfigMap", "redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in conf and sts["spec"]["volumeClaimTemplates"]


def test_kubernetes_config_and_policy_are_valid_popgate_config(tmp_path: Path) -> None:
    """The ConfigMap's popgate.toml and policy.toml pass popgate's own validation."""
    data = by_kind("ConfigMap", "popgate-config")["data"]
    (tmp_path / "policy.toml").write_text(data["policy.toml"])
    load_policy(str(tmp_path / "policy.toml"))
    text = data["popgate.toml"].replace("/etc/popgate/conf/policy.toml", str(tmp_path / "policy.toml"))
    for path in set(re.findall(r'secret_file = "([^"]+)"', text)):
        local = tmp_path / Path(path).name
        local.write_text(KEY)
        text = text.replace(path, str(local))
    (tmp_path / "popgate.toml").write_text(text)
    cfg = load_config(tmp_path / "popgate.toml")
    assert cfg.store.url.startswith("redis://") and cfg.puzzle is not None


# -- compose ------------------------------------------------------------------------


def compose_env() -> dict[str, str]:
    return {
        **os.environ,
        "POPGATE_SESSION_KEY": KEY,
        "POPGATE_SUBJECT_KEY": KEY,
        "POPGATE_CHALLENGE_KEY": KEY,
    }


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def structural_compose_check(doc: dict[str, Any]) -> None:
    """What ``docker compose config`` would reject, checked by hand."""
    allowed_top = {"name", "services", "networks", "volumes", "secrets", "configs"}
    assert set(doc) - allowed_top <= {k for k in doc if k.startswith("x-")}, set(doc) - allowed_top
    services = doc["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: needs image or build"
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name}: depends_on unknown service {dep}"
        for net in svc.get("networks", []):
            assert net in doc.get("networks", {}), f"{name}: unknown network {net}"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: no such file {src}"
            else:
                assert src in doc.get("volumes", {}), f"{name}: undeclared volume {src}"
        for port in svc.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), f"{name}: publish on 127.0.0.1 only"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_compose_file_validates(record_property: Any) -> None:
    """``docker compose config`` accepts deploy/compose.yaml (or, without the compose plugin,
    the structural check does — and says so in the warnings summary)."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    structural_compose_check(doc)
    cmd = compose_command()
    if cmd is None:
        msg = (
            "docker compose plugin (and docker-compose) not installed: deploy/compose.yaml "
            "was validated structurally only, not by `docker compose config`"
        )
        warnings.warn(msg, stacklevel=1)
        record_property("compose_validation", "structural")
        return
    out = subprocess.run(
        [*cmd, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=compose_env(),
        cwd=DEPLOY,
    )
    assert out.returncode == 0, out.stderr
    record_property("compose_validation", " ".join(Path(c).name for c in cmd))
    missing = subprocess.run(
        [*cmd, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        env={k: v for k, v in compose_env().items() if k != "POPGATE_SESSION_KEY"},
    )
    assert missing.returncode != 0 and "POPGATE_SESSION_KEY" in missing.stderr, "keys are required"


def test_compose_services_and_popgate_config() -> None:
    """Two popgates behind the load balancer, Redis with AOF, the demo origin, Prometheus and
    Grafana; the popgate config the compose file mounts is valid."""
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    s = doc["services"]
    assert {"popgate-1", "popgate-2", "lb", "redis", "upstream", "prometheus", "grafana"} <= set(s)
    assert "--appendonly" in s["redis"]["command"] and "yes" in s["redis"]["command"]
    assert s["upstream"]["command"][0] == "demo-upstream"
    nginx = (DEPLOY / "compose/nginx.conf").read_text()
    assert "popgate-1:8080" in nginx and "popgate-2:8080" in nginx
    env = {"POPGATE_SESSION_KEY": KEY, "POPGATE_SUBJECT_KEY": KEY, "POPGATE_CHALLENGE_KEY": KEY}
    cfg = load_config(DEPLOY / "compose/popgate.toml", env=env)
    assert cfg.store.url == "redis://redis:6379/0" and cfg.upstream.host == "upstream"
    subnet = doc["networks"]["popgate"]["ipam"]["config"][0]["subnet"]
    assert [str(n) for n in cfg.trusted_proxies] == [subnet]


# -- Prometheus and Grafana --------------------------------------------------------------


def metric_names() -> dict[str, set[str]]:
    """Every series name popgate exposes, with its label names."""
    m = Metrics()
    _route_counter(m)
    out: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for collector, _names in m.registry._collector_to_names.items():
        labels = set(getattr(collector, "_labelnames", ()))
        for metric in collector.describe():
            for suffix in suffixes.get(metric.type, ("",)):
                out[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def test_prometheus_scrapes_both_popgates_admin_ports() -> None:
    """The scrape config targets both popgates on the admin port their config listens on."""
    prom = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "popgate"]
    targets = job["static_configs"][0]["targets"]
    port = tomllib.loads((DEPLOY / "compose/popgate.toml").read_text())["server"]["admin"].rsplit(":", 1)[1]
    assert sorted(targets) == [f"popgate-1:{port}", f"popgate-2:{port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_dashboard_queries_only_real_metrics() -> None:
    """Every panel's query names a metric (and grouping labels) popgate exports; the datasource
    is the provisioned one; the provider path is where compose mounts the dashboards."""
    known = metric_names()
    dash = json.loads((DEPLOY / "grafana/dashboards/popgate.json").read_text())
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "class",
        "decision",
        "fees",
        "difficulty",
        "verification latency",
        "store errors",
        "fail-opens",
    ):
        assert topic in titles, f"no panel about {topic}"
    queried = set()
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            expr = t["expr"]
            names = set(re.findall(r"\bpopgate_[a-z_]+", expr))
            assert names, f"{panel['title']}: queries no popgate metric"
            for n in names:
                assert n in known, f"{panel['title']}: {n} is not a popgate metric"
            labels = set().union(*(known[n] for n in names))
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (g.strip() for g in group.split(",")):
                    assert label in labels, f"{panel['title']}: no label {label} on {names}"
            queried |= names
    assert {
        "popgate_requests_total",
        "popgate_fees_atomic_total",
        "popgate_puzzle_difficulty_bits",
        "popgate_verification_seconds_bucket",
        "popgate_store_errors_total",
        "popgate_fail_open_total",
    } <= queried
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/popgate.yaml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{prov['providers'][0]['options']['path']}:ro" in mounts


def test_dockerfile_is_small_non_root_with_admin_healthcheck() -> None:
    """Multi-stage slim image, a numeric non-root USER, HEALTHCHECK on the admin /healthz.
    (`make image` builds it for real, FROM a local mmdebstrap base: deploy/image.sh.)"""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    assert len(re.findall(r"^FROM \$\{BASE\}", text, re.M)) == 2
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    hc = re.search(r"^HEALTHCHECK .*\n.*", text, re.M)
    assert hc and "/healthz" in hc.group(0) and "POPGATE_ADMIN_PORT" in hc.group(0)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "*", "send only what the image needs"
    for path in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / path).exists(), f"COPY {path}: no such path"
