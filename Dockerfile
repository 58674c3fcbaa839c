# The Aegis platform image: the Dagster code location (pipelines.definitions), and the same
# image runs MLflow and the alert receiver on EKS (infrastructure/aegis_infra/platform.py).
# Build and push: docs/infrastructure.md ("The platform image").
#
#   docker build -t aegis:0.1.0 .
#   docker run --rm -p 3030:3030 aegis:0.1.0          # the gRPC code server
#
# Base pinned to an exact tag, the venv's Python (3.11.7, Debian bookworm). For a
# reproducible build pin the digest too: python:3.11.7-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.7-slim-bookworm`).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------- build: the virtualenv
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, exactly this version, the CPU build: any other spec pulls GBs of CUDA.
RUN pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /app
# The source tree stays at /app: assets/warehouse.py finds the dbt project beside it.
COPY pyproject.toml README.md ./
COPY aegis/ aegis/
COPY assets/ assets/
COPY pipelines/ pipelines/
COPY policies/ policies/
COPY dbt/ dbt/
# The project (its dependencies include dagster-postgres, dagster-aws and dagster-k8s:
# Aurora storage, S3 and the K8sRunLauncher). Editable, so the packages resolve to /app.
RUN pip install -e . dagster-postgres dagster-k8s dagster-aws \
 && python -c "import dagster_postgres, dagster_k8s, dagster_aws, torch; assert torch.__version__.startswith('${TORCH_VERSION}')"
# Fail the build, not the pod, when the code location does not import (this also parses dbt).
RUN AEGIS_HOME=/tmp/aegis-build python -c "import pipelines.definitions" && rm -rf /tmp/aegis-build

# ---------------------------------------------------------------- runtime: no build tools, not root
FROM ${PYTHON_IMAGE} AS runtime
# uid 10001: the runAsUser of the platform's pods (platform.py).
RUN groupadd --gid 10001 aegis \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/aegis --create-home --shell /usr/sbin/nologin aegis
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=root:root /app /app
# dbt writes target/ and logs/ beside its project; everything else the user may write is AEGIS_HOME
# (DAGSTER_HOME inside it must exist: Dagster refuses a missing instance directory).
RUN mkdir -p /var/lib/aegis/dagster \
 && chown -R 10001:10001 /var/lib/aegis /app/dbt
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AEGIS_HOME=/var/lib/aegis \
    DAGSTER_HOME=/var/lib/aegis/dagster
WORKDIR /app
USER 10001:10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
  CMD ["dagster", "api", "grpc-health-check", "--port", "3030"]
# The dagster-user-deployments gRPC server; the Helm release runs the same server with the
# same module and port (platform.py USER_CODE_MODULE / USER_CODE_PORT). MLflow and the alert
# receiver override the command in their Deployments.
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "--module-name", "pipelines.definitions"]
