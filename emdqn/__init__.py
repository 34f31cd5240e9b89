"""emdqn: Episodic Memory Deep Q-Networks with Hydra, PyTorch Lightning and scipy cKDTree."""

from emdqn import config as _config  # noqa: F401  (registers the resolvers conf/ uses)
from emdqn.memory import EpisodicMemory

__all__ = ["EpisodicMemory"]
__version__ = "0.1.0"
