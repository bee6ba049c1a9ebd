"""``diffda bench NAME``: measured benchmarks, written to ``docs/benchmarks.md`` with the command."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..config import apply_overrides
from ..errors import DiffdaError
from ..evaluate.report import write_section


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and record it in docs/benchmarks.md")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    f = bsub.add_parser("filters", help="PF (optimal proposal), bootstrap PF and ETKF on a twin")
    f.add_argument("--preset", default="lorenz96")
    f.add_argument("--particles", default="20,100", type=_ints, help="comma-separated ensemble sizes")
    f.add_argument("--data", type=Path, default=None)
    f.add_argument("--out", type=Path, default=Path("runs/bench-filters"))
    _add_overrides(f, "common config override for every case, e.g. --set run.cycles=100")
    f.set_defaults(func=filters)
    lk = bsub.add_parser("letkf", help="LETKF beside DAPPER's on Lorenz-96 sakov2008 (q = 0)")
    lk.add_argument("--particles", default="7,10,20,40", type=_ints, help="comma-separated ensemble sizes")
    lk.add_argument("--cycles", type=int, default=500)
    lk.add_argument("--spinup", type=int, default=100)
    lk.add_argument("--loc-rad", type=float, default=4.0, help="DAPPER's loc_rad (diffda's radius is 1.82 x it)")
    lk.add_argument("--data", type=Path, default=Path("data/lorenz96-q0"))
    lk.add_argument("--out", type=Path, default=Path("runs/bench-letkf"))
    lk.set_defaults(func=letkf_bench)
    sc = bsub.add_parser("scaling", help="the same run under mpiexec -n P for several P")
    sc.add_argument("--ranks", default="1,2", type=_ints, help="comma-separated rank counts (default 1,2)")
    sc.add_argument("--data", type=Path, default=Path("data/lorenz96"))
    sc.add_argument("--out", type=Path, default=Path("runs/bench-scaling"))
    _add_overrides(sc)
    sc.set_defaults(func=scaling)
    io = bsub.add_parser("io", help="input wait per cycle and analysis write throughput on the sphere data")
    io.add_argument("--data", type=Path, default=Path("data/sphere"), help="sphere data (made if absent)")
    io.add_argument("--out", type=Path, default=Path("runs/bench-io"))
    io.add_argument("--members", type=int, default=32, help="members written per cycle in the write test")
    io.add_argument("--write-cycles", type=int, default=40)
    _add_overrides(io, "config override for the runs, e.g. --set filter.particles=64")
    io.set_defaults(func=io_bench)
    dn = bsub.add_parser("denoiser", help="neural denoiser throughput (particle-steps/s), fp32 vs bf16")
    _add_checkpoint(dn)
    dn.add_argument("--batches", default="16,64,256", type=_ints, help="comma-separated micro-batch sizes")
    dn.add_argument("--dtypes", default="fp32,bf16", help="network autocast dtypes: fp32, bf16")
    dn.add_argument("--device", default="auto")
    dn.add_argument("--compile", action="store_true", help="torch.compile the network")
    dn.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs for no-grad calls (CUDA only)")
    dn.add_argument("--repeats", type=int, default=3)
    dn.add_argument("--guided-batch", type=int, default=64, help="micro-batch of the MMPS-guided call (0: skip)")
    dn.add_argument("--cg-iterations", type=int, default=8)
    dn.set_defaults(func=denoiser_bench)
    cy = bsub.add_parser("cycle", help="full filter cycles with the neural emulator: denoiser share of the time")
    cy.add_argument("--data", type=Path, default=Path("data/sphere"), help="sphere data (made if absent)")
    _add_checkpoint(cy)
    cy.add_argument("--out", type=Path, default=Path("runs/bench-cycle"))
    cy.add_argument("--particles", type=int, default=256)
    cy.add_argument("--steps", type=int, default=64, help="sampler steps")
    cy.add_argument("--cycles", type=int, default=2, help="cycles run (the first is shown apart)")
    cy.add_argument("--dtypes", default="fp32,bf16")
    cy.add_argument("--compile", action="store_true")
    cy.add_argument("--cuda-graphs", action="store_true")
    _add_overrides(cy, "config override, e.g. --set guidance.cg_iterations=4")
    cy.set_defaults(func=cycle_bench)
    sp = bsub.add_parser("speed", help="Lorenz-63 ETKF and PF cycles timed side by side with DAPPER")
    sp.add_argument("--cycles", type=int, default=200)
    sp.add_argument("--out", type=Path, default=Path("runs/bench-speed"))
    sp.set_defaults(func=speed_bench)
    kd = bsub.add_parser("kde", help="the KDE filter against etkf, pf-bootstrap, pf-optimal on Lorenz-63 (dt_obs 0.1)")
    kd.add_argument("--particles", default="10,20,50,100,250", type=_ints, help="comma-separated ensemble sizes")
    kd.add_argument("--cycles", type=int, default=500)
    kd.add_argument("--methods", default="kde,etkf,pf-bootstrap,pf-optimal")
    kd.add_argument("--settings", default="x3,abs", help="x3 (x3 alone, identity) and/or abs (all through |x|)")
    kd.add_argument("--out", type=Path, default=Path("runs/bench-kde"))
    _add_overrides(kd)
    kd.set_defaults(func=kde_bench)
    ab = bsub.add_parser("abs", help="every filter on Lorenz-96 observed through |x| (q = 0.1), beside DAPPER's")
    ab.add_argument("--particles", default="20,40", type=_ints, help="comma-separated ensemble sizes")
    ab.add_argument("--cycles", type=int, default=400)
    ab.add_argument("--spinup", type=int, default=40)
    ab.add_argument("--methods", default=None, help="comma-separated subset of the rows (default: all)")
    ab.add_argument("--out", type=Path, default=Path("runs/bench-abs"))
    ab.set_defaults(func=abs_bench)
    sk = bsub.add_parser("skill", help="forecast skill of a neural checkpoint vs persistence and climatology")
    _add_checkpoint(sk)
    sk.add_argument("--data", type=Path, required=True, help="the training store (its held-out tail is scored)")
    sk.add_argument("--test", type=Path, default=None, help="an independent store to score as well (e.g. data/sphere)")
    sk.add_argument("--members", type=int, default=8)
    sk.add_argument("--times", type=int, default=16, help="forecast times of the ensemble scores")
    sk.add_argument("--steps", type=int, default=16, help="sampler steps of the ensemble members")
    sk.add_argument("--leads", type=int, default=60, help="mean-rollout leads (6-hour steps)")
    sk.add_argument("--sampled-days", type=int, default=30, help="length of the sampled rollouts (days)")
    sk.add_argument("--rollout-starts", type=int, default=4)
    sk.add_argument("--rollout-members", type=int, default=4)
    sk.add_argument("--no-rollout", action="store_true", help="skip the rollout scores")
    sk.add_argument("--quick", action="store_true", help="smoke-test counts (seconds; numbers are not skill)")
    sk.add_argument("--assimilate", type=Path, default=None, metavar="DATA",
                    help="also run the sphere assimilation on DATA (and a free run) and score its analysis")
    sk.add_argument("--out", type=Path, default=Path("runs/bench-skill"))
    _add_overrides(sk, "config override of the assimilation, e.g. --set filter.particles=16")
    sk.set_defaults(func=skill_bench)
    sm = bsub.add_parser("smoother", help="the smoother's error against RTS for k and C (linear twin)")
    sm.add_argument("--k", default="1,2,3,4", type=_ints, help="comma-separated window half-widths")
    sm.add_argument("--corrections", default="0,1,2", type=_ints, help="comma-separated Langevin corrections C")
    sm.add_argument("--variants", default="mmps-windows,mmps-diagonal,sda")
    sm.add_argument("--samples", type=int, default=256)
    sm.add_argument("--length", type=int, default=15, help="observation times in the window")
    sm.add_argument("--data", type=Path, default=Path("data/linear-smooth"))
    _add_overrides(sm)
    sm.set_defaults(func=smoother_bench)
    st = bsub.add_parser("smoother-twins", help="the KDE and network smoothers against filters and a particle smoother (L63, L96)")
    st.add_argument("--cases", default="l63-x1,l63-abs,l63-arctan,l96",
                    help="comma-separated: l63-x1, l63-abs, l63-arctan, l96")
    st.add_argument("--length", type=int, default=20, help="observation times in the window")
    st.add_argument("--start", type=int, default=50, help="cycles before the window")
    st.add_argument("--k", type=int, default=2, help="window half-width")
    st.add_argument("--samples", type=int, default=32)
    st.add_argument("--particles", type=int, default=20000, help="bootstrap PF reference (Lorenz-63)")
    st.add_argument("--net-steps", type=int, default=0, help="training steps of the window network (0: the "
                    "system's, 4000)")
    st.add_argument("--train-cycles", type=int, default=40000, help="cycles of the run the network learns from")
    st.add_argument("--blur", default="", help="comma-separated model-noise variances q' of extra FFBSi rows "
                    "(Lorenz-63): the reference smoother given a blurred model")
    st.add_argument("--out", type=Path, default=Path("runs/bench-smoother-twins"))
    _add_overrides(st, "smoother config override, e.g. --set model.bandwidth=0.5")
    st.set_defaults(func=smoother_twins_bench)
    sh = bsub.add_parser("sphere", help="the gridded skill table: free run, pf-local, LETKF, tempered PF at several N")
    sh.add_argument("--data", type=Path, default=Path("data/sphere"), help="sphere data (made if absent: the default)")
    sh.add_argument("--methods", default="pf-local,letkf,pf-tempered", help="comma-separated rows beside the free "
                    "run: pf-local, letkf, pf-tempered")
    sh.add_argument("--particles", default="16,64", type=_ints, help="comma-separated ensemble sizes")
    sh.add_argument("--cycles", type=int, default=50)
    sh.add_argument("--spinup", type=int, default=10)
    sh.add_argument("--jobs", type=int, default=2, help="rows run at a time (one torch thread each)")
    sh.add_argument("--twin", action="store_true", help="judge against the perfect-model twin's bars")
    sh.add_argument("--name", default=None, help="report section and PNG name (default: sphere-<data dir name>)")
    sh.add_argument("--fresh", action="store_true", help="redo finished rows")
    sh.add_argument("--out", type=Path, default=None, help="run directories (default: runs/bench-<name>)")
    _add_overrides(sh, "config override of every row, e.g. --set run.seed=1")
    sh.set_defaults(func=sphere_bench)
    gp = bsub.add_parser("gpu", help="the prepared GPU check: N=256 cycle, fp32/bf16, compile, CUDA graphs, NCCL")
    gp.add_argument("--device", default="cuda", help="cuda (default; refused without one) or cpu (with --quick)")
    gp.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of the code paths")
    gp.add_argument("--data", type=Path, default=Path("data/sphere"), help="sphere data (made if absent)")
    _add_checkpoint(gp)
    gp.add_argument("--out", type=Path, default=Path("runs/bench-gpu"))
    gp.set_defaults(func=gpu_bench)
    for b in bsub.choices.values():
        b.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))


def _ints(text: str) -> list[int]:
    """An option's comma-separated integers, e.g. ``16,64``; argparse names the option when one is not."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 16,64; got {text!r}") from None


