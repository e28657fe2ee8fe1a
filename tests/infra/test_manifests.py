"""The cluster configuration under infra/, checked against what reads it. No Kubernetes, cloud or Ray cluster needed.

- infra/kuberay/*.yaml: KubeRay ray.io/v1 resources. Field names and required fields follow KubeRay's API types
  (ray-operator/apis/ray/v1: RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, RayJobSpec, RayServiceSpec) and the
  operator's own checks (controllers/ray/utils/validation.go). serveConfigV2 goes through Ray Serve's schema, the
  RayJobs' runtimeEnvYAML through RuntimeEnv, and their entrypoints through the job's own config loader.
- infra/cluster.yaml: Ray's autoscaler JSON schema, after the default-filling that `ray up` does first.
- infra/runtime_env.yaml: RuntimeEnv, and Ray's own exclude matcher run over this checkout.
- infra/setup.sh and the pods' start command: executed with DRY_RUN=1 (pip commands printed, not run).
- infra/deepspeed/*.json: DeepSpeed's ZeRO config model (which forbids unknown keys).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from pathlib import Path

import pydantic
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet

from pipelines.config import load_config
from tests.pipelines.test_config import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
# Every file in infra/kuberay and what it must be; a new manifest has to be added here to be checked.
KINDS = {
    "raycluster.yaml": ("ray.io/v1", "RayCluster"),
    "rayjob-pretrain.yaml": ("ray.io/v1", "RayJob"),
    "rayjob-finetune.yaml": ("ray.io/v1", "RayJob"),
    "rayservice.yaml": ("ray.io/v1", "RayService"),
    "shared-pvc.yaml": ("v1", "PersistentVolumeClaim"),
}
RAY_MANIFESTS = [name for name, (api, _) in KINDS.items() if api == "ray.io/v1"]
RAY_JOBS = [name for name, (_, kind) in KINDS.items() if kind == "RayJob"]
SHARED = "/shared/llava-sp"  # where every Ray pod / node mounts the shared file system
POD_CHECKOUT = "/home/ray/llava-sp"  # where every Ray pod copies the project before installing it
SERVE_IMPORT_PATH = "pipelines.serve.app:build_app"
GPU = "nvidia.com/gpu"

# Fields of KubeRay's ray.io/v1 types (v1.5). With kubectl's default strict validation the API server rejects unknown
# fields; checking here catches a misspelt or misplaced key (a RayService calls its cluster rayClusterConfig, a RayJob
# rayClusterSpec) before anyone applies it. A field a newer operator adds belongs in these sets.
SPEC_FIELDS = {
    "RayCluster": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions",
                   "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions", "authOptions"},
    "RayJob": {"entrypoint", "runtimeEnvYAML", "rayClusterSpec", "clusterSelector", "submissionMode",
               "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
               "submitterPodTemplate", "submitterConfig", "metadata", "jobId", "entrypointNumCpus",
               "entrypointNumGpus", "entrypointResources", "suspend", "managedBy", "deletionStrategy"},
    "RayService": {"serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy",
                   "excludeHeadPodFromServeSvc", "rayClusterDeletionDelaySeconds"},
}
HEAD_GROUP_FIELDS = {"template", "rayStartParams", "serviceType", "headService", "enableIngress", "resources", "labels"}
WORKER_GROUP_FIELDS = {"groupName", "template", "rayStartParams", "replicas", "minReplicas", "maxReplicas",
                       "numOfHosts", "idleTimeoutSeconds", "scaleStrategy", "suspend", "resources", "labels"}
# KubeRay appends a 6-character suffix to RayJob/RayService names for their RayCluster (at most 53 characters).
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47, "PersistentVolumeClaim": 253}
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
RAY_IMAGE = re.compile(r"rayproject/ray(-ml)?:(?P<ray>\d+\.\d+\.\d+)-py(?P<python>3\d+)-(gpu|cu\d+)")


@functools.cache
def load_yaml(path: Path) -> dict:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1, f"{path.name}: {len(documents)} YAML documents, expected one"
    return documents[0]


def manifest(name: str) -> dict:
    return copy.deepcopy(load_yaml(KUBERAY / name))


def cluster_spec(resource: dict) -> dict:
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[resource["kind"]]
    return resource["spec"] if key is None else resource["spec"][key]


def groups(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first one


def env_of(container: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def gpus_per_pod(group: dict) -> int:
    return int(ray_container(group)["resources"]["limits"].get(GPU, 0))


def first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def bash(*arguments: str, **settings: str) -> subprocess.CompletedProcess:
    """bash with DRY_RUN=1 (setup.sh prints its pip commands instead of running them), installing into this Python."""
    environment = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, **settings}
    return subprocess.run(["bash", *arguments], check=False, env=environment, capture_output=True, text=True,
                          timeout=120)


def training_configs() -> list[Path]:
    """infra/configs/*.yaml run by jobs/pretrain.py or jobs/finetune.py (their first line says which)."""
    return [path for path in sorted((INFRA / "configs").glob("*.yaml"))
            if re.match(r"# python jobs/(pretrain|finetune)\.py ", first_line(path))]


# ------------------------------------------------------------------------------------------------------------------
# Every file, and the command that uses it


def test_every_cluster_file_is_known_and_checked():
    found = {str(path.relative_to(INFRA)) for path in INFRA.rglob("*.yaml")
             if path.relative_to(INFRA).parts[0] != "configs"}  # job configs: tests/pipelines/test_config.py
    expected = {"cluster.yaml", "runtime_env.yaml", *(f"kuberay/{name}" for name in KINDS),
                "logging/ray-data-quiet.yaml"}  # checked by tests/pipelines/test_output.py
    assert found == expected, "a YAML under infra/ that nothing checks (add it to KINDS), or a missing one"


@pytest.mark.parametrize("relative", [f"kuberay/{name}" for name in KINDS] + ["cluster.yaml", "runtime_env.yaml"])
def test_first_line_is_the_command_that_uses_the_file(relative):
    line = first_line(INFRA / relative)
    if relative.startswith("kuberay/"):
        # A RayJob runs once: `apply` on a finished one changes nothing, `create` says it exists.
        verb = "create" if KINDS[relative.removeprefix("kuberay/")][1] == "RayJob" else "apply"
        assert line == f"# kubectl {verb} -f infra/{relative}"
    elif relative == "cluster.yaml":
        assert re.match(r"# ray up infra/cluster\.yaml(\s|$)", line), line
    else:
        match = re.match(r"# ray job submit .*--runtime-env infra/runtime_env\.yaml -- python (jobs/\w+\.py)", line)
        assert match, line
        assert (ROOT / match.group(1)).is_file(), f"{match.group(1)} does not exist"


@pytest.mark.parametrize("name", KINDS)
def test_kuberay_resource_has_its_api_kind_and_a_valid_name(name):
    resource = manifest(name)
    assert (resource["apiVersion"], resource["kind"]) == KINDS[name]
    resource_name = resource["metadata"]["name"]
    assert DNS_1035_LABEL.fullmatch(resource_name), f"{resource_name!r} is not a DNS-1035 label"
    assert len(resource_name) <= MAX_NAME_LENGTH[resource["kind"]]
    others = [manifest(other)["metadata"]["name"] for other in KINDS if other != name]
    # RayCluster llava-sp and a RayService llava-sp would both create the Service llava-sp-head-svc.
    assert resource_name not in others


# ------------------------------------------------------------------------------------------------------------------
# KubeRay resources


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_cluster_spec_fits_the_kuberay_crd(name):
    resource = manifest(name)
    kind = resource["kind"]
    assert set(resource["spec"]) <= SPEC_FIELDS[kind], f"not in {kind}Spec: {set(resource['spec']) - SPEC_FIELDS[kind]}"
    cluster = cluster_spec(resource)
    assert set(cluster) <= SPEC_FIELDS["RayCluster"], set(cluster) - SPEC_FIELDS["RayCluster"]
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
    names = [group["groupName"] for group in cluster["workerGroupSpecs"]]
    assert len(names) == len(set(names)) >= 1, names
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
        assert DNS_1035_LABEL.fullmatch(group["groupName"])
        replicas = [group["minReplicas"], group.get("replicas", group["minReplicas"]), group["maxReplicas"]]
        assert all(type(count) is int for count in replicas), replicas
        assert 0 <= replicas[0] <= replicas[1] <= replicas[2], f"{group['groupName']}: min <= replicas <= max"
    for group in groups(cluster):
        # map[string]string in the CRD: an unquoted 0 or true would be rejected by the API server.
        params = group["rayStartParams"]
        assert all(isinstance(value, str) for value in params.values()), params
        assert group["template"]["spec"]["containers"], "every group needs its Ray container"
    # Anyone reaching the dashboard could run code on the GPUs: token authentication on every cluster.
    assert cluster["authOptions"] == {"mode": "token"}


@pytest.mark.parametrize("name", [*RAY_MANIFESTS, "cluster.yaml"])
def test_ray_version_and_every_image_match_the_installed_ray(name):
    if name == "cluster.yaml":
        docker = load_yaml(INFRA / name)["docker"]
        images = [docker[key] for key in ("image", "head_image", "worker_image") if key in docker]
    else:
        cluster = cluster_spec(manifest(name))
        assert cluster["rayVersion"] == ray.__version__
        images = [container["image"] for group in groups(cluster)
                  for container in [*group["template"]["spec"]["containers"],
                                    *group["template"]["spec"].get("initContainers", [])]]
        images += [cluster["autoscalerOptions"]["image"]] if "image" in cluster.get("autoscalerOptions", {}) else []
    requires_python = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert images
    for image in images:
        match = RAY_IMAGE.fullmatch(image)
        assert match, f"{image}: expected rayproject/ray:<ray>-py3XX-gpu (a pinned tag, not latest)"
        assert match["ray"] == ray.__version__, f"{image} runs Ray {match['ray']}; this project runs {ray.__version__}"
        python = f"{match['python'][0]}.{match['python'][1:]}"
        assert python in requires_python, f"{image} has Python {python}; pyproject needs {requires_python}"


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_pods_install_the_project_before_ray_starts_and_match_the_raycluster(name):
    resource = manifest(name)
    # Without it KubeRay would replace our command with its own `ray start` and the install would never run.
    assert resource["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    reference_group = manifest("raycluster.yaml")["spec"]["headGroupSpec"]
    reference = ray_container(reference_group)
    for group in groups(cluster_spec(resource)):
        container = ray_container(group)
        assert container["command"] == ["/bin/bash", "-lc", "--"]
        (script,) = container["args"]
        steps = ["ulimit -n 65536", f"tar -C {SHARED}/src", f"bash {POD_CHECKOUT}/infra/setup.sh {POD_CHECKOUT}",
                 "$KUBERAY_GEN_RAY_START_CMD"]
        positions = [script.find(step) for step in steps]
        assert -1 not in positions and positions == sorted(positions), f"expected in this order: {steps}"
        assert script.endswith("$KUBERAY_GEN_RAY_START_CMD")
        # One pod setup everywhere: the copies of the template must not drift apart.
        for key in ("image", "command", "args", "volumeMounts"):
            assert container[key] == reference[key], f"{name}: {key} differs from raycluster.yaml"
        assert group["template"]["spec"]["volumes"] == reference_group["template"]["spec"]["volumes"]
        assert env_of(reference).items() <= env_of(container).items(), f"{name}: env lacks raycluster.yaml's"


def test_pod_start_command_copies_the_checkout_without_outputs_then_installs_then_starts_ray(tmp_path):
    script = ray_container(manifest("raycluster.yaml")["spec"]["headGroupSpec"])["args"][0]
    script = script.replace(SHARED, str(tmp_path / "shared")).replace(POD_CHECKOUT, str(tmp_path / "pod"))
    source = tmp_path / "shared" / "src"
    (source / "infra").mkdir(parents=True)
    shutil.copy(INFRA / "setup.sh", source / "infra" / "setup.sh")
    kept = ["infra/setup.sh", "jobs/pretrain.py", "pipelines/runs.py"]
    dropped = [".git/HEAD", ".venv/bin/python", "runs/train/checkpoint_0/x", "mlruns/0/meta.yaml", "mlflow.db"]
    for relative in kept[1:] + dropped:
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text("x")

    result = bash("-c", script, KUBERAY_GEN_RAY_START_CMD="echo ray-start")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and "torch==" in lines[0] and lines[2] == "ray-start", lines
    assert f"-e {tmp_path / 'pod'}[real] " in lines[1], lines[1]
    assert all((tmp_path / "pod" / relative).is_file() for relative in kept)
    assert not [relative for relative in dropped if (tmp_path / "pod" / relative).exists()]

    shutil.rmtree(source)  # no checkout on the volume: the pod must fail, not start an empty Ray node
    result = bash("-c", script, KUBERAY_GEN_RAY_START_CMD="echo ray-start")
    assert result.returncode != 0 and "ray-start" not in result.stdout


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_gpu_workers_get_whole_h100s_and_the_head_none(name):
    cluster = cluster_spec(manifest(name))
    head = ray_container(cluster["headGroupSpec"])["resources"]
    assert GPU not in head.get("limits", {}) and GPU not in head.get("requests", {})
    # The head only coordinates: tasks and actors (training workers, replicas) go to GPU pods.
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for group in cluster["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        resources = ray_container(group)["resources"]
        # Extended resources cannot be overcommitted: the API server requires requests == limits for GPUs.
        assert type(resources["limits"][GPU]) is int and resources["limits"][GPU] >= 1
        assert resources["requests"] == resources["limits"], "requests = limits (no eviction, GPU rule)"
        assert "H100" in pod["nodeSelector"]["nvidia.com/gpu.product"]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        shm = {volume["name"]: volume for volume in pod["volumes"]}
        mount = next(mount for mount in ray_container(group)["volumeMounts"] if mount["mountPath"] == "/dev/shm")
        assert shm[mount["name"]]["emptyDir"] == {"medium": "Memory"}, "NCCL needs /dev/shm beyond Docker's 64 MiB"


@pytest.mark.parametrize("name", RAY_MANIFESTS)
def test_every_ray_pod_mounts_the_shared_volume_that_holds_runs_and_gets_mlflow_from_a_secret(name):
    claim = manifest("shared-pvc.yaml")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "pods on many nodes mount it at once"
    for group in groups(cluster_spec(manifest(name))):
        container = ray_container(group)
        volumes = {volume["name"]: volume for volume in group["template"]["spec"]["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        environment = env_of(container)
        # A tracking URI can carry credentials: it comes from a Secret, never a literal in the manifest.
        assert "value" not in environment["MLFLOW_TRACKING_URI"]
        assert environment["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["key"] == "MLFLOW_TRACKING_URI"
        for variable in ("HF_HOME", "LLAVA_SP_HOME", "PIP_CACHE_DIR"):
            assert environment[variable]["value"].startswith(f"{SHARED}/"), variable
    assert training_configs()
    for config in training_configs():
        # Ray Train's checkpoints must be on storage every node sees.
        assert load_yaml(config)["storage_path"].startswith(f"{SHARED}/"), config.name


@pytest.mark.parametrize("name", RAY_JOBS)
def test_rayjob_entrypoint_runs_a_job_whose_config_binds_and_fits_its_cluster(name):
    resource = manifest(name)
    spec = resource["spec"]
    entrypoint = spec["entrypoint"]
    # KubeRay pastes the entrypoint unquoted into the submitter's shell line (`ray job submit ... -- <entrypoint> ;`):
    # `&&`, `;`, `|`, `<...>` or `$X` would act in the submitter pod, not in the job.
    assert not re.search(r"[;&|<>`$()\\\n]", entrypoint), entrypoint
    python, job, option, config_path, *overrides = shlex.split(entrypoint)
    assert (python, option) == ("python", "--config")
    assert re.fullmatch(r"jobs/\w+\.py", job) and (ROOT / job).is_file(), job
    assert re.fullmatch(r"infra/configs/[\w.-]+\.yaml", config_path) and (ROOT / config_path).is_file(), config_path
    assert all("=" in override for override in overrides), overrides
    config = load_config(SCHEMAS[job], ROOT / config_path, overrides)
    assert config.stage == Path(job).stem, f"{config_path} is stage={config.stage}, run by {job}"
    paths = {key: value for key, value in (override.split("=", 1) for override in overrides)
             if key in ("model", "data", "init_from")}
    paths["storage_path"] = config.storage_path
    assert {"model", "data"} <= set(paths) and all(path.startswith(f"{SHARED}/") for path in paths.values()), paths

    workers = cluster_spec(resource)["workerGroupSpecs"]
    assert config.use_gpu
    total_gpus = sum(group["replicas"] * gpus_per_pod(group) for group in workers)
    total_cpus = sum(group["replicas"] * cpus(ray_container(group)["resources"]["limits"]["cpu"]) for group in workers)
    # Ray Train waits forever for workers the cluster cannot place; this cluster does not autoscale.
    assert config.num_workers <= total_gpus, f"{config.num_workers} GPU workers, {total_gpus} GPUs"
    assert config.num_workers * config.cpus_per_worker <= total_cpus

    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) <= RuntimeEnv.known_fields, set(runtime_env) - RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)
    assert runtime_env["working_dir"] == f"local://{POD_CHECKOUT}", "the checkout every pod copied and installed"
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True


def serve_application() -> tuple[dict, dict]:
    serve_config = yaml.safe_load(manifest("rayservice.yaml")["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    return serve_config, application


def test_rayservice_serve_config_is_a_valid_serve_deployment_reachable_in_the_pod():
    from ray.runtime_env import RuntimeEnv
    from ray.serve.schema import (
        HTTPOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    assert isinstance(manifest("rayservice.yaml")["spec"]["serveConfigV2"], str), "KubeRay takes a YAML string"
    serve_config, application = serve_application()
    parsed = ServeDeploySchema.model_validate(serve_config)
    # Serve ignores unknown keys (forward compatibility), so a typo would be silently dropped: check them here.
    assert set(serve_config) <= set(ServeDeploySchema.model_fields), set(serve_config)
    assert set(serve_config["http_options"]) <= set(HTTPOptionsSchema.model_fields)
    assert set(application) <= set(ServeApplicationSchema.model_fields), set(application)

    assert application["import_path"] == SERVE_IMPORT_PATH
    # 127.0.0.1 would be unreachable from the Service and KubeRay's health checks, which use the pod IP.
    assert parsed.http_options.host == parsed.applications[0].host == application["args"]["host"] == "0.0.0.0"
    assert application["runtime_env"]["working_dir"] == f"local://{POD_CHECKOUT}"
    RuntimeEnv(**application["runtime_env"])

    args = application["args"]
    assert {"models", "max_batch_size", "max_waiting", "api_key_env", "host"} <= set(args)
    assert args["models"]
    assert all(model["name"] and model["source"].startswith(f"{SHARED}/") for model in args["models"])
    cluster = cluster_spec(manifest("rayservice.yaml"))
    for group in groups(cluster):
        # Replicas can land on any pod, and the endpoint listens on all interfaces: the key must be everywhere.
        key = env_of(ray_container(group))[args["api_key_env"]]
        assert "value" not in key and key["valueFrom"]["secretKeyRef"]["key"], "the API key comes from a Secret"

    workers = cluster["workerGroupSpecs"]
    most_gpus = sum(group["maxReplicas"] * gpus_per_pod(group) for group in workers)
    wanted = sum((model["max_replicas"] if model["num_replicas"] == "auto" else model["num_replicas"])
                 * model["gpus_per_replica"] for model in args["models"])
    assert 0 < wanted <= most_gpus, f"replicas want {wanted} GPUs, the cluster grows to {most_gpus}"
    for model in args["models"]:
        assert any(model["gpus_per_replica"] <= gpus_per_pod(group)
                   and model["cpus_per_replica"] <= cpus(ray_container(group)["resources"]["limits"]["cpu"])
                   for group in workers), f"no worker pod can hold a replica of {model['name']}"


def test_rayservice_app_builder_imports_and_accepts_the_args(tmp_path):
    module_name, attribute = SERVE_IMPORT_PATH.split(":")
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:  # its package is missing too
        found = None
    if found is None:
        pytest.skip(f"{module_name} is not written yet")
    builder = getattr(importlib.import_module(module_name), attribute)  # a broken module fails here, not skips
    # What Ray Serve requires of an application builder (ray.serve._private.api).
    assert isinstance(builder, types.FunctionType) and len(inspect.signature(builder).parameters) == 1
    (parameter,) = inspect.signature(builder).parameters
    annotation = typing.get_type_hints(builder).get(parameter)
    schemas = [candidate for candidate in (typing.get_args(annotation) or (annotation,))
               if dataclasses.is_dataclass(candidate)
               or (inspect.isclass(candidate) and issubclass(candidate, pydantic.BaseModel))]
    assert schemas, f"{SERVE_IMPORT_PATH}'s parameter names no schema to check the RayService args against"
    args = serve_application()[1]["args"]
    if dataclasses.is_dataclass(schemas[0]):
        (tmp_path / "args.yaml").write_text(yaml.safe_dump(args))
        load_config(schemas[0], tmp_path / "args.yaml")  # the loader jobs use: unknown keys and bad types fail
    else:
        schemas[0].model_validate(args)  # what Ray Serve itself does with a pydantic annotation


# ------------------------------------------------------------------------------------------------------------------
# ray up, runtime_env, setup.sh


def test_cluster_yaml_passes_ray_autoscaler_validation_and_can_run_the_paper_configs():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(INFRA / "cluster.yaml")
    prepared = prepare_config(copy.deepcopy(config))  # `ray up` fills in the provider's defaults first
    validate_config(prepared)  # ray/autoscaler/ray-schema.json (jsonschema) and the node-type rules

    assert config["file_mounts"]["~/llava-sp"] == "."
    assert "bash ~/llava-sp/infra/setup.sh ~/llava-sp" in prepared["worker_setup_commands"]
    assert "bash ~/llava-sp/infra/setup.sh ~/llava-sp" in prepared["head_setup_commands"]
    assert f"-v {SHARED}:{SHARED}" in config["docker"]["run_options"]
    assert any(SHARED in command for command in config["initialization_commands"])
    assert config["idle_timeout_minutes"] > 0
    # MLflow's URI comes from the env file file_mounts ships, sourced before Ray starts on every node.
    env_file = next(remote for remote, local in config["file_mounts"].items() if local.endswith(".env"))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any(f". {env_file}" in command and "ray start" in command for command in config[key]), key

    node_types = prepared["available_node_types"]
    assert node_types[prepared["head_node_type"]]["resources"] == {"CPU": 0}
    for config_path in training_configs():
        train = load_yaml(config_path)
        fitting = [name for name, node in node_types.items() if node["max_workers"] > 0
                   and node["resources"].get("GPU", 0) * node["max_workers"] >= train["num_workers"]]
        assert fitting, f"no node type can hold the {train['num_workers']} GPU workers of {config_path.name}"
    runtime_excludes = {pattern.strip("/") for pattern in load_yaml(INFRA / "runtime_env.yaml")["excludes"]}
    assert {".venv", "runs", "mlruns", "*.db"} <= set(config["rsync_exclude"]) & runtime_excludes


def test_runtime_env_yaml_is_a_runtime_env_that_uploads_the_code_and_nothing_else():
    from ray._private.runtime_env.packaging import (
        PACKAGE_SIZE_WARNING,
        _dir_travel,
        _get_excludes,
    )
    from ray.runtime_env import RuntimeEnv

    runtime_env = load_yaml(INFRA / "runtime_env.yaml")
    # RuntimeEnv takes unknown keys as plugin names, so check the keys too.
    assert set(runtime_env) <= RuntimeEnv.known_fields, set(runtime_env) - RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)
    assert runtime_env["working_dir"] == "."
    assert not {"pip", "conda", "uv"} & set(runtime_env), "dependencies come from infra/setup.sh on the nodes"
    assert runtime_env["env_vars"]["LLAVA_SP_HOME"].startswith(f"{SHARED}/")

    excluded = _get_excludes(ROOT, runtime_env["excludes"])  # Ray's matcher (gitignore syntax), .gitignore aside
    for path in ("runs/train/x.pt", ".venv/bin/python", "mlruns/0/meta.yaml", "mlflow.db", "sub/dir/other.db",
                 ".git/HEAD", "llava_sp_ray.egg-info/PKG-INFO"):
        assert excluded(ROOT / path), f"{path} would be uploaded with every job"
    for path in ("jobs/pretrain.py", "infra/configs/pretrain-paper.yaml", "infra/deepspeed/zero2.json",
                 "sp_core/modeling.py", "pipelines/train/job.py", "pyproject.toml"):
        assert not excluded(ROOT / path), f"{path} would be missing on the cluster"

    sizes = []  # what `ray job submit` would zip from this checkout (it also honours .gitignore by default)
    _dir_travel(ROOT, [excluded], lambda path: sizes.append(path.stat().st_size if path.is_file() else 0),
                include_gitignore=True)
    assert sum(sizes) < PACKAGE_SIZE_WARNING, f"this checkout would upload {sum(sizes) / 2**20:.0f} MiB"


def test_setup_sh_is_valid_bash():
    result = bash("-n", str(INFRA / "setup.sh"))
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in (INFRA / "setup.sh").read_text().splitlines()[:20]


def test_setup_sh_installs_cuda_torch_before_the_project_and_keeps_the_node_ray():
    result = bash(str(INFRA / "setup.sh"))
    assert result.returncode == 0, result.stderr
    torch_install, project_install = result.stdout.splitlines()
    tested_torch = importlib.metadata.version("torch").split("+")[0]  # the cluster runs the torch the tests ran
    assert f"pip install torch=={tested_torch} --index-url https://download.pytorch.org/whl/cu128" in torch_install
    assert project_install.endswith(f"pip install -e {ROOT}[real] ray[train,data,serve]=={ray.__version__}")
    assert "download.pytorch.org/whl/cu126" in bash(str(INFRA / "setup.sh"), TORCH_CUDA="cu126").stdout.splitlines()[0]

    missing_ray = bash(str(INFRA / "setup.sh"), PYTHON="false")
    assert missing_ray.returncode == 1 and "RAY_VERSION" in missing_ray.stderr and not missing_ray.stdout


# ------------------------------------------------------------------------------------------------------------------
# DeepSpeed


@pytest.mark.parametrize(("name", "stage", "offload"), [("zero2", 2, False), ("zero3", 3, False),
                                                        ("zero3_offload", 3, True)])
def test_deepspeed_config_has_the_stage_it_is_named_after_and_offloads_only_if_named_so(name, stage, offload):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = json.loads((INFRA / "deepspeed" / f"{name}.json").read_text())["zero_optimization"]
    assert zero["stage"] == stage
    offloaded = {key: zero[key]["device"] for key in ("offload_optimizer", "offload_param") if key in zero}
    assert offloaded == ({"offload_optimizer": "cpu", "offload_param": "cpu"} if offload else {})
    # "auto" is filled in (or dropped for DeepSpeed's default) by pipelines.train.launch.deepspeed_config.
    DeepSpeedZeroConfig(**{key: value for key, value in zero.items() if value != "auto"})
