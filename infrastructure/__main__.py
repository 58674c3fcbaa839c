"""Entry point of the Pulumi program: ``pulumi up`` runs this (see docs/infrastructure.md)."""

import pulumi
from aegis_infra.program import build

for _name, _value in build().items():
    pulumi.export(_name, _value)
