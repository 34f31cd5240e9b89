"""Train EMDQN (or plain DQN with memory=none). Examples:

    python train.py env=pong memory.lambda=0.1
    python train.py -m memory.lambda=0,0.01,0.1,1 seed=0,1,2
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from emdqn.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
