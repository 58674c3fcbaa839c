"""The platform image (Dockerfile) against the code location and the Helm release that runs it.

No container engine runs here, so the image itself is not built: the Dockerfile is
parsed (stages, pinned base, non-root user, install order, entry command), its
entry command is checked against the Helm values the program declares and the
code location, and the same command is run locally until it answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aegis_infra import platform as P
from aegis_infra.stack_file import cli_config

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
GRPC_READY_TIMEOUT_S = 240
DAGSTER = Path(sys.executable).with_name("dagster")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and op == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{op} before the first FROM"
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arg
    return value


def option(argv: list[str], *names: str) -> str:
    for i, a in enumerate(argv):
        if a in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def image_cmd(stages: list[Stage]) -> list[str]:
    (cmd,) = stages[-1].all("CMD")
    assert not stages[-1].all("ENTRYPOINT"), "an ENTRYPOINT would wrap the Deployments' commands"
    return exec_form(cmd)


# ------------------------------------------------------------------ the Dockerfile itself
def test_multi_stage_with_a_pinned_base_and_a_non_root_user(dockerfile) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2 and stages[0].name == "build"
    for stage in stages:
        assert stage.base.startswith("python:") or "@sha256:" in stage.base, stage.base
        pinned = "@sha256:" in stage.base or re.fullmatch(r"python:\d+\.\d+\.\d+-[a-z]+-[a-z]+", stage.base)
        assert pinned and "latest" not in stage.base, f"base not pinned: {stage.base}"
    # the interpreter the tests run on is the one the image ships
    assert stages[-1].base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}.")
    final = stages[-1]
    assert any("--from=build" in c for c in final.all("COPY")), "the runtime stage copies the built venv"
    assert not any(re.search(r"\b(gcc|build-essential|apt-get install)\b", r) for r in final.all("RUN"))
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid not in {"root", "0"} and uid.isdigit() and int(uid) >= 1000
    pods = {10001}  # runAsUser of the platform's Deployments
    assert int(uid) in pods


def test_torch_cpu_first_then_the_project_with_the_dagster_deployment_extras(dockerfile) -> None:
    _, stages = dockerfile
    runs = " && ".join(stages[0].all("RUN"))
    torch_at = runs.index('"torch==${TORCH_VERSION}"')
    project_at = runs.index("pip install -e .")
    assert torch_at < project_at
    assert dockerfile[0]["TORCH_VERSION"] == "2.13.0" and dockerfile[0]["TORCH_INDEX"].endswith("/whl/cpu")
    install = runs[project_at:].split("&&")[0]
    assert {"dagster-postgres", "dagster-k8s", "dagster-aws"} <= set(install.split())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.13,<2.14"' in pyproject and '"dagster-k8s' in pyproject


def test_the_build_context_holds_what_the_image_copies_and_no_local_state(dockerfile) -> None:
    _, stages = dockerfile
    copied = [c.split()[0].rstrip("/") for c in stages[0].all("COPY") if not c.startswith("--from")]
    lines = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "deny by default"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for path in copied:
        assert path in allowed and (REPO / path).exists(), path
    assert not allowed & {".venv", ".aegis", "tests", "infrastructure", ".git"}


# ------------------------------------------------------------------ image, Helm values, code location agree
def test_entry_command_serves_the_code_location_the_helm_release_names(
    dockerfile, graph: dict[str, Any]
) -> None:
    _, stages = dockerfile
    cmd = image_cmd(stages)
    assert cmd[:3] == ["dagster", "api", "grpc"]
    module = option(cmd, "--module-name", "-m")
    port = int(option(cmd, "--port", "-p"))
    assert option(cmd, "--host", "-h") == "0.0.0.0"
    assert str(port) in stages[-1].all("EXPOSE")
    (health,) = stages[-1].all("HEALTHCHECK")
    assert f'--port", "{port}"' in health
    # the code location module exists (and imports: see the live test below)
    assert importlib.util.find_spec(module) is not None
    assert (module, port) == (P.USER_CODE_MODULE, P.USER_CODE_PORT)
    release = next(
        r
        for r in graph["resources"]
        if r["type"] == "kubernetes:helm.sh/v3:Release" and r["inputs"]["chart"] == "dagster"
    )
    (dep,) = release["inputs"]["values"]["dagster-user-deployments"]["deployments"]
    assert option(dep["dagsterApiGrpcArgs"], "--module-name", "-m") == module
    assert dep["port"] == port
    config = cli_config(graph["stack"])
    assert dep["image"]["repository"] == config["aegis:imageRepository"]
    assert dep["image"]["tag"] == config["aegis:imageTag"]


def test_the_instance_storage_uses_the_driver_the_prod_profile_uses(graph: dict[str, Any]) -> None:
    """The chart's dagster.yaml and `pipelines.profiles.prod_instance_config` name one driver
    (dagster-postgres's NOTIFY needs psycopg2; a bare postgresql:// is psycopg 3 under SQLAlchemy 2.1)."""
    from pipelines.profiles import DAGSTER_PG_SCHEME

    release = next(
        r
        for r in graph["resources"]
        if r["type"] == "kubernetes:helm.sh/v3:Release" and r["inputs"]["chart"] == "dagster"
    )
    assert (
        release["inputs"]["values"]["postgresql"]["postgresqlScheme"]
        == DAGSTER_PG_SCHEME
        == "postgresql+psycopg2"
    )
    import sqlalchemy as sa

    assert sa.make_url(f"{DAGSTER_PG_SCHEME}://u@h/d").get_dialect().driver == "psycopg2"


def test_the_run_queue_limits_are_the_platforms_everywhere(graph: dict[str, Any]) -> None:
    from aegis.stack import RUN_TAG_LIMITS
    from pipelines.profiles import prod_instance_config
    from pipelines.stack_outputs import PROD_SECRET_ENV, STACK_OUTPUT_ENV

    release = next(
        r
        for r in graph["resources"]
        if r["type"] == "kubernetes:helm.sh/v3:Release" and r["inputs"]["chart"] == "dagster"
    )
    queued = release["inputs"]["values"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["tagConcurrencyLimits"] == RUN_TAG_LIMITS
    env = {var: "x" for var in [*STACK_OUTPUT_ENV.values(), *PROD_SECRET_ENV]}
    assert prod_instance_config(env)["run_coordinator"]["config"]["tag_concurrency_limits"] == RUN_TAG_LIMITS


def test_every_platform_container_runs_the_configured_image(graph: dict[str, Any]) -> None:
    config = cli_config(graph["stack"])
    image = f"{config['aegis:imageRepository']}:{config['aegis:imageTag']}"
    deployments = [r for r in graph["resources"] if r["type"] == "kubernetes:apps/v1:Deployment"]
    assert deployments
    for d in deployments:
        spec = d["inputs"]["spec"]["template"]["spec"]
        assert [c["image"] for c in spec["containers"]] == [image]
        assert (
            spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        )


def test_alert_receiver_runs_the_real_receiver_command(graph: dict[str, Any]) -> None:
    from aegis.alerts.cli import alerts

    (dep,) = [
        r
        for r in graph["resources"]
        if r["type"] == "kubernetes:apps/v1:Deployment"
        and r["inputs"]["metadata"]["name"] == "alert-receiver"
    ]
    (container,) = dep["inputs"]["spec"]["template"]["spec"]["containers"]
    cmd = container["command"]
    assert cmd == ["aegis", "alerts", "serve", "--host", "0.0.0.0", "--port", "8766"]
    # the command exists in the CLI with these options, and its default port is the platform's alerts port
    serve = alerts.commands["serve"]
    params = {p.name: p for p in serve.params}
    assert {"host", "port"} <= set(params)
    config_src = (REPO / "aegis" / "config.py").read_text()
    assert 'ALERTS_PORT = int(os.environ.get("AEGIS_ALERTS_PORT", "8766"))' in config_src
    port = int(option(cmd, "--port"))
    assert container["ports"] == [{"containerPort": port, "name": "http"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health"
    assert {"secretRef": {"name": P.SERVICE_TOKENS_SECRET}} in container["envFrom"]
    (svc,) = [
        r
        for r in graph["resources"]
        if r["type"] == "kubernetes:core/v1:Service" and r["inputs"]["metadata"]["name"] == "alert-receiver"
    ]
    assert svc["inputs"]["spec"]["ports"][0]["port"] == port


# ------------------------------------------------------------------ the entry command, run here
def test_the_image_entry_command_serves_and_answers_locally(dockerfile, tmp_path: Path) -> None:
    """The CMD as the image runs it (loopback and a free port instead of 0.0.0.0:3030) reaches SERVING."""
    cmd = image_cmd(dockerfile[1])
    port = free_port()
    argv = [str(DAGSTER) if a == "dagster" else a for a in cmd]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = os.environ | {"AEGIS_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    log = (tmp_path / "grpc.log").open("w")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    health = [str(DAGSTER), "api", "grpc-health-check", "--port", str(port)]
    try:
        deadline = time.monotonic() + GRPC_READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"{shlex.join(argv)} exited:\n{(tmp_path / 'grpc.log').read_text()}"
            check = subprocess.run(health, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, f"not serving after {GRPC_READY_TIMEOUT_S}s:\n{check.stdout}"
            time.sleep(2)
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import ListRepositoriesResponse
        from dagster._serdes import deserialize_value

        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        assert client.ping("aegis")["echo"] == "aegis"
        listed = deserialize_value(client.list_repositories())
        assert isinstance(listed, ListRepositoriesResponse), listed  # not an error from loading the code
        assert listed.repository_symbols, "the code location serves no repository"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
