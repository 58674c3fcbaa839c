"""Reflection: what each finished changeset taught, and how far reality is from the world model.

:mod:`aegis.reflection.records` turns a finished changeset (its proposal, its
canary judgement, its transitions) into a :class:`~aegis.domain.ReflectionRecord`
with a root-cause class for failures; :mod:`aegis.reflection.delta` scores the
world model's predicted effects against the observed canary effects over time
and derives the interval scale the proposal engine applies.
"""
