"""deploy/ checked offline: the Kubernetes overlays rendered by `kubectl kustomize` and
validated against the schemas kubernetes-validate ships, the invariants issue 15 states
(one Recreate trainer, an autoscaled and disruption-budgeted inference Deployment, gRPC
health probes, resources, non-root, no secret on a command line, NetworkPolicy), hadolint
on the image definition, and the compose file's structure against `sparsecl serve --help`.

Nothing here needs a cluster, a container engine or the network. Only kubectl may be
missing (the Kubernetes tests then skip, saying so); hadolint and kubernetes-validate are
test extras (pyproject.toml), so their absence is a failure.
"""

from __future__ import annotations

import base64
import functools
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
# the Kubernetes version the manifests are validated for (kubernetes-validate ships its
# schemas; native grpc: probes are GA since 1.27)
KUBERNETES_VERSION = "1.32.0"
SERVERS = ("sparsecl-trainer", "sparsecl-inference")  # Deployments running `sparsecl serve`
GRPC_PORT = 50051
# credentials written into a URL (scheme://user:password@host)
URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:[^/\s@]+@")

Doc = dict[str, Any]


# ---- helpers ------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize overlays")
    return path


@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(overlay: str) -> list[Doc]:
    """The overlay's resources, as `kubectl kustomize` renders them."""
    return list(_render(overlay))


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(kind/name, pod spec) of every workload."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(docs: list[Doc]) -> Iterator[tuple[str, str, Doc]]:
    """(workload kind, or init for an init container; kind/name/container; the container) of
    every container."""
    for where, spec in pod_specs(docs):
        for container in spec.get("initContainers", []):
            yield "init", f"{where}/{container['name']}", container
        for container in spec["containers"]:
            yield where.split("/")[0], f"{where}/{container['name']}", container


def secret_values(docs: list[Doc]) -> list[str]:
    """Every value of every Secret the overlay renders."""
    values = []
    for doc in docs:
        if doc["kind"] == "Secret":
            values += [base64.b64decode(v).decode() for v in doc.get("data", {}).values()]
            values += list(doc.get("stringData", {}).values())
    return values


