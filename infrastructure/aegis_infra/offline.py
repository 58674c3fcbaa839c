"""Evaluate the program without a cloud: ``pulumi.runtime.set_mocks`` with a recording monitor.

A reviewer (or a test) gets the full resource graph of a stack, with every
resource's type, name, inputs, region (through its provider), parent and
property dependencies, plus the stack outputs, without AWS credentials, the
Pulumi CLI or a network. The CrossGuard pack can then be run over that graph
(``aegis_guard.offline``).

    python -m aegis_infra.offline prod --out /tmp/prod-graph.json

Run one stack per process: Pulumi keeps runtime state in module globals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

INFRA_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = INFRA_DIR.parent
PROJECT = "aegis"
MOCK_ACCOUNT = "123456789012"
MOCK_PASSWORD = "mock-password-not-a-secret-0123456789abcd"


def stack_file(stack: str) -> Path:
    path = INFRA_DIR / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name for p in INFRA_DIR.glob("Pulumi.*.yaml") if p.name != "Pulumi.yaml")
        raise FileNotFoundError(f"no stack file {path.name} in {INFRA_DIR} (known: {', '.join(known)})")
    return path


def stack_config(stack: str) -> dict[str, str]:
    """The stack file's config as Pulumi hands it to a program: ``ns:key`` -> string (JSON for structures)."""
    raw = yaml.safe_load(stack_file(stack).read_text()) or {}
    out: dict[str, str] = {}
    for key, value in (raw.get("config") or {}).items():
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def stack_settings_values(stack: str) -> dict[str, Any]:
    """``aegis:*`` values of a stack file, namespace stripped, structures parsed."""
    raw = yaml.safe_load(stack_file(stack).read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (raw.get("config") or {}).items() if k.startswith("aegis:")}


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


def evaluate(stack: str) -> dict[str, Any]:
    """Run the program for ``stack`` under mocks; return ``{"stack", "resources", "outputs"}``."""
    sys.path.insert(0, str(INFRA_DIR))
    import pulumi
    from pulumi.runtime import mocks as pm
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import resource_pb2
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from aegis_infra.config import parse_settings

    settings = parse_settings(stack_settings_values(stack))
    records: list[dict[str, Any]] = []
    provider_region: dict[str, str] = {}

    class _Mocks(pulumi.runtime.Mocks):
        def new_resource(
            self, args: pulumi.runtime.MockResourceArgs
        ) -> tuple[str, dict]:  # pragma: no cover - unused
            raise AssertionError("the recording monitor handles registrations")

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

    pulumi.runtime.set_all_config(stack_config(stack))
    pm.set_mocks(_Mocks(), project=PROJECT, stack=stack, preview=False, monitor=_Monitor(_Mocks()))
    from aegis_infra.program import build

    resolved: dict[str, Any] = {}

    def program() -> Any:
        outputs = build(settings)
        return pulumi.Output.from_input(outputs).apply(resolved.update)

    _sync_await(run_pulumi_func(lambda: _sync_await(pulumi.Output.from_input(program()).future())))
    return {"stack": stack, "resources": records, "outputs": resolved}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name: reads infrastructure/Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="write the graph as JSON here (default: stdout summary)")
    ns = parser.parse_args(argv)
    try:
        graph = evaluate(ns.stack)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(graph, default=str, indent=1, sort_keys=True)
    if ns.out:
        ns.out.write_text(text)
    else:
        by_type: dict[str, int] = {}
        for r in graph["resources"]:
            by_type[r["type"]] = by_type.get(r["type"], 0) + 1
        print(
            json.dumps({"stack": ns.stack, "resources": len(graph["resources"]), "byType": by_type}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
