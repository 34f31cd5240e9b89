"""Multirun sweeps (basic and joblib launchers), W&B offline runs, and the offline comparison."""

import json
import struct
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from emdqn.compare import compare, main as compare_main
from emdqn.config.sweeps_path import register_sweeps
from tests.conftest import ROOT, run_train

CONF = ROOT / "conf"

TINY = ["env=cartpole", "model=mlp", "agent.total_steps=400", "agent.learning_starts=100", "buffer.capacity=500",
        "eval.episodes=0", "checkpoint.save_replay=false", "trainer.log_every_steps=100"]
GRID = ["memory.lambda=0,0.1", "seed=0,1"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.rglob("config.yaml") if ".hydra" not in p.parts)


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        chunk = data[position:position + length]
        position += length
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
            pending = b""
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def wandb_config(run_dir: Path) -> dict:
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"one offline W&B run per job in {run_dir}"
    runs = [r.run for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "run"]
    return {item.key: json.loads(item.value_json) for item in runs[0].config.update}


def check_sweep(sweep_dir: Path) -> None:
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        assert (job / "metrics.csv").exists()
        config = wandb_config(job)
        local = yaml.safe_load((job / "config.yaml").read_text())
        assert config["memory"]["lambda"] == local["memory"]["lambda"]
        assert config["seed"] == local["seed"]
        seen.add((local["memory"]["lambda"], local["seed"]))
    assert seen == {(0.0, 0), (0.0, 1), (0.1, 0), (0.1, 1)}


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    run_train(["-m", *GRID, *TINY, f"hydra.sweep.dir={sweep_dir}"], cwd=sweep_dir.parent)
    return sweep_dir


def test_basic_multirun_makes_one_folder_and_one_wandb_run_per_job(basic_sweep):
    check_sweep(basic_sweep)


def test_joblib_sweep_runs_jobs_in_parallel(tmp_path):
    sweep_dir = tmp_path / "joblib"
    run_train(["+sweeps=lambda_local", *GRID, *TINY, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    check_sweep(sweep_dir)


def test_compare_writes_plot_and_table_and_skips_broken_runs(basic_sweep, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("memory: {lambda: 0.5}\nseed: 9\n")
    (broken / "metrics.csv").write_text("step,charts/episodic_return\n10,not-a-number\n")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("memory: {lambda: 0.5}\nseed: 8\n")
    out = tmp_path / "report"
    result = compare([basic_sweep, broken, half], out)
    assert result["keys"] == ["memory.lambda"]
    assert [row["group"] for row in result["rows"]] == ["lambda=0.0", "lambda=0.1"]
    assert all(row["seeds"] == 2 for row in result["rows"])
    assert {folder.name for folder, _ in result["skipped"]} == {"broken", "half"}
    assert (out / "comparison.png").stat().st_size > 10_000
    table = (out / "comparison.md").read_text()
    assert "| lambda=0.0 | 2 |" in table and "| lambda=0.1 | 2 |" in table
    assert "broken" in table and "no metrics.csv" in table
    compare_main([str(basic_sweep), "--out", str(tmp_path / "cli")])
    assert "2 groups" in capsys.readouterr().out


def compose_sweep(name, overrides=()):
    register_sweeps()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+sweeps={name}", *overrides], return_hydra_config=True)


def test_slurm_sweep_renders_the_submitit_parameters():
    cfg = compose_sweep("lambda_slurm", ["hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 4320, 1)
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.array_parallelism) == (8, 32, 12)
    assert cfg.hydra.sweeper.params["memory.lambda"] == "0,0.01,0.1,1"
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="python train.py", folder="/tmp/submitit", partition=launcher.partition,
                                 time=launcher.timeout_min, cpus_per_task=launcher.cpus_per_task,
                                 gpus_per_node=launcher.gpus_per_node, mem=f"{launcher.mem_gb}GB",
                                 ntasks_per_node=launcher.tasks_per_node, nodes=launcher.nodes,
                                 signal_delay_s=launcher.signal_delay_s)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=4320", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=32GB"):
        assert line in script


def test_optuna_sweep_composes_and_searches_lambda():
    cfg = compose_sweep("lambda_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.params["memory.lambda"] == "interval(0.0, 1.0)"


def test_wandb_sweep_file_drives_train_py_with_hydra_overrides():
    sweep = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "wandb_lambda.yaml").read_text())
    assert sweep["program"] == "train.py" and "${args_no_hyphens}" in sweep["command"]
    assert sweep["parameters"]["memory.lambda"]["values"] == [0, 0.01, 0.1, 1]
