"""The dbt project and the ``dbt`` resource (``DbtCliResource``) per profile.

The manifest is prepared at import when missing or older than the project's
files (``dbt parse``, guarded against concurrent parses), so importing the code
location works on a fresh clone where ``dbt/target`` does not exist: the
warehouse area's ``@dbt_assets`` read it at definition time.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
DBT_TARGETS: dict[str, str] = {"local": "local", "prod": "prod"}  # AEGIS_PROFILE -> dbt target
# Files whose change makes the manifest stale.
PROJECT_GLOBS: tuple[str, ...] = (
    "dbt_project.yml",
    "profiles.yml",
    "models/**/*",
    "macros/**/*",
    "tests/**/*",
)


def _manifest_is_stale(project: DbtProject) -> bool:
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(
        p.is_file() and p.stat().st_mtime > built for g in PROJECT_GLOBS for p in project.project_dir.glob(g)
    )


def _dbt_executable() -> str:
    """The dbt beside this interpreter (the venv), so nothing depends on PATH being activated."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def prepare_manifest(project: DbtProject) -> Path:
    """``dbt parse`` when the manifest is missing or stale.

    A file lock serialises concurrent imports (pytest-xdist workers, the webserver
    and a run worker starting together); the staleness test is repeated under the
    lock so only the first of them parses.
    """
    if _manifest_is_stale(project):
        lock_path = project.project_dir / project.target_path / ".parse.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if _manifest_is_stale(project):
                    DbtCliResource(project_dir=project, dbt_executable=_dbt_executable()).cli(
                        ["parse", "--quiet"], target_path=project.target_path, raise_on_error=True
                    ).wait()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if not project.manifest_path.exists():
        raise RuntimeError(
            f"dbt parse did not produce {project.manifest_path}; run 'dbt parse' in {project.project_dir}"
        )
    return project.manifest_path


DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR)
prepare_manifest(DBT_PROJECT)


def dbt_resource(profile: str) -> DbtCliResource:
    """The dbt CLI resource for an Aegis profile (``local`` or ``prod``), keyed ``dbt`` in pipelines/profiles.py."""
    try:
        target = DBT_TARGETS[profile]
    except KeyError:
        raise ValueError(
            f"unknown profile {profile!r} for dbt; expected one of {', '.join(DBT_TARGETS)}"
        ) from None
    return DbtCliResource(
        project_dir=DBT_PROJECT, profiles_dir=DBT_PROJECT_DIR, target=target, dbt_executable=_dbt_executable()
    )
