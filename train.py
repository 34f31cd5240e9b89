"""Train EMDQN (or plain DQN with memory=none). Examples:

    python train.py env=pong memory.lambda=0.1
    python train.py -m memory.lambda=0,0.01,0.1,1 seed=0,1,2
    python train.py +sweeps=lambda_local        # the same grid, 2 jobs in parallel
"""

import hydra
from omegaconf import DictConfig

from emdqn.config import register_resolvers
from emdqn.sweeps_path import register_sweeps

register_sweeps()  # `+sweeps=<file>` picks a ready-made sweep from sweeps/
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from emdqn.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