def _add_overrides(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint directory (default: the shipped one)")


def _command() -> str:
    return "diffda " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _publish(report: Path, name: str, title: str, body: str) -> int:
    """Write section ``name`` of ``report`` (title, the command that made it, ``body``) and print it."""
    section = f"## {title}\n\n    {_command()}\n\n{body}"
    write_section(report, name, section)
    print(section)
    return 0


def _sphere_data(data: Path) -> None:
    """Make the sphere preset's stores in ``data`` when they are absent."""
    if not ((data / "truth.zarr").exists() and (data / "observations.zarr").exists()):
        from .make_data import make_data

        _log(f"making sphere data in {data}")
        make_data("sphere", data, {})


def filters(args: argparse.Namespace) -> int:
    from ..bench.bench_filters import run_filters

    apply_overrides({}, args.overrides)  # syntax check before any work
    data = args.data or Path("data") / args.preset
    body, _ = run_filters(data, args.out, args.preset, args.particles,
                          args.overrides, log=_log)
    return _publish(args.report, f"filters-{args.preset}", f"Filters on the {args.preset} twin", body)


def letkf_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_letkf import run_letkf

    body, _ = run_letkf(args.data, args.out, args.particles, args.cycles, args.spinup,
                        args.loc_rad, log=_log)
    return _publish(args.report, "letkf-dapper", "LETKF beside DAPPER (Lorenz-96 sakov2008)", body)


def scaling(args: argparse.Namespace) -> int:
    import os
    import platform

    from ..commands.run import ensure_data
    from ..config import load_config
    from ..bench.bench_scaling import run_scaling

    overrides = ["data.preset=lorenz96", "filter.particles=64", "run.cycles=50", *args.overrides]
    ensure_data(load_config(overrides=overrides), args.data)
    table, _ = run_scaling(args.data, args.out, args.ranks, overrides)
    body = (f"Machine: {platform.machine()}, {os.cpu_count()} cores; one thread per rank; config: "
            f"{', '.join(overrides)}. Fractions are of rank 0's cycle time (comm includes waiting for "
            f"other ranks).\n\n{table}\n")
    return _publish(args.report, "scaling", "Scaling over MPI ranks (gloo, CPU)", body)


def io_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_io import run_io

    apply_overrides({}, args.overrides)  # syntax check before any work
    _sphere_data(args.data)
    # A deliberately cheap cycle (few particles and steps, DPS, seed weights: the inflated weights
    # build a dense M x M covariance, M ~ 1500 observations here) so that input waits show
    overrides = ["filter.particles=8", "sampler.steps=4", "guidance=dps", "filter.weights=seed",
                 "filter.init_std=0.1", "run.dtype=float32", "run.cycles=24", *args.overrides]
    body, _ = run_io(args.data, args.out, overrides, members=args.members, write_cycles=args.write_cycles,
                     log=_log)
    return _publish(args.report, "io", "Input wait and analysis writes (data plane)", body)


def _checkpoint(path: Path | None) -> Path:
    from ..models.weights import default_checkpoint

    return Path(path) if path is not None else default_checkpoint()


def denoiser_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_denoiser import run_denoiser_bench

    ckpt = _checkpoint(args.checkpoint)
    body, _ = run_denoiser_bench(ckpt, args.batches, args.dtypes.split(","),
                                 device=args.device, compile=args.compile, cuda_graphs=args.cuda_graphs,
                                 repeats=args.repeats, guided_batch=args.guided_batch,
                                 cg_iterations=args.cg_iterations, log=_log)
    return _publish(args.report, "denoiser", "Neural denoiser throughput", body)


def cycle_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_denoiser import run_cycle_bench

    apply_overrides({}, args.overrides)  # syntax check before any work
    ckpt = _checkpoint(args.checkpoint)
    _sphere_data(args.data)
    body, _ = run_cycle_bench(args.data, args.out, ckpt, args.particles, args.steps, args.cycles,
                              args.dtypes.split(","), args.overrides, compile=args.compile,
                              cuda_graphs=args.cuda_graphs, log=_log)
    return _publish(args.report, "cycle", "Full assimilation cycle with the neural emulator", body)


def speed_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_speed import run_speed

    root = Path(__file__).resolve().parents[2]
    body, _ = run_speed(args.out, args.cycles, root, log=_log)
    return _publish(args.report, "speed", "Twin cycle speed against DAPPER (Lorenz-63)", body)


def kde_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_kde import METHODS, SETTINGS, run_kde

    apply_overrides({}, args.overrides)  # syntax check before any work
    methods, settings = args.methods.split(","), args.settings.split(",")
    for name, given, known in (("--methods", methods, METHODS), ("--settings", settings, SETTINGS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            raise DiffdaError(f"diffda bench kde: unknown {name} {unknown}; choose from {','.join(known)}")
    body, _ = run_kde(args.out, args.particles, args.cycles, methods, settings,
                      args.overrides, log=_log)
    return _publish(args.report, "kde", "The closed-form KDE filter on Lorenz-63 every 0.1 time units", body)


def abs_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_abs import METHODS, run_abs

    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DiffdaError(f"diffda bench abs: unknown --methods {unknown}; choose from {','.join(METHODS)}")
    body, _ = run_abs(args.out, args.particles, args.cycles, args.spinup, methods,
                      log=_log)
    return _publish(args.report, "abs-lorenz96", "Every filter on Lorenz-96 observed through |x|", body)


def skill_bench(args: argparse.Namespace) -> int:
    import json

    from ..bench.bench_skill import run_skill

    ckpt = _checkpoint(args.checkpoint)
    rollout = None if args.no_rollout else dict(leads=args.leads, sampled_days=args.sampled_days,
                                                  starts=args.rollout_starts, members=args.rollout_members,
                                                  steps=args.steps)
    body, results = run_skill(ckpt, args.data, args.test, members=args.members, times=args.times, steps=args.steps,
                              log=_log, rollout=rollout, quick=args.quick)
    if args.assimilate is not None:
        from ..bench.bench_skill import run_assimilation_skill

        overrides = ["data.preset=sphere", "model=neural", f"model.checkpoint={ckpt}", "filter.weights=seed",
                     "run.dtype=float32", *args.overrides]
        run_body, run_results = run_assimilation_skill(args.assimilate, args.out, overrides,
                                                       log=_log)
        results["assimilation"] = run_results
        body += f"\n### Analysis skill of an assimilation run\n\n{run_body}"
    _publish(args.report, "skill", "Forecast skill of the neural emulator (sphere)", body)
    print(json.dumps({k: v for k, v in results.items() if k != "ensemble"}, indent=1)[:2000], file=sys.stderr)
    return 0


def smoother_bench(args: argparse.Namespace) -> int:
    from ..smoothers.bench import run_smoother_bench

    apply_overrides({}, args.overrides)  # syntax check before any work
    body, _ = run_smoother_bench(args.data, args.k,
                                 args.corrections, args.variants.split(","),
                                 args.samples, args.length, args.overrides, log=_log)
    return _publish(args.report, "smoother", "Score-based smoother against the RTS oracle (k, C)", body)


def smoother_twins_bench(args: argparse.Namespace) -> int:
    from ..smoothers.bench_twins import run_twins_bench

    apply_overrides({}, args.overrides)  # syntax check before any work
    try:
        blur = tuple(float(q) for q in args.blur.split(",") if q)
    except ValueError:
        raise DiffdaError(f"--blur takes comma-separated positive numbers (got {args.blur!r})") from None
    if any(q <= 0 for q in blur):
        raise DiffdaError(f"--blur: the model-noise variances must be positive (got {args.blur!r})")
    body, _ = run_twins_bench(args.out, args.cases.split(","), args.length, args.start, args.k, args.samples,
                              args.particles, args.net_steps, args.train_cycles, args.overrides, blur, log=_log)
    return _publish(args.report, "smoother-twins", "Score-based smoother against filters (Lorenz-63, Lorenz-96)", body)


def sphere_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_sphere import plot, run_sphere, verdict

    apply_overrides({}, args.overrides)  # syntax check before any work
    name = args.name or f"sphere-{args.data.name}"
    out = args.out or Path("runs") / f"bench-{name}"
    if args.data == Path("data/sphere"):
        _sphere_data(args.data)
    methods = [m for m in args.methods.split(",") if m]
    body, scores = run_sphere(args.data, out, methods, args.particles, args.cycles, args.spinup, args.overrides,
                              jobs=args.jobs, fresh=args.fresh, log=_log)
    png = args.report.parent / "img" / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(png, out, list(scores), f"{args.data}: normalised RMSE (solid) and spread (dotted) by cycle")
    body += f"\n{verdict(scores, args.twin)}\n\n![RMSE and spread by cycle](img/{png.name})\n"
    return _publish(args.report, name, f"Gridded skill on `{args.data}`", body)


def gpu_bench(args: argparse.Namespace) -> int:
    from ..bench.bench_gpu import check_device, run_gpu_bench

    check_device(args.device, args.quick)  # refuse before making data
    ckpt = _checkpoint(args.checkpoint)
    _sphere_data(args.data)
    body, _ = run_gpu_bench(args.data, args.out, ckpt, device=args.device, quick=args.quick, log=_log)
    name, title = ("gpu-quick", "GPU check (CPU smoke run)") if args.quick else ("gpu", "GPU check")
    return _publish(args.report, name, title, body)
