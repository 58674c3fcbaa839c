"""Aegis on AWS: the component resources of the Pulumi program (see ``program.build``).

Kept import-light: ``aegis_infra.cost`` is also imported by the CrossGuard pack.
"""
