"""Composing the config and training from Python, as a notebook does: no registration to know about."""

import subprocess
import sys

NOTEBOOK = """
import sys
from pathlib import Path

from emdqn import compose_config, train

cfg = compose_config(["experiment=cartpole", "agent.total_steps=400", "agent.learning_starts=200",
                      "eval.episodes=1", "logger=csv", "trainer.threads=1"])
assert cfg.env.id == "CartPole-v1" and cfg.memory.enabled
result = train(cfg, run_dir=Path(sys.argv[1]) / "run")
print("RESULT", result)

# Hydra's own compose API works too once emdqn is imported (its schemas and resolvers are registered).
from hydra import compose, initialize_config_dir
from emdqn.config.compose import CONFIG_DIR

with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
    plain = compose(config_name="config", overrides=["env=minatar", "memory=none"])
print("HYDRA", plain.env.kind, plain.memory.enabled)
"""


def test_a_script_composes_the_config_and_trains_without_registering_anything(tmp_path):
    result = subprocess.run([sys.executable, "-c", NOTEBOOK, str(tmp_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("RESULT", "HYDRA")))
    assert float(lines["RESULT"]) > 0  # CartPole's return is at least 1 per game
    assert lines["HYDRA"] == "minatar False"
    assert (tmp_path / "run" / "checkpoints" / "manifest.json").is_file()
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") > 1


def test_the_design_document_maps_every_module():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    design = (root / "docs" / "design.md").read_text()
    modules = [path.relative_to(root).as_posix() for path in (root / "emdqn").rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")]
    assert len(modules) > 30 and [module for module in modules if f"`{module}`" not in design] == []
