"""Run the real Pulumi entry (``infrastructure/__main__.py``) for one stack under mocks; record the graph.

What ``pulumi up`` does, minus the engine and the cloud:

* the stack file's config reaches the program the way the Python language host
  passes it, in ``PULUMI_CONFIG`` (``{"aegis:key": "string"}``, structures as JSON
  text) and ``PULUMI_CONFIG_SECRET_KEYS``; the program reads it through
  ``pulumi.Config`` (``aegis_infra.config.load_settings``);
* ``pulumi.runtime.set_mocks`` stands in for the engine, with a monitor that
  records every registration (type, name, inputs, region through its provider,
  parent, property dependencies) and answers with plausible provider outputs;
* ``__main__.py`` runs as the language host runs it (cwd and ``sys.path`` at
  ``infrastructure/``), and the stack outputs are what it ``pulumi.export``-ed.

    python tests/infrastructure/stack_runner.py prod --out /tmp/prod.json

One stack per process: Pulumi keeps runtime state in module globals. The
CrossGuard pack runs over the written graph (``aegis_guard.offline``).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO / "infrastructure"
ENTRY = INFRA_DIR / "__main__.py"
PROJECT = "aegis"
MOCK_ACCOUNT = "123456789012"
MOCK_PASSWORD = "mock-password-not-a-secret-0123456789abcd"
STACKS = ("dev", "prod")
RUN_TIMEOUT_S = 600


def start_stack(stack: str, out: Path, env: dict[str, str] | None = None, *extra: str) -> subprocess.Popen:
    """Start this runner for ``stack`` in a fresh interpreter; ``env`` replaces the environment."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), stack, "--out", str(out), *extra],
        cwd=REPO,
        env=env if env is not None else {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, out: Path) -> tuple[int, str, dict[str, Any] | None]:
    """Wait for a runner; return (exit code, stderr, graph or None)."""
    _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    graph = json.loads(out.read_text()) if proc.returncode == 0 else None
    return proc.returncode, err, graph


def _arn(service: str, region: str, name: str) -> str:
    return f"arn:aws:{service}:{region}:{MOCK_ACCOUNT}:{name}"


