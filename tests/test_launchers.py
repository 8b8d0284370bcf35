"""The launchers in scripts/launch: valid syntax and exactly the command each would run (DRY_RUN=1)."""

from __future__ import annotations

import os
import subprocess

import yaml

from _cli import REPO_ROOT

LAUNCH = os.path.join(REPO_ROOT, "scripts", "launch")


def _dry(script: str, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(["bash", os.path.join(LAUNCH, script), *args], capture_output=True, text=True,
                            env={**os.environ, "DRY_RUN": "1", **(env or {})}, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_shell_launchers_parse():
    for script in ("tpu_vm.sh", "slurm.sbatch"):
        result = subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_tpu_vm_commands():
    assert _dry("tpu_vm.sh", "create", "run1", "us-central2-b", "v4-32") == (
        "gcloud compute tpus tpu-vm create run1 --zone us-central2-b --accelerator-type v4-32 "
        "--version tpu-ubuntu2204-base")
    assert _dry("tpu_vm.sh", "run", "run1", "us-central2-b", "--", "train", "--config", "experiments/digits_cnn.py",
                "--workdir", "gs://b/r") == (
        "gcloud compute tpus tpu-vm ssh run1 --zone us-central2-b --worker=all --command "
        r"cd\ jtrain\ \&\&\ JTRAIN_DISTRIBUTED=auto\ JTRAIN_NO_PROGRESS=1\ .venv/bin/jtrain\ train\ --config\ "
        r"experiments/digits_cnn.py\ --workdir\ gs://b/r")
    assert _dry("tpu_vm.sh", "delete", "run1", "us-central2-b") == (
        "gcloud compute tpus tpu-vm delete run1 --zone us-central2-b --quiet")
    bad = subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "explode", "a", "b"], capture_output=True)
    assert bad.returncode == 2


def test_slurm_command():
    out = _dry("slurm.sbatch", "train", "--config", "experiments/digits_cnn.py", "--workdir", "/shared/r",
               env={"SLURM_SUBMIT_DIR": REPO_ROOT})
    assert out == ("srun --kill-on-bad-exit=1 env JTRAIN_NO_PROGRESS=1 .venv/bin/jtrain train --config "
                   "experiments/digits_cnn.py --workdir /shared/r")
    header = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
    assert "#SBATCH --ntasks-per-node=1" in header


def test_gke_jobset_manifest():
    manifest = yaml.safe_load(open(os.path.join(LAUNCH, "gke_jobset.yaml")))
    assert manifest["kind"] == "JobSet"
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    assert container["command"] == [".venv/bin/jtrain", "train", "--config", "experiments/digits_cnn.py",
                                    "--workdir", "/mnt/runs/digits_cnn"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JTRAIN_NUM_PROCESSES"]["value"] == str(job["parallelism"]) == str(job["completions"])
    assert env["JTRAIN_COORDINATOR"]["value"].endswith(":1234")
    assert "job-completion-index" in env["JTRAIN_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"]


def test_distributed_settings_from_environment(monkeypatch):
    from jtrain import distributed
    from jtrain.errors import UserError

    monkeypatch.setenv("JTRAIN_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("JTRAIN_NUM_PROCESSES", "4")
    monkeypatch.setenv("JTRAIN_PROCESS_ID", "3")
    assert distributed.from_environment() == distributed.ProcessSpec("10.0.0.1:1234", 4, 3)
    assert distributed.from_environment(process_id=1).process_id == 1  # flags win
    monkeypatch.delenv("JTRAIN_PROCESS_ID")
    try:
        distributed.from_environment()
        raise AssertionError("a partial setting must be an error")
    except UserError as e:
        assert "--process_id" in str(e)
