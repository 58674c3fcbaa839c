"""Least privilege for Aegis's control paths: scoped tokens, their verification and the service secrets.

See docs/security.md for the model (scopes, token format and storage, rotation,
the Host check and the bind address, where refusals go).
"""
