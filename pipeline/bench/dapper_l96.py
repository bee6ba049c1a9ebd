"""DAPPER reference runs on Lorenz-96 (sakov2008, optional q and |x|); run with DAPPER's own venv (env/dapper-venv.sh):

    .dapper-venv/bin/python pipeline/bench/dapper_l96.py '{"cycles": 500, "burnin": 100, "cases": [...]}'

Imports nothing of diffda. Lorenz-96 ``sakov2008`` (F = 8, 40 variables, obs every 0.05, R = I), with
optional model noise ``q`` per cycle (DAPPER scales ``Dyn.noise`` by ``dt``: ``C = q / dt``) and
observation operator ``identity`` or ``abs``. A case is ``{"method": "LETKF"|"EnKF"|"PartFilt",
"N": 10, ...DAPPER keyword arguments}``. Prints one JSON line: per case RMSE and spread of the
analysis (DAPPER's ``err.rms.a``, ``spread.a``, after the burn-in) and seconds per cycle.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def hmm(cycles: int, burnin: int, q: float, operator: str):
    import dapper.mods as modelling
    from dapper.mods.Lorenz96 import step, x0
    from dapper.tools.localization import nd_Id_localization

    nx, dt = 40, 0.05
    tseq = modelling.Chronology(dt, dko=1, Ko=cycles, BurnIn=burnin * dt)
    dyn = {"M": nx, "model": step, "noise": q / dt}
    obs = modelling.partial_Id_Obs(nx, np.arange(nx))
    if operator == "abs":
        obs["model"] = lambda x, t=None: np.abs(x)
        obs["linear"] = lambda x, t=None: np.diag(np.sign(x))
    obs["noise"] = 1
    obs["localizer"] = nd_Id_localization((nx,), (2,))
    return modelling.HiddenMarkovModel(dyn, obs, tseq, modelling.GaussRV(mu=x0(nx), C=0.001))


def main(spec: dict) -> dict:
    import dapper as dpr
    import dapper.da_methods as da

    model = hmm(spec["cycles"], spec["burnin"], spec.get("q", 0.0), spec.get("operator", "identity"))
    dpr.set_seed(spec.get("seed", 3000))
    xx, yy = model.simulate()
    out = []
    for case in spec["cases"]:
        kw = dict(case)
        method = getattr(da, kw.pop("method"))
        xp = method(**kw)
        start = time.perf_counter()
        xp.assimilate(model, xx, yy)
        seconds = time.perf_counter() - start
        xp.stats.average_in_time()
        out.append({**case, "rmse": float(xp.avrgs.err.rms.a.val), "spread": float(xp.avrgs.spread.rms.a.val),
                    "seconds_per_cycle": seconds / spec["cycles"]})
    return {"dapper": dpr.__version__, "cases": out}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