@functools.cache
def serve_options() -> dict[str, list[str] | None]:
    """`sparsecl serve --help`'s options: name -> its choices (None when free-form)."""
    out = subprocess.run(
        [sys.executable, "-c", "from client.cli import main; main()", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    options: dict[str, list[str] | None] = {}
    for name, choices in re.findall(r"(--[a-z][a-z0-9-]*)(?: \{([^}]*)\})?", out.stdout):
        if choices or name not in options:
            options[name] = choices.split(",") if choices else None
    assert "--role" in options, f"could not parse serve --help:\n{out.stdout}"
    return options


def option_of(env_name: str) -> str:
    """SPARSECL_MAX_BATCH -> --max-batch (README, Configuration)."""
    return "--" + env_name.removeprefix("SPARSECL_").lower().replace("_", "-")


def assert_known_serve_settings(where: str, env: dict[str, str], args: list[str]) -> None:
    options = serve_options()
    for name, value in env.items():
        if not name.startswith("SPARSECL_"):
            continue
        option = option_of(name)
        assert option in options, f"{where}: {name} sets {option}, which serve lacks"
        choices = options[option]
        assert choices is None or value in choices, f"{where}: {name}={value} not in {choices}"
    for arg in args:
        if arg.startswith("--"):
            option = arg.split("=")[0]
            assert option in options, f"{where}: {arg} is no option of sparsecl serve"


def probe_checks_grpc_health(probe: Doc | None, tls: bool) -> bool:
    """The probe asks the gRPC health service: natively, or with `sparsecl health` where the
    port speaks TLS (the kubelet's grpc: probe has no TLS)."""
    if probe is None:
        return False
    if not tls:
        return probe.get("grpc", {}).get("port") == GRPC_PORT
    command = probe.get("exec", {}).get("command", [])
    return command[:2] == ["sparsecl", "health"] and "--tls-ca" in command


@functools.cache
def compose() -> Doc:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def compose_args(service: Doc) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def compose_serve_args(service: Doc) -> list[str]:
    """The arguments of `sparsecl serve` in a service's command (a shell line or an argv)."""
    argv = compose_args(service)
    if service.get("entrypoint", [])[:2] == ["/bin/sh", "-c"]:
        argv = shlex.split(" ".join(argv))
    else:
        argv = ["sparsecl", *argv]
    starts = [i for i in range(len(argv) - 1) if argv[i : i + 2] == ["sparsecl", "serve"]]
    assert len(starts) == 1, f"no `sparsecl serve` in {argv}"
    rest = argv[starts[0] + 2 :]
    return rest[: rest.index("&&")] if "&&" in rest else rest


def sparsecl_services() -> dict[str, Doc]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image", "").split("/")[-1].startswith("sparsecl:")
    }


def dockerfile_stages() -> list[list[str]]:
    """The image definition's stages, each a list of its instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def tool(name: str) -> str:
    """A test extra's executable: the one next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / name
    path = str(here) if here.exists() else shutil.which(name)
    assert path, f"{name} is missing: pip install -e '.[test]' installs it"
    return path


# ---- Kubernetes -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    docs = render(overlay)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {e.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_is_one_replica_replaced_by_recreate(overlay: str) -> None:
    trainer = one(render(overlay), "Deployment", "sparsecl-trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    assert not any(
        d["kind"] == "HorizontalPodAutoscaler"
        and d["spec"]["scaleTargetRef"]["name"] == "sparsecl-trainer"
        for d in render(overlay)
    )


@pytest.mark.parametrize(("overlay", "role"), [(o, r) for o in OVERLAYS for r in SERVERS])
def test_each_server_runs_its_role(overlay: str, role: str) -> None:
    container = one(render(overlay), "Deployment", role)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in container["containers"][0]["env"]}
    assert env["SPARSECL_ROLE"] == role.removeprefix("sparsecl-")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_is_autoscaled_by_an_hpa(overlay: str) -> None:
    docs = render(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler", "sparsecl-inference")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "sparsecl-inference")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_has_a_pdb_that_lets_a_drain_proceed(overlay: str) -> None:
    docs = render(overlay)
    pdb = one(docs, "PodDisruptionBudget", "sparsecl-inference")
    labels = one(docs, "Deployment", "sparsecl-inference")["spec"]["template"]["metadata"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels["labels"].items(), "the PDB selects no inference pod"
    hpa = one(docs, "HorizontalPodAutoscaler", "sparsecl-inference")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servers_probe_the_grpc_health_service(overlay: str) -> None:
    docs = render(overlay)
    for name in SERVERS:
        container = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"] for e in container.get("env", [])}
        tls = "SPARSECL_TLS_CERT" in env
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe_checks_grpc_health(container.get(probe), tls), f"{name}: {probe}"


def test_dev_uses_the_native_grpc_probe() -> None:
    for name in SERVERS:
        spec = one(render("dev"), "Deployment", name)["spec"]["template"]["spec"]
        assert spec["containers"][0]["readinessProbe"]["grpc"] == {"port": GRPC_PORT}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_container_has_readiness_and_liveness_probes(overlay: str) -> None:
    for kind, where, container in containers(render(overlay)):
        if kind not in ("Job", "init"):
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay: str) -> None:
    for _, where, container in containers(render(overlay)):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert set(resources.get(bound, {})) >= {"cpu", "memory"}, f"{where}: {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_non_root_and_hardened(overlay: str) -> None:
    docs = render(overlay)
    for where, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("runAsUser", 0) != 0, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
    for _, where, container in containers(docs):
        context = container.get("securityContext", {})
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_on_any_command_line(overlay: str) -> None:
    docs = render(overlay)
    secrets = secret_values(docs)
    for _, where, container in containers(docs):
        argv = container.get("command", []) + container.get("args", [])
        for arg in argv:
            assert not URL_CREDENTIALS.search(arg), f"{where}: credentials in {arg!r}"
            assert not any(s in arg for s in secrets), f"{where}: a Secret's value in {arg!r}"
            assert not re.match(r"--(token|password|secret)\b", arg), f"{where}: {arg}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tokens_reach_the_servers_as_a_file_of_their_secret_only_the_pod_reads(
    overlay: str,
) -> None:
    docs = render(overlay)
    tokens = Path(one(docs, "ConfigMap", "sparsecl-config")["data"]["SPARSECL_TOKENS"])
    for name in SERVERS:
        spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        secret = volumes[mounts[str(tokens.parent)]]["secret"]
        assert secret["secretName"].startswith("sparsecl-tokens"), name
        # root's file, readable by the pod's group only: what server/auth.py accepts
        assert secret["defaultMode"] & 0o037 == 0, f"{name}: mode {secret['defaultMode']:o}"
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]


