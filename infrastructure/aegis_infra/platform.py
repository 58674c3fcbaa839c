"""The platform on Kubernetes: Dagster, MLflow and the alert receiver, in the control region's cluster.

* Secrets come from AWS Secrets Manager through the External Secrets operator
  (IRSA, read-only on exactly the Aurora secret); no password is a literal here
  or in the Pulumi state.
* Dagster (official Helm chart): external PostgreSQL on Aurora, ``K8sRunLauncher``
  whose run pods tolerate the GPU taint (a training run that requests
  ``nvidia.com/gpu`` lands on a GPU node; CPU runs prefer CPU nodes), compute
  logs in S3, an IRSA service account, and this project's user code
  (``pipelines.definitions``) with every stack output in its environment under
  the names of ``pipelines/stack_outputs.py``.
* MLflow tracking server: Aurora backend store, S3 artifacts, behind a ClusterIP service.
* The alert receiver: ``aegis alerts serve`` (Alertmanager webhooks and SNS in,
  into the alert inbox the healing sensor reads); its own service token comes
  from Secrets Manager as ``AEGIS_TOKEN_ALERTS``.

Every container runs the one platform image built from the repository's
``Dockerfile``, ``<aegis:imageRepository>:<aegis:imageTag>``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from aegis_infra.cluster import POOL_LABEL, EksCluster
from aegis_infra.common import irsa_role, policy_document
from aegis_infra.gpu import GPU_ROLE_LABEL, GPU_TOLERATION

NAMESPACE = "aegis"
ESO_NAMESPACE = "external-secrets"
DAGSTER_CHART = ("dagster", "https://dagster-io.github.io/helm", "1.13.27")
ESO_CHART = ("external-secrets", "https://charts.external-secrets.io", "0.19.2")
SECRET_STORE = "aws-secrets-manager"
DAGSTER_DB_SECRET = "dagster-postgresql-secret"
DAGSTER_PG_SCHEME = "postgresql+psycopg2"  # the same as pipelines.profiles.DAGSTER_PG_SCHEME
MASTER_DB_SECRET = "aurora-master"
MLFLOW_DB_SECRET = "mlflow-db"
MLFLOW_PORT = 5000
MLFLOW_URL = f"http://mlflow.{NAMESPACE}.svc.cluster.local:{MLFLOW_PORT}"
# The receiver's port is the platform's alerts port (aegis.config.ALERTS_PORT's default).
ALERT_RECEIVER_PORT = 8766
ALERT_RECEIVER_COMMAND = ("aegis", "alerts", "serve", "--host", "0.0.0.0", "--port", str(ALERT_RECEIVER_PORT))
SERVICE_TOKENS_SECRET = "aegis-service-tokens"
# The Dagster code location: the module the image's CMD serves and the Helm user deployment names.
USER_CODE_MODULE = "pipelines.definitions"
USER_CODE_PORT = 3030
BOOTSTRAP_IMAGE = "public.ecr.aws/docker/library/postgres:16-alpine"
STACK_OUTPUTS_FILE = Path(__file__).resolve().parents[2] / "pipelines" / "stack_outputs.py"

# Pipelines put this on a training job as the ``dagster-k8s/config`` tag: one GPU, on a training node.
TRAINING_RUN_K8S_CONFIG = {
    "container_config": {
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    },
    "pod_spec_config": {"node_selector": {GPU_ROLE_LABEL: "training"}, "tolerations": [GPU_TOLERATION]},
}


def load_stack_output_contract() -> ModuleType:
    """``pipelines/stack_outputs.py`` by path: the env var names live there, Dagster need not be importable."""
    spec = importlib.util.spec_from_file_location("aegis_stack_outputs_contract", STACK_OUTPUTS_FILE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load the stack output contract from {STACK_OUTPUTS_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pod_spec_config() -> dict:
    """Instance-wide run pod placement: GPU taint tolerated, CPU nodes preferred when no GPU is asked for."""
    return {
        "tolerations": [GPU_TOLERATION],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "preference": {
                            "matchExpressions": [{"key": GPU_ROLE_LABEL, "operator": "DoesNotExist"}]
                        },
                    }
                ]
            }
        },
    }


def dagster_policy(v: list[str]) -> str:
    """Dagster's policy from [lake, platform, audit, queue, secret, key] ARNs."""
    lake, platform, audit, queue, secret, key = v
    return policy_document(
        [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [lake, platform, audit]},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"{lake}/*", f"{platform}/*"],
            },
            # The ledger export only appends: Object Lock keeps it, and no delete is granted.
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"{audit}/*"},
            {
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                "Resource": queue,
            },
            {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": secret},
            {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": key},
            {
                "Effect": "Allow",
                "Action": [
                    "glue:GetDatabase",
                    "glue:GetTable",
                    "glue:GetTables",
                    "glue:GetPartitions",
                ],
                "Resource": "*",
            },
        ]
    )


