"""Canary judgement: is a change on one shard better, worse or no different from its controls?

:mod:`aegis.canary.judge` is the pure statistical judge (pandas/numpy/scipy, no
Dagster); the canary loop (assets, sensors, promotion waves) calls it live and
``aegis canary judge`` replays it offline with the same code.
"""
