"""Run DAPPER's filters on Lorenz-63 (``sakov2012``) and print their time per cycle and RMSE as JSON.

Executed by DAPPER's own interpreter (``.dapper-venv/bin/python``, made by ``env/dapper-venv.sh``),
never imported by diffda: ``python dapper_twin.py CYCLES STEPS CASE...`` with ``CASE`` one of
``enkf-sqrt:N:INFL`` and ``partfilt:N:REG:NER``. ``STEPS`` are RK4 steps of 0.01 per cycle
(DAPPER's ``dko``). Time per cycle = ``assimilate`` wall time / observation cycles.
"""

import json
import sys
import time

import dapper as dpr
import dapper.da_methods as da
from dapper.mods.Lorenz63.sakov2012 import HMM


def method(case: str):
    kind, *args = case.split(":")
    if kind == "enkf-sqrt":
        return da.EnKF("Sqrt", N=int(args[0]), infl=float(args[1]))
    if kind == "partfilt":
        return da.PartFilt(N=int(args[0]), reg=float(args[1]), NER=float(args[2]))
    raise SystemExit(f"unknown case {case!r}")


def main() -> None:
    cycles, steps, cases = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    HMM.tseq = dpr.tools.chronos.Chronology(dt=0.01, dko=steps, Ko=cycles - 1, BurnIn=0.01 * steps)
    xx, yy = HMM.simulate()
    out = []
    for case in cases:
        xp = method(case)
        start = time.perf_counter()
        xp.assimilate(HMM, xx, yy, liveplots=False)
        seconds = time.perf_counter() - start
        xp.stats.average_in_time()
        out.append({"case": case, "method": str(xp), "ms_per_cycle": 1e3 * seconds / cycles,
                    "rmse_analysis": float(xp.avrgs.err.rms.a.val)})
    print(json.dumps({"dapper": dpr.__version__, "results": out}))


if __name__ == "__main__":
    main()
