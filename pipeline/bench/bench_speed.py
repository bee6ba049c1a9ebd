"""``diffda bench speed``: Lorenz-63 cycles timed side by side with DAPPER (same filter, N, cycles).

diffda's cases are ``diffda run``s on the ``sakov2012`` setting (25 RK4 steps of 0.01 per cycle,
all components observed, R = 2 I, no model noise); the time per cycle is the sum of the runs'
``cycle_seconds`` over the cycles (start-up and data making excluded). DAPPER runs in a venv of its
own (``env/dapper-venv.sh``) through :mod:`.dapper_twin`, on its own truth of the same system, in
the same benchmark run, so the ratios compare like with like on the machine's load of the moment.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import load_config
from ..run import assimilate
from ..evaluate.report import markdown_table

DATA = ["data.preset=lorenz63", "data.params={q: 0.0, r: 2.0, steps: 25, cycles: %d}"]
#: (label, diffda overrides, DAPPER case or None)
CASES = [
    ("ETKF N=10", ["filter.method=etkf", "filter.particles=10", "filter.inflation=1.02"], "enkf-sqrt:10:1.02"),
    ("bootstrap PF N=100", ["filter.method=pf-bootstrap", "filter.particles=100", "filter.regularization=2.4",
                            "filter.resample_threshold=0.3"], "partfilt:100:2.4:0.3"),
    ("ETKF N=10, 64-step diffusion forecast", ["filter.method=etkf", "filter.particles=10", "filter.inflation=1.02",
                                               "sampler.exact=false"], None),
    ("optimal-proposal PF N=100 (guided, MMPS)", ["filter.method=pf-optimal", "filter.particles=100",
                                                  "guidance=mmps", "filter.weights=inflated", "filter.regularization=2.4",
                                                  "filter.resample_threshold=0.3"], None),
]


def dapper_python(root: Path) -> Path:
    """``.dapper-venv/bin/python`` after ``env/dapper-venv.sh`` (which installs DAPPER when absent)."""
    subprocess.run(["bash", str(root / "env" / "dapper-venv.sh")], check=True)
    return root / ".dapper-venv" / "bin" / "python"


def run_speed(out_root: Path, cycles: int, root: Path, log: Callable[[str], None] = lambda s: None) -> tuple[str, dict]:
    from ..commands.run import ensure_data

    data_dir = out_root / f"data-{cycles}"  # ensure_data does not compare parameters
    base = [DATA[0], DATA[1] % cycles]
    ensure_data(load_config(overrides=base), data_dir)
    ours = {}
    for label, extra, _ in CASES:
        m = assimilate(load_config(overrides=[*base, *extra]), data_dir, out_root / label.split(",")[0].replace(" ", "-"),
                       fresh=True).metrics
        ours[label] = m
        log(f"diffda {label}: {1e3 * m['wall_seconds'] / m['cycles']:.1f} ms/cycle, rmse_a {m['rmse_analysis']:.3f}")
    cases = [c for _, _, c in CASES if c]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    proc = subprocess.run([str(dapper_python(root)), str(Path(__file__).with_name("dapper_twin.py")), str(cycles), "25",
                           *cases], capture_output=True, text=True, env=env, check=True)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    by_case = {r["case"]: r for r in theirs["results"]}
    rows = []
    for label, extra, case in CASES:
        m = ours[label]
        ms = 1e3 * m["wall_seconds"] / m["cycles"]
        share = m["denoiser_seconds"] / max(m["wall_seconds"], 1e-12)
        d = by_case.get(case)
        rows.append([label, f"{ms:.1f}", f"{share:.0%}", f"{m['rmse_analysis']:.3f}",
                     f"{d['ms_per_cycle']:.1f}" if d else "-", f"{d['rmse_analysis']:.3f}" if d else "-",
                     f"{ms / d['ms_per_cycle']:.2f}" if d else "-"])
    table = markdown_table(["case", "diffda ms/cycle", "denoiser share", "diffda RMSE a", "DAPPER ms/cycle",
                            "DAPPER RMSE a", "ratio diffda/DAPPER"], rows)
    cmds = "\n".join(f"    diffda run --data {data_dir} --out RUN " + " ".join(f"--set {o!r}" if " " in o else f"--set {o}"
                                                                           for o in [*base, *extra])
                     for _, extra, _ in CASES)
    body = (f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), {torch.get_num_threads()} torch thread(s), "
            f"CPU; {cycles} cycles each; DAPPER {theirs['dapper']} ({', '.join(r['method'] for r in theirs['results'])}) "
            f"in the same run, on its own truth of the same system (RMSEs are indicative; the ratios are the measure). "
            f"The denoiser share counts the exact one-draw transitions as denoiser calls.\n\n{table}\n\n"
            f"The diffda runs:\n\n{cmds}\n")
    return body, {"diffda": ours, "dapper": theirs}
