"""The Aegis CrossGuard pack's policies (``aegis_guard.policies``); the pack itself is ``../__main__.py``."""