def mlflow_policy(v: list[str]) -> str:
    """MLflow's policy: its own prefix of the platform bucket, from the same ARNs as Dagster's."""
    _, platform, _, _, _, key = v
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": platform,
                "Condition": {"StringLike": {"s3:prefix": ["mlflow/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{platform}/mlflow/*",
            },
            {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": key},
        ]
    )


def eso_policy(v: list) -> str:
    """External Secrets' policy from [Aurora secret, service tokens secret, [keys]]."""
    secret, tokens, key = v
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": [secret, tokens],
            },
            {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": sorted(set(key))},
        ]
    )


def receiver_policy(v: list[str]) -> str:
    """The alert receiver's policy: send to the alert queue, nothing else."""
    _, _, _, queue, _, _ = v
    return policy_document([{"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": queue}])


@dataclass(frozen=True)
class PlatformArgs:
    env: str
    region: str
    image_repository: str
    image_tag: str
    kms_key_arn: pulumi.Input[str]  # the primary region's key (the buckets')
    region_kms_key_arn: pulumi.Input[str]  # the platform region's key (its own secrets)
    lake_bucket: aws.s3.Bucket
    platform_bucket: aws.s3.Bucket
    audit_bucket: aws.s3.Bucket
    alert_queue: aws.sqs.Queue
    db_secret: aws.secretsmanager.Secret
    db_writer_endpoint: pulumi.Input[str]
    stack_outputs: dict[str, pulumi.Input[str]]  # what user code reads (pipelines/stack_outputs.py)