def mock_outputs(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible provider outputs, so the program can wire resources together under mocks."""
    out = dict(inputs)
    service = typ.split(":")[1].split("/")[0] if typ.count(":") >= 2 else "mock"
    out.setdefault("arn", _arn(service, region, name))
    if typ == "aws:s3/bucket:Bucket":
        out["bucket"] = inputs.get("bucket") or name
        out["arn"] = f"arn:aws:s3:::{out['bucket']}"
    elif typ == "aws:eks/cluster:Cluster":
        out["endpoint"] = f"https://{name}.eks.{region}.amazonaws.com"
        out["certificateAuthority"] = {"data": "bW9jay1jYQ=="}
        out["identities"] = [
            {"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{name.upper()}"}]}
        ]
        out["vpcConfig"] = {**(inputs.get("vpcConfig") or {}), "clusterSecurityGroupId": f"sg-{name}"}
    elif typ == "aws:eks/nodeGroup:NodeGroup":
        out["nodeGroupName"] = name
        out["resources"] = [{"autoscalingGroups": [{"name": f"eks-{name}-asg"}]}]
    elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
        out["latestVersion"] = 1
    elif typ == "aws:sqs/queue:Queue":
        out["url"] = f"https://sqs.{region}.amazonaws.com/{MOCK_ACCOUNT}/{name}"
        out["arn"] = _arn("sqs", region, name)
    elif typ == "aws:rds/cluster:Cluster":
        ident = inputs.get("clusterIdentifier") or name
        out["clusterIdentifier"] = ident
        out["endpoint"] = f"{ident}.cluster-mock.{region}.rds.amazonaws.com"
        out["readerEndpoint"] = f"{ident}.cluster-ro-mock.{region}.rds.amazonaws.com"
        out["arn"] = _arn("rds", region, f"cluster:{ident}")
    elif typ == "aws:rds/globalCluster:GlobalCluster":
        out["endpoint"] = (
            f"{inputs.get('globalClusterIdentifier', name)}.global-mock.global.rds.amazonaws.com"
        )
    elif typ == "aws:glue/catalogDatabase:CatalogDatabase":
        out["arn"] = _arn("glue", region, f"database/{inputs.get('name', name)}")
    elif typ == "aws:glue/catalogTable:CatalogTable":
        out["arn"] = _arn(
            "glue", region, f"table/{inputs.get('databaseName', 'db')}/{inputs.get('name', name)}"
        )
    elif typ == "aws:kms/key:Key":
        out["keyId"] = f"key-{name}"
        out["arn"] = _arn("kms", region, f"key/{name}")
    out.setdefault("name", name)
    return out


def run_entry(stack: str) -> dict[str, Any]:
    """Evaluate ``__main__.py`` for ``stack``; ``PULUMI_CONFIG`` must already be in the environment."""
    os.chdir(INFRA_DIR)
    sys.path.insert(0, str(INFRA_DIR))
    import pulumi
    from pulumi.runtime import mocks as pm
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import resource_pb2
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    records: list[dict[str, Any]] = []
    provider_region: dict[str, str] = {}

    class _Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
            raise AssertionError("the recording monitor handles registrations")  # pragma: no cover

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
            if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {
                    "accountId": MOCK_ACCOUNT,
                    "arn": f"arn:aws:iam::{MOCK_ACCOUNT}:user/mock",
                    "userId": "mock",
                    "id": MOCK_ACCOUNT,
                }, []
            if args.token == "aws:secretsmanager/getRandomPassword:getRandomPassword":
                return {"randomPassword": MOCK_PASSWORD, "id": "pw"}, []
            raise NotImplementedError(f"no mock for invoke {args.token}")

    class _Monitor(pm.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            urn = self.make_urn(request.parent, request.type, request.name)
            if request.type == "pulumi:pulumi:Stack":
                return resource_pb2.RegisterResourceResponse(urn=urn)
            pm._ensure_event_loop()
            inputs = rpc.deserialize_properties(request.object)
            provider_urn = request.provider.rsplit("::", 1)[0] if request.provider else ""
            if request.type.startswith("pulumi:providers:"):
                region = str(inputs.get("region", ""))
                provider_region[urn] = region
            else:
                region = provider_region.get(provider_urn, "")
            state = (
                mock_outputs(request.type, request.name, inputs, region or "global") if request.custom else {}
            )
            rid = f"{request.name}-id" if request.custom else ""
            if request.type.startswith("pulumi:providers:"):
                rid = f"{request.name}-provider-id"
            obj = _sync_await(rpc.serialize_properties(state, {}))
            self.resources[urn] = pm.MockMonitor.ResourceRegistration(urn, rid, state)
            records.append(
                {
                    "urn": urn,
                    "type": request.type,
                    "name": request.name,
                    "custom": bool(request.custom),
                    "inputs": inputs,
                    "outputs": state,
                    "provider": provider_urn or None,
                    "region": region or None,
                    "parent": request.parent or None,
                    "protect": bool(request.protect),
                    "dependencies": list(request.dependencies),
                    "propertyDependencies": {
                        k: list(v.urns) for k, v in request.propertyDependencies.items()
                    },
                }
            )
            return resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=obj)

    pm.set_mocks(_Mocks(), project=PROJECT, stack=stack, preview=False, monitor=_Monitor(_Mocks()))
    resolved: dict[str, Any] = {}

    def program() -> Any:
        runpy.run_path(str(ENTRY), run_name="__main__")
        exported = pulumi.runtime.settings.get_root_resource().outputs  # what __main__ pulumi.export-ed
        return pulumi.Output.from_input(exported).apply(resolved.update).future()

    _sync_await(run_pulumi_func(lambda: _sync_await(program())))
    return {"stack": stack, "resources": records, "outputs": resolved}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name: reads infrastructure/Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, required=True, help="write the graph here as JSON")
    parser.add_argument(
        "--config-from-env",
        action="store_true",
        help="use PULUMI_CONFIG as already set (a test's crafted config) instead of the stack file",
    )
    ns = parser.parse_args(argv)
    if not ns.config_from_env:
        sys.path.insert(0, str(INFRA_DIR))
        from aegis_infra.stack_file import language_host_env

        os.environ.update(language_host_env(ns.stack))
    out = ns.out.resolve()
    try:
        graph = run_entry(ns.stack)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    out.write_text(json.dumps(graph, default=str, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
