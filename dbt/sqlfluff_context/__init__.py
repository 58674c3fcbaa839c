"""The dbt context sqlfluff's jinja templater lacks, for linting dbt/ (``library_path`` in dbt/.sqlfluff).

sqlfluff's dbt builtins render every ``var()`` as the string "item", which breaks the
macros that compute with vars (``var("kpi_bucket_minutes") * 60``), and it has no
``env_var``, ``return``, ``execute`` or ``project_name``. These names are the package's
public attributes, which sqlfluff puts in the Jinja context: vars are the project's
defaults from dbt_project.yml, ``env_var`` returns its default (lint output must not
depend on the environment), and ``execute`` is False as while dbt parses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_PROJECT = yaml.safe_load((Path(__file__).resolve().parents[1] / "dbt_project.yml").read_text())

project_name: str = _PROJECT["name"]
execute = False


def var(name: str, default: Any = None) -> Any:
    """The project var's default (dbt_project.yml), else ``default``."""
    return _PROJECT.get("vars", {}).get(name, default)


def env_var(name: str, default: str = "") -> str:
    """The default: lint renders the same SQL whatever the environment."""
    return default


def _return(value: Any) -> Any:
    """dbt's ``return()``: a macro renders to its value (every macro here returns last)."""
    return value


globals()["return"] = _return
