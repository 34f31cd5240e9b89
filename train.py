"""Train EMDQN (or plain DQN with memory=none). Examples:

    python train.py env=pong memory.lambda=0.1
    python train.py -m memory.lambda=0,0.01,0.1,1 seed=0,1,2
    python train.py +sweeps=lambda_local        # the same grid, 2 jobs in parallel
    python train.py resume=<run folder>         # continue a stopped run, in its own folder
"""

import sys

import hydra
from omegaconf import DictConfig

import emdqn  # noqa: F401  (registers conf/'s typed schemas, resolvers and the `+sweeps=<file>` group)
from emdqn.run.cluster import quiet_scheduler_polling
from emdqn.run.cli import (continue_in_run_folder, one_line_errors, print_job_config, refuse_a_taken_run_folder,
                           report_user_errors)

continue_in_run_folder(sys.argv)  # resume=<run>: Hydra logs into that run's folder, no new one
refuse_a_taken_run_folder(sys.argv)  # before Hydra's log reaches that folder
quiet_scheduler_polling(sys.argv)  # sacct's complaints on clusters without accounting


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    with report_user_errors():
        if not cfg.get("resume"):  # a bad value is refused before Lightning and torch load (seconds)
            from emdqn.config.checks import validate

            validate(cfg)
        from emdqn.run.train import train

        return train(cfg)


if __name__ == "__main__":
    with one_line_errors():
        print_job_config(sys.argv)  # --cfg job: the λ and β the run uses, not the null that means "default"
        main()
