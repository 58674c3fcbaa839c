"""Resources of the code location; ``pipelines.profiles`` picks their configuration per profile."""

from pipelines.resources.game import GameBackendResource
from pipelines.resources.lake import LakeNotConfigured, LakeResource

__all__ = ["GameBackendResource", "LakeNotConfigured", "LakeResource"]
