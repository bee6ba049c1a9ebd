r"""Site profiles: where and how a job runs (``slurm/profiles/NAME.yaml``).

A profile is a small YAML mapping, validated here before anything is submitted; an unknown key
stops with a message naming it and the nearest valid key. Keys (all optional)::

    executor: slurm            # slurm | local (no SLURM: submitit's local executor on this machine)
    partition: gpu             # sbatch --partition
    account: my-project        # --account
    qos: normal                # --qos
    time: "12:00:00"           # --time: minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS
    nodes: 1                   # --nodes
    gpus_per_node: 4           # --gpus-per-node; one task per GPU
    tasks_per_node: 4          # --ntasks-per-node (= ranks per node)
    cpus_per_task: 8           # --cpus-per-task
    mem: 64G                   # --mem per node (K/M/G/T suffix; 0 = all of it)
    mem_per_cpu: null          # --mem-per-cpu, instead of mem
    constraint: a100           # --constraint
    exclusive: false           # --exclusive
    setup: ["module load cuda/12.4"]   # shell lines before srun (module loads, venv activation)
    srun_args: ["--mpi=pmi2"]  # extra srun arguments
    sbatch: {reservation: r1}  # other sbatch long options, checked against sbatch's own list
    signal_delay_s: 120        # USR2 this long before the time limit: checkpoint and requeue
    max_timeouts: 10           # requeues after a time-out before giving up
    python: null               # interpreter on the compute nodes (default: this one)
    env: {OMP_NUM_THREADS: "1"}  # exported in the job
    dask: {processes: 1}       # SLURMCluster keywords for `diffda prepare --profile` (Dask workers)
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import DiffdaError

ROOT = Path(__file__).resolve().parents[1]

# sbatch long options a profile's ``sbatch:`` map may name (SLURM 22.05 to 24.x).
SBATCH_OPTIONS = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot dependency
distribution error exclude exclusive export export-file extra extra-node-info get-user-env gid gpu-bind
gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hint hold ignore-pbs input
job-name kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu
mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
ntasks-per-node ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power
prefer priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job
switches test-only thread-spec threads-per-core time time-min tmp tres-per-task uid use-min-nodes verbose
wait wait-all-nodes wckey wrap
""".split())
# set by the profile's own keys or by diffda itself; naming them under ``sbatch:`` would conflict
SBATCH_RESERVED = {"array", "output", "error", "open-mode", "signal", "ntasks-per-node", "nodes", "time",
                   "partition", "account", "qos", "gpus-per-node", "cpus-per-task", "mem", "constraint",
                   "job-name", "wrap", "parsable", "wait", "test-only", "chdir"}
TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
MEM_RE = re.compile(r"^\d+[KMGT]?B?$", re.IGNORECASE)


class ProfileError(DiffdaError, ValueError):
    """A profile problem, with a message naming the key and the fix."""