class Platform(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: PlatformArgs,
        cluster: EksCluster,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("aegis:infra:Platform", name, None, opts)
        self.args, self.cluster, self.aws_provider = args, cluster, provider
        self.ko = pulumi.ResourceOptions(parent=self, provider=cluster.k8s_provider)
        contract = load_stack_output_contract()
        missing = sorted(set(contract.STACK_OUTPUT_ENV) - set(args.stack_outputs))
        if missing:
            raise ValueError(
                f"platform: stack outputs named in pipelines/stack_outputs.py are not provided: {missing}"
            )
        self.env_vars = [{"name": "AEGIS_PROFILE", "value": "prod"}] + [
            {"name": var, "value": args.stack_outputs[out]} for out, var in contract.STACK_OUTPUT_ENV.items()
        ]
        self.namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": NAMESPACE}, opts=self.ko)
        # The platform's own service tokens (``aegis token issue``), put here by the operator:
        # {"alerts": "<token>"}. Never a literal in the program or the state.
        self.tokens_secret = aws.secretsmanager.Secret(
            f"{name}-service-tokens",
            name=f"aegis/{args.env}/service-tokens",
            kms_key_id=args.region_kms_key_arn,
            recovery_window_in_days=30,
            tags={"project": "aegis", "environment": args.env, "component": "platform"},
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        roles = self._roles(name)
        self._external_secrets(name, roles["external-secrets"])
        self._db_bootstrap(name)
        self.dagster = self._dagster(name, roles["dagster"])
        self._mlflow(name, roles["mlflow"])
        self._alert_receiver(name, roles["alert-receiver"])
        self.register_outputs({"mlflowUrl": MLFLOW_URL})

    # --------------------------------------------------------------- IAM (IRSA)
    def _roles(self, name: str) -> dict[str, aws.iam.Role]:
        a = self.args
        arns = pulumi.Output.all(
            a.lake_bucket.arn,
            a.platform_bucket.arn,
            a.audit_bucket.arn,
            a.alert_queue.arn,
            a.db_secret.arn,
            a.kms_key_arn,
        )
        # External Secrets reads exactly the two secrets it materialises, nothing else.
        eso_arns = pulumi.Output.all(
            a.db_secret.arn, self.tokens_secret.arn, [a.kms_key_arn, a.region_kms_key_arn]
        )
        specs = {
            "dagster": (NAMESPACE, "dagster", arns.apply(dagster_policy)),
            "mlflow": (NAMESPACE, "mlflow", arns.apply(mlflow_policy)),
            "alert-receiver": (NAMESPACE, "alert-receiver", arns.apply(receiver_policy)),
            "external-secrets": (ESO_NAMESPACE, "external-secrets", eso_arns.apply(eso_policy)),
        }
        return {
            key: irsa_role(
                f"{name}-{key}-role",
                env=self.args.env,
                oidc_provider_arn=self.cluster.oidc_provider.arn,
                oidc_issuer=self.cluster.oidc_issuer,
                namespace=ns,
                service_account=sa,
                policy=policy,
                opts=pulumi.ResourceOptions(parent=self, provider=self.aws_provider),
            )
            for key, (ns, sa, policy) in specs.items()
        }

    # --------------------------------------------------------------- secrets
    def _external_secrets(self, name: str, role: aws.iam.Role) -> None:
        deps = self._secret_store(name, role)
        self._external_secret(
            name, "dagster-db-secret", DAGSTER_DB_SECRET, {"postgresql-password": "{{ .password }}"}, deps
        )
        self._external_secret(
            name,
            "service-tokens",
            SERVICE_TOKENS_SECRET,
            {"AEGIS_TOKEN_ALERTS": "{{ .alerts }}"},
            deps,
            source=self.tokens_secret.name,
        )
        self._external_secret(
            name,
            "master-db-secret",
            MASTER_DB_SECRET,
            {"PGUSER": "{{ .username }}", "PGPASSWORD": "{{ .password }}"},
            deps,
        )
        self._external_secret(
            name,
            "mlflow-db-secret",
            MLFLOW_DB_SECRET,
            {
                "MLFLOW_BACKEND_STORE_URI": pulumi.Output.concat(
                    "postgresql+psycopg://{{ .username }}:{{ .password | urlquery }}@",
                    self.args.db_writer_endpoint,
                    ":5432/mlflow?sslmode=require",
                )
            },
            deps,
        )

    def _secret_store(self, name: str, role: aws.iam.Role) -> pulumi.ResourceOptions:
        """The External Secrets operator and its store; returns the options every ExternalSecret needs."""
        chart, repo, version = ESO_CHART
        eso = k8s.helm.v3.Release(
            f"{name}-external-secrets",
            chart=chart,
            version=version,
            namespace=ESO_NAMESPACE,
            create_namespace=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
            values={
                "installCRDs": True,
                "serviceAccount": {
                    "name": "external-secrets",
                    "annotations": {"eks.amazonaws.com/role-arn": role.arn},
                },
                "nodeSelector": {POOL_LABEL: "system"},
            },
            opts=self.ko,
        )
        deps = pulumi.ResourceOptions.merge(self.ko, pulumi.ResourceOptions(depends_on=[eso, self.namespace]))
        k8s.apiextensions.CustomResource(
            f"{name}-secret-store",
            api_version="external-secrets.io/v1",
            kind="ClusterSecretStore",
            metadata={"name": SECRET_STORE},
            spec={
                "provider": {
                    "aws": {
                        "service": "SecretsManager",
                        "region": self.args.region,
                        "auth": {
                            "jwt": {
                                "serviceAccountRef": {"name": "external-secrets", "namespace": ESO_NAMESPACE}
                            }
                        },
                    }
                }
            },
            opts=deps,
        )
        return deps

    def _external_secret(
        self,
        name: str,
        rname: str,
        target: str,
        template: dict[str, pulumi.Input[str]],
        deps: pulumi.ResourceOptions,
        source: pulumi.Input[str] | None = None,
    ) -> None:
        """Materialise one Secrets Manager secret (the Aurora one unless ``source``) as Kubernetes secret ``target``."""
        k8s.apiextensions.CustomResource(
            f"{name}-{rname}",
            api_version="external-secrets.io/v1",
            kind="ExternalSecret",
            metadata={"name": target, "namespace": NAMESPACE},
            spec={
                "refreshInterval": "1h",
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": SECRET_STORE},
                "target": {
                    "name": target,
                    "creationPolicy": "Owner",
                    "template": {"engineVersion": "v2", "data": template},
                },
                "dataFrom": [{"extract": {"key": self.args.db_secret.name if source is None else source}}],
            },
            opts=deps,
        )

    def _db_bootstrap(self, name: str) -> None:
        """Create the ``mlflow`` and ``ledger`` databases (``dagster`` comes with the cluster); idempotent."""
        script = (
            "set -eu; for db in mlflow ledger; do "
            "psql -d dagster -tAc \"SELECT 1 FROM pg_database WHERE datname = '$db'\" | grep -q 1 "
            '|| psql -d dagster -c "CREATE DATABASE $db"; done'
        )
        self.bootstrap = k8s.batch.v1.Job(
            f"{name}-db-bootstrap",
            metadata={"name": "aegis-db-bootstrap", "namespace": NAMESPACE},
            spec={
                "backoffLimit": 6,
                "template": {
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "nodeSelector": {POOL_LABEL: "system"},
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 70},
                        "containers": [
                            {
                                "name": "bootstrap",
                                "image": BOOTSTRAP_IMAGE,
                                "command": ["sh", "-c", script],
                                "env": [
                                    {"name": "PGHOST", "value": self.args.db_writer_endpoint},
                                    {"name": "PGSSLMODE", "value": "require"},
                                ],
                                "envFrom": [{"secretRef": {"name": MASTER_DB_SECRET}}],
                            }
                        ],
                    }
                },
            },
            opts=pulumi.ResourceOptions.merge(self.ko, pulumi.ResourceOptions(depends_on=[self.namespace])),
        )

    # --------------------------------------------------------------- Dagster
    def dagster_values(self, role_arn: pulumi.Input[str]) -> dict:
        a = self.args
        return {
            "global": {"serviceAccountName": "dagster", "postgresqlSecretName": DAGSTER_DB_SECRET},
            "serviceAccount": {
                "create": True,
                "name": "dagster",
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            },
            "generatePostgresqlPasswordSecret": False,
            "postgresql": {
                "enabled": False,
                "postgresqlHost": a.db_writer_endpoint,
                "postgresqlUsername": "aegis_admin",
                "postgresqlDatabase": "dagster",
                "postgresqlParams": {"sslmode": "require"},
                # dagster-postgres sends `NOTIFY run_events, %(id)s`, which needs psycopg2's
                # client-side parameters; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
                "postgresqlScheme": DAGSTER_PG_SCHEME,
                "service": {"port": 5432},
            },
            "runLauncher": {
                "type": "K8sRunLauncher",
                "config": {
                    "k8sRunLauncher": {
                        "jobNamespace": NAMESPACE,
                        "loadInclusterConfig": True,
                        "runK8sConfig": {"podSpecConfig": run_pod_spec_config()},
                    }
                },
            },
            "computeLogManager": {
                "type": "S3ComputeLogManager",
                "config": {
                    "s3ComputeLogManager": {
                        "bucket": a.platform_bucket.bucket,
                        "prefix": "dagster/compute-logs",
                        "region": a.region,
                    }
                },
            },
            "dagster-user-deployments": {
                "enabled": True,
                "deployments": [
                    {
                        "name": "aegis",
                        "image": {
                            "repository": a.image_repository,
                            "tag": a.image_tag,
                            "pullPolicy": "IfNotPresent",
                        },
                        # The chart runs `dagster api grpc -h 0.0.0.0 -p <port> <these args>`,
                        # the same server the image's CMD starts.
                        "dagsterApiGrpcArgs": ["--module-name", USER_CODE_MODULE],
                        "port": USER_CODE_PORT,
                        "env": self.env_vars,
                        "includeConfigInLaunchedRuns": {"enabled": True},
                        "nodeSelector": {POOL_LABEL: "system"},
                    }
                ],
            },
            "dagsterWebserver": {"nodeSelector": {POOL_LABEL: "system"}, "replicaCount": 2},
            "dagsterDaemon": {
                "nodeSelector": {POOL_LABEL: "system"},
                "runCoordinator": {
                    "enabled": True,
                    "type": "QueuedRunCoordinator",
                    "config": {
                        "queuedRunCoordinator": {
                            "maxConcurrentRuns": 25,
                            # as aegis.stack.RUN_TAG_LIMITS (a test keeps them equal): one ingest,
                            # one warehouse build (one publisher of the warehouse), one healing run
                            "tagConcurrencyLimits": [
                                {"key": "aegis/ingest", "limit": 1},
                                {"key": "aegis/automation", "limit": 1},
                                {"key": "aegis/area", "value": "healing", "limit": 1},
                            ],
                        }
                    },
                },
            },
        }

    def _dagster(self, name: str, role: aws.iam.Role) -> k8s.helm.v3.Release:
        chart, repo, version = DAGSTER_CHART
        return k8s.helm.v3.Release(
            f"{name}-dagster",
            chart=chart,
            version=version,
            namespace=NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
            values=self.dagster_values(role.arn),
            opts=pulumi.ResourceOptions.merge(
                self.ko, pulumi.ResourceOptions(depends_on=[self.namespace, self.bootstrap])
            ),
        )

    # --------------------------------------------------------------- MLflow
    def _service_account(self, name: str, sa: str, role: aws.iam.Role) -> k8s.core.v1.ServiceAccount:
        return k8s.core.v1.ServiceAccount(
            f"{name}-{sa}-sa",
            metadata={
                "name": sa,
                "namespace": NAMESPACE,
                "annotations": {"eks.amazonaws.com/role-arn": role.arn},
            },
            opts=pulumi.ResourceOptions.merge(self.ko, pulumi.ResourceOptions(depends_on=[self.namespace])),
        )

    def _deployment(
        self, name: str, app: str, sa: k8s.core.v1.ServiceAccount, container: dict, port: int, replicas: int
    ) -> None:
        labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "aegis"}
        k8s.apps.v1.Deployment(
            f"{name}-{app}",
            metadata={"name": app, "namespace": NAMESPACE, "labels": labels},
            spec={
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": sa.metadata["name"],
                        "nodeSelector": {POOL_LABEL: "system"},
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                        "containers": [
                            {
                                "name": app,
                                "image": f"{self.args.image_repository}:{self.args.image_tag}",
                                "ports": [{"containerPort": port, "name": "http"}],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": False,
                                },
                                **container,
                            }
                        ],
                    },
                },
            },
            opts=self.ko,
        )
        k8s.core.v1.Service(
            f"{name}-{app}-svc",
            metadata={"name": app, "namespace": NAMESPACE, "labels": labels},
            spec={
                "type": "ClusterIP",
                "selector": labels,
                "ports": [{"name": "http", "port": port, "targetPort": "http"}],
            },
            opts=self.ko,
        )

    def _mlflow(self, name: str, role: aws.iam.Role) -> None:
        sa = self._service_account(name, "mlflow", role)
        artifacts = self.args.platform_bucket.bucket.apply(lambda b: f"s3://{b}/mlflow")
        self._deployment(
            name,
            "mlflow",
            sa,
            {
                "command": [
                    "mlflow",
                    "server",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    str(MLFLOW_PORT),
                    "--backend-store-uri",
                    "$(MLFLOW_BACKEND_STORE_URI)",
                    "--artifacts-destination",
                    artifacts,
                    "--serve-artifacts",
                ],
                "envFrom": [{"secretRef": {"name": MLFLOW_DB_SECRET}}],
                "env": [{"name": "AWS_REGION", "value": self.args.region}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            },
            MLFLOW_PORT,
            replicas=2,
        )

    def _alert_receiver(self, name: str, role: aws.iam.Role) -> None:
        sa = self._service_account(name, "alert-receiver", role)
        self._deployment(
            name,
            "alert-receiver",
            sa,
            {
                "command": list(ALERT_RECEIVER_COMMAND),
                "env": [
                    *self.env_vars,
                    {"name": "AEGIS_ALERTS_PORT", "value": str(ALERT_RECEIVER_PORT)},
                ],
                # AEGIS_TOKEN_ALERTS: the receiver's own token (aegis.security.secrets.service_token).
                "envFrom": [{"secretRef": {"name": SERVICE_TOKENS_SECRET}}],
                "readinessProbe": {"httpGet": {"path": "/v1/health", "port": "http"}, "periodSeconds": 10},
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            },
            ALERT_RECEIVER_PORT,
            replicas=2,
        )