def test_production_serves_tls_from_a_mounted_secret() -> None:
    docs = render("production")
    config = one(docs, "ConfigMap", "sparsecl-config")["data"]
    assert "SPARSECL_INSECURE" not in config
    for name in SERVERS:
        spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for key in ("SPARSECL_TLS_CERT", "SPARSECL_TLS_KEY"):
            volume = volumes[mounts[str(Path(env[key]).parent)]]
            assert volume["secret"]["secretName"] == "sparsecl-tls", f"{name}: {key}"


def test_production_commits_no_secret() -> None:
    assert [d for d in render("production") if d["kind"] == "Secret"] == []


def test_dev_secrets_are_marked_as_throwaway_placeholders() -> None:
    values = secret_values(render("dev"))
    assert values
    assert all("dev-only" in value for value in values)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_settings_are_options_sparsecl_serve_has(overlay: str) -> None:
    docs = render(overlay)
    shared: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            shared |= doc.get("data", {})
    for name in SERVERS:
        container = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        env = shared | {e["name"]: e.get("value") or "" for e in container.get("env", [])}
        env = {k: v for k, v in env.items() if k.startswith("SPARSECL_") and v}
        assert_known_serve_settings(name, env, container.get("args", [])[1:])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_each_port_narrowly(overlay: str) -> None:
    docs = render(overlay)
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["sparsecl-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "sparsecl"}
    assert deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    for pod in ("sparsecl-trainer", "sparsecl-inference", "sparsecl-mlflow", "sparsecl-postgres"):
        labels = one(docs, "Deployment" if pod != "sparsecl-postgres" else "StatefulSet", pod)
        assert labels["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == (
            "sparsecl"
        ), f"{pod} escapes the default deny"

    def sources(policy: str, port: int) -> list[Doc]:
        rules = [
            r
            for r in policies[policy]["ingress"]
            if {"port": port, "protocol": "TCP"} in r.get("ports", [])
        ]
        return [source for rule in rules for source in rule.get("from", [{}])]

    assert sources("sparsecl-postgres", 5432) == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sparsecl-mlflow"}}}
    ]
    assert sorted(
        s["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for s in sources("sparsecl-mlflow", 5000)
    ) == sorted(SERVERS)
    assert sources("sparsecl-trainer", GRPC_PORT) == [
        {"podSelector": {"matchLabels": {"sparsecl.io/trainer-client": "true"}}}
    ]
    assert sources("sparsecl-inference", GRPC_PORT) == [{}]  # any client


# ---- the image definition ---------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run(
        [
            tool("hadolint"),
            "--config",
            str(DEPLOY / ".hadolint.yaml"),
            "--failure-threshold",
            "warning",
            "--no-color",
            str(DEPLOY / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_base_image_is_a_build_argument() -> None:
    first = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")[0]
    assert re.search(r"^ARG BASE_IMAGE=\S+", first, re.M)
    assert all(
        s[0].startswith("FROM ${BASE_IMAGE} ") or re.match(r"FROM [a-z-]+ AS ", s[0])
        for s in dockerfile_stages()
    )


def test_runtime_image_runs_sparsecl_as_non_root_with_a_grpc_healthcheck() -> None:
    runtime = dockerfile_stages()[-1]  # the default target
    assert runtime[0].endswith(" AS runtime")
    user = [i.split()[1] for i in runtime if i.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    healthcheck = next(i for i in runtime if i.startswith("HEALTHCHECK "))
    assert '"sparsecl", "health"' in healthcheck
    assert 'ENTRYPOINT ["sparsecl"]' in runtime
    exposed = " ".join(i for i in runtime if i.startswith("EXPOSE "))
    assert str(GRPC_PORT) in exposed.split()


def test_runtime_image_has_no_compiler() -> None:
    runtime = dockerfile_stages()[-1]
    assert not any(re.search(r"\b(g\+\+|gcc|build-essential)\b", i) for i in runtime)
    assert not [i for i in runtime if i.startswith("COPY ") and "--from=" not in i]


# ---- compose ----------------------------------------------------------------------------


def test_compose_has_the_stack_issue_15_names() -> None:
    assert {"postgres", "minio", "mlflow", "trainer", "inference"} <= set(compose()["services"])
    assert set(sparsecl_services()) == {"trainer", "inference"}


def test_compose_trainer_is_one_trainer() -> None:
    trainer = compose()["services"]["trainer"]
    assert trainer["environment"]["SPARSECL_ROLE"] == "trainer"
    assert trainer["deploy"]["replicas"] == 1


def test_compose_inference_replicas_are_inference() -> None:
    inference = compose()["services"]["inference"]
    assert inference["environment"]["SPARSECL_ROLE"] == "inference"
    assert inference["deploy"]["replicas"] >= 1


def test_compose_long_running_services_have_healthchecks() -> None:
    for name, service in compose()["services"].items():
        if service.get("restart") == "unless-stopped":
            assert service.get("healthcheck", {}).get("test"), name


def test_compose_sparsecl_healthcheck_asks_the_grpc_health_service() -> None:
    for name, service in sparsecl_services().items():
        assert service["healthcheck"]["test"][:3] == ["CMD", "sparsecl", "health"], name


def test_compose_dependencies_wait_for_a_condition() -> None:
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for dependency, how in depends.items():
            condition = how.get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"


def test_compose_sparsecl_settings_are_options_sparsecl_serve_has() -> None:
    for name, service in sparsecl_services().items():
        assert_known_serve_settings(name, service["environment"], compose_serve_args(service))


def test_compose_servers_read_a_private_copy_of_the_token_secret() -> None:
    for name, service in sparsecl_services().items():
        tokens = service["environment"]["SPARSECL_TOKENS"]
        line = shlex.split(" ".join(compose_args(service)))
        assert line[:3] == ["install", "-m", "600"] and line[4] == tokens, name
        assert line[3] == f"/run/secrets/{service['secrets'][0]}", name


def test_compose_puts_no_secret_on_a_command_line_or_in_the_environment() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
    for name, service in compose()["services"].items():
        for arg in compose_args(service) + service.get("entrypoint", []):
            # a URL's credentials only as $(cat /run/secrets/...), expanded inside the shell
            literal = re.sub(r"\$\$\(cat /run/secrets/\w+\)", "", arg)
            assert not URL_CREDENTIALS.search(literal), f"{name}: credentials in {arg!r}"
            assert not re.search(r"--(token|password|secret)\b", arg), f"{name}: {arg}"
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key):  # only a path to a secret file, never its value
                assert key.endswith("_FILE") or str(value).startswith("/"), f"{name}: {key}"


def test_compose_secrets_are_files_kept_out_of_git() -> None:
    secrets = compose()["secrets"]
    assert secrets
    for name, secret in secrets.items():
        assert secret["file"].startswith("./secrets/"), name
    ignore = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore


# ---- KServe (deploy/kserve/, issue 16) ------------------------------------------------------
# KServe's CRDs are not among kubernetes-validate's schemas: the ServingRuntime and the
# InferenceService are checked field by field for what KServe needs (below), and the pod
# KServe would make of them (the runtime's container with the model's fields merged onto
# it, the predictor's pod fields) against Kubernetes' core/v1 Pod.

KSERVE = DEPLOY / "kserve"
KSERVE_HTTP_PORT = 8080  # KServe's default HTTP port (constants.InferenceServiceDefaultHttpPort)
# fields of an InferenceService's model that are KServe's, not the container's
KSERVE_MODEL_FIELDS = {
    "modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storage", "storageUri"
}  # fmt: skip
# fields of a predictor that are KServe's, not the pod's
KSERVE_PREDICTOR_FIELDS = {
    "model", "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "scaleMetricType",
    "labels", "annotations", "containerConcurrency", "timeout", "canaryTrafficPercent",
    "logger", "batcher", "autoScaling", "deploymentStrategy",
}  # fmt: skip


@functools.cache
def _render_kserve() -> tuple[Doc, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(KSERVE)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize deploy/kserve failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render_kserve() -> list[Doc]:
    return list(_render_kserve())


def kserve_runtime_and_service() -> tuple[Doc, Doc]:
    docs = render_kserve()
    return one(docs, "ServingRuntime", "sparsecl"), one(docs, "InferenceService", "sparsecl")


def kserve_pod(runtime: Doc, service: Doc) -> Doc:
    """The Pod KServe makes of the InferenceService on the runtime (its merge, simplified:
    the model's container fields over the runtime's first container, the predictor's pod
    fields beside the runtime's volumes)."""
    predictor = dict(service["spec"]["predictor"])
    model = {k: v for k, v in predictor.pop("model").items() if k not in KSERVE_MODEL_FIELDS}
    containers = [dict(c) for c in runtime["spec"]["containers"]]
    containers[0] |= model
    pod_fields = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    spec = {"containers": containers, "volumes": runtime["spec"].get("volumes", [])}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{service['metadata']['name']}-predictor"},
        "spec": spec | pod_fields,
    }


def test_kserve_renders_a_runtime_a_service_and_their_network_policies() -> None:
    kinds = sorted((d["apiVersion"], d["kind"]) for d in render_kserve())
    assert kinds == [
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    ]


def test_kserve_pod_and_policies_are_valid_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    runtime, service = kserve_runtime_and_service()
    docs = [kserve_pod(runtime, service)]
    docs += [d for d in render_kserve() if d["kind"] == "NetworkPolicy"]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")


def test_kserve_runtime_follows_kserve_conventions() -> None:
    runtime, _ = kserve_runtime_and_service()
    spec = runtime["spec"]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["sparsecl"]
    container = spec["containers"][0]
    assert container["name"] == "kserve-container"  # what KServe merges the model onto
    ports = container["ports"]
    # KServe serves the first port as the predictor Service's port 80 (HTTP)
    assert ports[0]["containerPort"] == KSERVE_HTTP_PORT and "grpc" not in ports[0]["name"]
    grpc_ports = [p for p in ports if "grpc" in p["name"] or "h2c" in p["name"]]
    assert [p["containerPort"] for p in grpc_ports] == [GRPC_PORT]


def test_kserve_runtime_serves_inference_with_the_v2_protocol_on_its_ports() -> None:
    runtime, _ = kserve_runtime_and_service()
    container = runtime["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "serve"
    serve = dict(zip(args[1::2], args[2::2], strict=True))
    assert serve["--role"] == "inference"
    assert serve["--http-port"] == str(KSERVE_HTTP_PORT)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPARSECL_PORT"] == str(GRPC_PORT) and env["SPARSECL_HOST"] == "0.0.0.0"
    ports = {p["containerPort"] for p in container["ports"]}
    assert {int(env["SPARSECL_METRICS_PORT"]), GRPC_PORT, KSERVE_HTTP_PORT} == ports
    threads = next(e for e in container["env"] if e["name"] == "SPARSECL_ENGINE_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"]["containerName"] == container["name"]
    settings = {k: v for k, v in env.items() if k.startswith("SPARSECL_") and v}
    assert_known_serve_settings("ServingRuntime/sparsecl", settings, args[1:])


def test_kserve_runtime_reads_the_store_of_deploy_k8s() -> None:
    runtime, _ = kserve_runtime_and_service()
    env = {e["name"]: e.get("value") for e in runtime["spec"]["containers"][0]["env"]}
    config = one(render("dev"), "ConfigMap", "sparsecl-config")["data"]
    assert env["SPARSECL_TRACKING_URI"] == config["SPARSECL_TRACKING_URI"]
    assert env["SPARSECL_TOKENS"] == config["SPARSECL_TOKENS"]


def test_kserve_service_uses_the_runtime_without_a_storage_uri() -> None:
    runtime, service = kserve_runtime_and_service()
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in [
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    ]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert "storageUri" not in model  # the replica reads the tracking server, no initializer
    # Knative (Serverless) allows one container port; the replicas serve HTTP and gRPC
    mode = service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("RawDeployment", "Standard")
    predictor = service["spec"]["predictor"]
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


def test_kserve_probes_ask_the_v2_health_endpoints() -> None:
    runtime, _ = kserve_runtime_and_service()
    container = runtime["spec"]["containers"][0]
    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": KSERVE_HTTP_PORT}, probe


def test_kserve_pod_runs_as_non_root_hardened_with_resources() -> None:
    pod = kserve_pod(*kserve_runtime_and_service())["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context.get("runAsUser", 0) != 0
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, bound
        argv = container.get("command", []) + container.get("args", [])
        assert not any(re.match(r"--(token|password|secret)\b", a) for a in argv)
        assert not any(URL_CREDENTIALS.search(a) for a in argv)
    # the token Secret is root's and readable by the pod's group only (server/auth.py)
    tokens = next(v for v in pod["volumes"] if v["name"] == "tokens")["secret"]
    assert tokens["defaultMode"] & 0o037 == 0
    assert context["fsGroup"] == context["runAsGroup"]


def test_kserve_network_policies_open_the_predictor_and_the_tracking_server() -> None:
    docs = render_kserve()
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    predictor = {"serving.kserve.io/inferenceservice": "sparsecl"}
    assert policies["sparsecl-kserve"]["podSelector"]["matchLabels"] == predictor
    open_ports = [
        p["port"]
        for r in policies["sparsecl-kserve"]["ingress"]
        if "from" not in r
        for p in r["ports"]
    ]
    assert sorted(open_ports) == [KSERVE_HTTP_PORT, GRPC_PORT]
    mlflow = policies["sparsecl-mlflow-from-kserve"]
    assert mlflow["ingress"][0]["from"] == [{"podSelector": {"matchLabels": predictor}}]
    # it selects deploy/k8s's tracking server pods
    labels = one(render("dev"), "Deployment", "sparsecl-mlflow")["spec"]["template"]["metadata"]
    assert mlflow["podSelector"]["matchLabels"].items() <= labels["labels"].items()


def test_kserve_predictor_sets_only_fields_kserve_knows_with_their_types() -> None:
    """KServe's predictor fields used here (v1beta1 PredictorSpec: its own and the pod's),
    checked by name and type, since no offline schema of KServe's CRDs is at hand."""
    _, service = kserve_runtime_and_service()
    predictor = service["spec"]["predictor"]
    kinds = {
        "minReplicas": int,
        "maxReplicas": int,
        "scaleMetric": str,
        "scaleTarget": int,
        "automountServiceAccountToken": bool,
        "terminationGracePeriodSeconds": int,
        "securityContext": dict,
        "model": dict,
    }
    assert set(predictor) <= set(kinds), set(predictor) - set(kinds)
    for name, value in predictor.items():
        assert isinstance(value, kinds[name]), f"predictor.{name}: {value!r}"
    assert predictor["scaleMetric"] in ("cpu", "memory", "concurrency", "rps")
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    model = predictor["model"]
    assert set(model) <= {"modelFormat", "runtime", "protocolVersion", "resources", "env", "args"}
    assert model["protocolVersion"] in ("v1", "v2", "grpc-v2")