def parse_time_minutes(text: str | int) -> int:
    """SLURM time formats -> whole minutes (rounded up): ``90``, ``"1:30:00"``, ``"2-00"``, ``"2-12:00:00"``."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    m = TIME_RE.match(s)
    if not m:
        raise ValueError(f"{s!r} is not a SLURM time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)")
    days, a, b, c = m.groups()
    a, b, c = int(a), None if b is None else int(b), None if c is None else int(c)
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif b is None:  # minutes
        seconds = a * 60
    elif c is None:  # MM:SS
        seconds = a * 60 + b
    else:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    return max(1, -(-seconds // 60))


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="set from the file name")
    executor: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | int = "01:00:00"
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int = Field(1, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    mem: str | int | None = None
    mem_per_cpu: str | int | None = None
    constraint: str | None = None
    exclusive: bool = False
    setup: list[str] = Field(default_factory=list)
    srun_args: list[str] = Field(default_factory=list)
    sbatch: dict[str, Any] = Field(default_factory=dict)
    signal_delay_s: int = Field(120, ge=0)
    max_timeouts: int = Field(10, ge=0)
    python: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    dask: dict[str, Any] = Field(default_factory=dict, description="dask-jobqueue SLURMCluster keywords (diffda prepare)")

    @field_validator("time")
    @classmethod
    def _time(cls, v: Any) -> Any:
        parse_time_minutes(v)
        return v

    @field_validator("mem", "mem_per_cpu")
    @classmethod
    def _mem(cls, v: Any) -> Any:
        if v is not None and not MEM_RE.match(str(v)):
            raise ValueError(f"{v!r} is not a SLURM memory size: a number with K, M, G or T, e.g. 16G")
        return None if v is None else str(v)

    @field_validator("srun_args")
    @classmethod
    def _srun_args(cls, v: list[str]) -> list[str]:
        for a in v:
            if not a.startswith("-"):
                raise ValueError(f"{a!r}: each srun argument is one option, e.g. '--mpi=pmi2'")
        return v

    @field_validator("sbatch")
    @classmethod
    def _sbatch(cls, v: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in v.items():
            k = str(key).lstrip("-").replace("_", "-")
            if k in SBATCH_RESERVED:
                raise ValueError(f"sbatch option {key!r} is set by diffda or by the profile's own key; remove it here")
            if k not in SBATCH_OPTIONS:
                near = difflib.get_close_matches(k, sorted(SBATCH_OPTIONS), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"sbatch has no option --{k}{hint}; sbatch would reject the job")
            out[k] = value
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.mem is not None and self.mem_per_cpu is not None:
            raise ValueError("set mem or mem_per_cpu, not both (sbatch rejects --mem with --mem-per-cpu)")
        return self

    @property
    def ranks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def minutes(self) -> int:
        return parse_time_minutes(self.time)


def profile_dirs() -> list[Path]:
    """Where ``--profile NAME`` is looked up, first match wins."""
    dirs = [Path(p) for p in os.environ.get("DIFFDA_PROFILES", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "slurm" / "profiles", ROOT / "slurm" / "profiles",
                   Path.home() / ".config" / "diffda" / "profiles"]


def available_profiles() -> list[str]:
    names = set()
    for d in profile_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_profile(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ProfileError(f"profile file {p} not found")
        return p
    for d in profile_dirs():
        for suffix in (".yaml", ".yml"):
            if (d / f"{name}{suffix}").is_file():
                return d / f"{name}{suffix}"
    known = available_profiles()
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ProfileError(f"no profile {name!r} (known: {', '.join(known) or 'none'}){hint}; "
                       f"profiles are slurm/profiles/NAME.yaml, or pass a path")


def _format(err: ValidationError, path: Path) -> str:
    lines = []
    fields = sorted(Profile.model_fields)
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(profile)"
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(key, fields, n=1)
            fix = f"did you mean {near[0]!r}?" if near else "other sbatch options go under 'sbatch:'"
            lines.append(f"unknown key {key!r}: {fix} (valid keys: {', '.join(f for f in fields if f != 'name')})")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}")
    return f"invalid profile {path}:\n  " + "\n  ".join(lines)


def load_profile(name: str | Path, overrides: dict[str, Any] | None = None) -> Profile:
    """Read and validate a profile by name or path; raise :class:`ProfileError`."""
    path = find_profile(str(name))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ProfileError(f"profile {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"profile {path} must be a mapping of keys")
    raw = {**raw, **(overrides or {}), "name": path.stem}
    try:
        return Profile.model_validate(raw)
    except ValidationError as err:
        raise ProfileError(_format(err, path)) from None


def python_for(profile: Profile) -> str:
    return profile.python or sys.executable


def dask_cluster_kwargs(profile: Profile) -> dict[str, Any]:
    """dask-jobqueue ``SLURMCluster`` keywords for a profile (``diffda prepare --profile``).

    partition -> queue, account, time -> walltime, cpus_per_task -> cores, mem -> memory
    (``16G`` -> ``16GB``), qos/constraint/gpus_per_node/``sbatch:`` -> job directives, setup ->
    job_script_prologue; the profile's ``dask:`` map is passed through last (e.g. interface).
    """
    kw: dict[str, Any] = {"cores": profile.cpus_per_task, "walltime": _hhmmss(profile.minutes), "processes": 1}
    if profile.partition:
        kw["queue"] = profile.partition
    if profile.account:
        kw["account"] = profile.account
    mem = profile.mem or "4G"
    kw["memory"] = f"{mem}B" if str(mem)[-1:].upper() in "KMGT" else f"{int(mem)}MB"
    directives = [f"--qos={profile.qos}"] if profile.qos else []
    if profile.constraint:
        directives.append(f"--constraint={profile.constraint}")
    if profile.gpus_per_node:
        directives.append(f"--gpus-per-node={profile.gpus_per_node}")
    directives += [f"--{k}={v}" for k, v in profile.sbatch.items()]
    if directives:
        kw["job_extra_directives"] = directives
    if profile.setup:
        kw["job_script_prologue"] = list(profile.setup)
    kw.update(profile.dask)
    return kw


def _hhmmss(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def slurm_cluster(profile: Profile, workers: int = 1, log_directory: str | Path | None = None) -> Any:
    """A dask-jobqueue ``SLURMCluster`` from a profile, scaled to ``workers`` jobs; with
    ``log_directory``, each job writes its worker's log there (``dask-worker-JOBID.err``)."""
    from dask_jobqueue import SLURMCluster

    kw = dask_cluster_kwargs(profile)
    if log_directory is not None:
        kw["log_directory"] = str(log_directory)
    cluster = SLURMCluster(**kw)
    cluster.scale(jobs=workers)
    return cluster
