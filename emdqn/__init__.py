"""emdqn: Episodic Memory Deep Q-Networks with Hydra, PyTorch Lightning and scipy cKDTree.

    from emdqn import compose_config, train
    cfg = compose_config(["experiment=minatar", "agent.total_steps=50000"])
    train(cfg, run_dir="runs/notebook")
"""

from emdqn.config.compose import compose_config, register_config_parts

register_config_parts()  # conf/ composes (typed schemas, resolvers, sweeps) once emdqn is imported


def __getattr__(name: str):
    # Lightning and the envs load only when a run is built, not for a config or a listing.
    if name == "train":
        from emdqn.run.train import train

        return train
    if name == "EpisodicMemory":
        from emdqn.agent.memory import EpisodicMemory

        return EpisodicMemory
    raise AttributeError(f"module 'emdqn' has no attribute {name!r}")


__all__ = ["compose_config", "train", "EpisodicMemory"]
__version__ = "0.1.0"
