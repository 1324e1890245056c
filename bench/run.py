"""Benchmark siptls against Kamailio (and a minimal Twisted responder) over SIP/TLS.

    python bench/run.py [--quick] [--runs 3] [--servers siptls,kamailio,standin]
                        [--out bench/results]

For each server and each run: start the server with a fresh process, then
run the scenarios trunk, crowd, handshakes (own driver), s_time (openssl
s_time -new) and idle, then stop it.  Figures are medians over the runs;
the table, the JSON and the crowd-latency plot go to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen, plot, servers  # noqa: E402

SCENARIOS = ("trunk", "crowd", "handshakes", "s_time", "idle")

# Full size and --quick size of every scenario; every loop is also bounded in time.
SIZES = {
    False: {
        "trunk": {"count": 100000, "window": 100, "seconds": 10.0},
        "crowd": {"connections": 100, "count": 50000, "seconds": 10.0},
        "handshakes": {"count": 20000, "seconds": 5.0, "parallel": 8},
        "s_time": {"seconds": 5},
        "idle": {"steps": (1000, 10000), "settle": 1.0, "seconds": 120.0},
    },
    True: {
        "trunk": {"count": 500, "window": 20, "seconds": 3.0},
        "crowd": {"connections": 10, "count": 500, "seconds": 3.0},
        "handshakes": {"count": 50, "seconds": 3.0, "parallel": 4},
        "s_time": {"seconds": 1},
        "idle": {"steps": (50, 200), "settle": 0.3, "seconds": 20.0},
    },
}

# (scenario, figure, label, higher is better)
FIGURES = [
    ("trunk", "msgs_per_server_cpu_s", "Trunk msgs / server CPU-s", True),
    ("trunk", "msgs_per_s", "Trunk msgs / s", True),
    ("trunk", "generator_cpu_share", "  (generator CPU share)", None),
    ("crowd", "msgs_per_server_cpu_s", "Crowd msgs / server CPU-s", True),
    ("crowd", "msgs_per_s", "Crowd msgs / s", True),
    ("crowd", "p50_ms", "Crowd median ms", False),
    ("crowd", "p99_ms", "Crowd p99 ms", False),
    ("crowd", "generator_cpu_share", "  (generator CPU share)", None),
    ("handshakes", "handshakes_per_server_cpu_s", "Handshakes / server CPU-s (py)", True),
    ("handshakes", "handshakes_per_s", "Handshakes / s (py)", True),
    ("handshakes", "generator_cpu_share", "  (generator CPU share)", None),
    ("s_time", "handshakes_per_server_cpu_s", "Handshakes / server CPU-s (s_time)", True),
    ("s_time", "handshakes_per_s", "Handshakes / s (s_time)", True),
    ("s_time", "generator_cpu_share", "  (generator CPU share)", None),
    ("idle", "kib_per_conn_small", "Idle KiB / conn (first step)", False),
    ("idle", "kib_per_conn_large", "Idle KiB / conn (second step)", False),
]

# (label, scenario, figure, comparison, bound); comparison "ratio>=" is against Kamailio.
TARGETS = [
    ("Trunk >= 2x Kamailio msgs/CPU-s", "trunk", "msgs_per_server_cpu_s", "ratio>=", 2.0),
    ("Crowd >= 1x Kamailio msgs/CPU-s", "crowd", "msgs_per_server_cpu_s", "ratio>=", 1.0),
    ("Crowd p99 <= 1.5x Kamailio", "crowd", "p99_ms", "ratio<=", 1.5),
    (
        "Handshakes >= 1.5x Kamailio/CPU-s (py)",
        "handshakes",
        "handshakes_per_server_cpu_s",
        "ratio>=",
        1.5,
    ),
    (
        "Handshakes >= 1.5x Kamailio/CPU-s (s_time)",
        "s_time",
        "handshakes_per_server_cpu_s",
        "ratio>=",
        1.5,
    ),
    ("Idle <= 24 KiB/conn", "idle", "kib_per_conn_large", "abs<=", 24.0),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny scenarios: a smoke test in seconds")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is kept")
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to CPU 0 and the load generators to CPU 1 "
        "(pinning is the default on machines with 2 or more CPUs: it keeps the two "
        "from competing for one core, which makes runs far less noisy)",
    )
    p.add_argument("--servers", default="siptls,kamailio,standin", help="comma-separated")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    p.add_argument("--out", default="bench/results", help="directory for JSON, table and plot")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="P-256 or RSA 2048")
    p.add_argument("--twistd", default=servers.default_twistd(), help="twistd that has siptls")
    p.add_argument(
        "--siptls-python",
        default=None,
        help="python of a venv with siptls installed; uses the twistd next to it",
    )
    p.add_argument(
        "--siptls-cmd",
        default=servers.SIPTLS_TEMPLATE,
        help="command line for siptls; {twistd} {port} {cert} {key} are filled in",
    )
    p.add_argument("--kamailio", default="kamailio", help="kamailio binary")
    p.add_argument("--kamailio-shm", type=int, default=2048, help="kamailio -m (MiB)")
    p.add_argument("--standin-python", default=None, help="python with Twisted for standin.py")
    p.add_argument("--openssl", default="openssl", help="openssl binary for s_time")
    p.add_argument(
        "--plot-python",
        default=None,
        help="another python with matplotlib, used when this one has none",
    )
    p.add_argument(
        "--keep-workdir", action="store_true", help="keep the temp dir (configs, server logs)"
    )
    p.add_argument("--idle-steps", default=None, help="e.g. 1000,10000 (default by mode)")
    return p.parse_args(argv)


def make_certificate(directory: Path, key_type: str) -> tuple[Path, Path]:
    """One self-signed certificate for 127.0.0.1, shared by every server."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if key_type == "ec":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *newkey,
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=bench.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:bench.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_scenario(name: str, server: servers.Server, sizes: dict, openssl: str) -> dict[str, object]:
    addr = ("127.0.0.1", server.port)
    meter = loadgen.Meter(server.pid)
    if name == "trunk":
        return loadgen.trunk(addr, meter, **sizes)
    if name == "crowd":
        return loadgen.crowd(addr, meter, **sizes)
    if name == "handshakes":
        return loadgen.handshakes(addr, meter, **sizes)
    if name == "s_time":
        return loadgen.s_time(addr, meter, openssl=openssl, **sizes)
    if name == "idle":
        result = loadgen.idle(addr, meter, **sizes)
        small, large = sizes["steps"][0], sizes["steps"][-1]
        result["kib_per_conn_small"] = result[f"kib_per_conn_{small}"]
        result["kib_per_conn_large"] = result[f"kib_per_conn_{large}"]
        return result
    raise ValueError(name)


def _median(values: list) -> object:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    numbers = [v for v in numbers if not math.isnan(v)]
    if not numbers:
        return values[0] if values else None
    return statistics.median(numbers)


def summarise(runs: list[dict[str, object]]) -> dict[str, object]:
    """Median of every numeric figure over the runs; all_ok only if every run was."""
    keys = {k for r in runs for k in r if k != "latencies_s"}
    out: dict[str, object] = {}
    for k in sorted(keys):
        values = [r[k] for r in runs if k in r]
        if k == "all_ok":
            out[k] = all(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[k] = _median(values)
        else:
            out[k] = values[-1]
    out["runs"] = len(runs)
    return out


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value < 1:
            return f"{value:.2f}"
        if value < 100:
            return f"{value:.1f}"
        return f"{value:,.0f}"
    return str(value)


def table(results: dict[str, dict], names: list[str]) -> str:
    cols = [n for n in names if n in results]
    has_ratio = "siptls" in results and "kamailio" in results
    header = f"{'figure':38}" + "".join(f"{n:>12}" for n in cols)
    if has_ratio:
        header += f"{'siptls/kam':>12}"
    lines = [header, "-" * len(header)]
    for scenario, key, label, better in FIGURES:
        row = f"{label:38}"
        for n in cols:
            row += f"{fmt(results[n].get(scenario, {}).get(key)):>12}"
        if has_ratio and better is not None:
            row += f"{fmt(_ratio(results, scenario, key, 'siptls')):>12}"
        lines.append(row)
    for n in cols:
        bad = [
            s for s, r in results[n].items() if isinstance(r, dict) and not r.get("all_ok", True)
        ]
        if bad:
            lines.append(f"WARNING: {n}: wrong or missing responses in {', '.join(bad)}")
        errors = results[n].get("errors")
        if errors:
            lines.append(f"WARNING: {n}: scenarios failed: {errors}")
    return "\n".join(lines)


def _ratio(results: dict, scenario: str, key: str, name: str) -> float | None:
    try:
        a = results[name][scenario][key]
        b = results["kamailio"][scenario][key]
    except KeyError:
        return None
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return a / b


def targets(results: dict[str, dict]) -> tuple[str, dict]:
    """Pass/fail of each target for siptls (and the stand-in, for reference)."""
    lines: list[str] = []
    verdicts: dict[str, dict] = {}
    for name in ("siptls", "standin"):
        if name not in results:
            continue
        title = (
            "siptls targets"
            if name == "siptls"
            else "the same targets for the stand-in (reference only)"
        )
        lines.append(title + ":")
        verdicts[name] = {}
        for label, scenario, key, how, bound in TARGETS:
            if how == "abs<=":
                value = results[name].get(scenario, {}).get(key)
                ok = None if value is None else value <= bound
                shown = f"{fmt(value)} KiB"
            else:
                value = _ratio(results, scenario, key, name)
                ok = (
                    None
                    if value is None
                    else (value >= bound if how == "ratio>=" else value <= bound)
                )
                shown = "-" if value is None else f"{value:.2f}x"
            verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            verdicts[name][label] = {"value": value, "verdict": verdict}
            lines.append(f"  [{verdict:4}] {label:44} {shown}")
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    sizes = {k: dict(v) for k, v in SIZES[args.quick].items()}
    if args.idle_steps:
        sizes["idle"]["steps"] = tuple(int(x) for x in args.idle_steps.split(","))
    nofile = raise_nofile()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        servers.Server.cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))
        print(f"pinned: servers on CPU {cpus[0]}, load generators on CPU {cpus[1:]}")
    if "idle" in wanted and sizes["idle"]["steps"][-1] + 200 > nofile:
        print(f"open-file limit is {nofile}; idle steps capped below it")
        sizes["idle"]["steps"] = tuple(min(s, nofile - 200) for s in sizes["idle"]["steps"])
    if "s_time" in wanted and not shutil.which(args.openssl):
        print(f"{args.openssl} not found: skipping the s_time scenario")
        wanted.remove("s_time")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.siptls_python:
        args.twistd = str(Path(args.siptls_python).with_name("twistd"))
    opts = servers.Options(
        kamailio=args.kamailio,
        twistd=args.twistd,
        siptls_cmd=args.siptls_cmd,
        standin_python=args.standin_python or servers.default_standin_python(),
        kamailio_shm_mb=args.kamailio_shm,
        max_connections=max(2000, sizes["idle"]["steps"][-1] + 2000),
    )
    results: dict[str, dict] = {}
    latencies: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="siptls-bench-"))
    try:
        cert, key = make_certificate(workdir, args.key_type)
        for name in names:
            runs: dict[str, list[dict]] = {s: [] for s in wanted}
            errors: dict[str, str] = {}
            for run in range(args.runs):
                try:
                    server = servers.build(name, opts, workdir, cert, key)
                    server.start()
                except servers.ServerUnavailable as e:
                    skipped[name] = str(e)
                    print(f"SKIP {name}: {e}")
                    break
                try:
                    print(
                        f"{name} run {run + 1}/{args.runs} (pid {server.pid}, port {server.port})"
                    )
                    for scenario in wanted:
                        time.sleep(0.2)
                        try:
                            r = run_scenario(scenario, server, sizes[scenario], args.openssl)
                        except (
                            loadgen.ScenarioError,
                            loadgen.ConnectionClosed,
                            OSError,
                            subprocess.SubprocessError,
                        ) as e:
                            errors[scenario] = str(e)
                            print(f"  {scenario}: FAILED: {e}")
                            continue
                        if scenario == "crowd":
                            latencies.setdefault(name, []).extend(r["latencies_s"])
                        runs[scenario].append(r)
                        print(f"  {scenario}: {_brief(scenario, r)}")
                finally:
                    server.stop()
            if name in skipped:
                continue
            results[name] = {s: summarise(rs) for s, rs in runs.items() if rs}
            results[name]["raw_runs"] = {
                s: [{k: v for k, v in r.items() if k != "latencies_s"} for r in rs]
                for s, rs in runs.items()
            }
            if errors:
                results[name]["errors"] = errors
    finally:
        if args.keep_workdir:
            print(f"kept certificate, configs and server logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = table(results, names)
    target_text, verdicts = targets(results)
    report = "\n".join(
        [
            f"siptls bench ({'quick' if args.quick else 'full'}, {args.runs} run(s), "
            f"median; key {args.key_type}; {os.cpu_count()} CPUs)",
            text,
            "",
            target_text,
        ]
        + [f"skipped {n}: {why.splitlines()[0]}" for n, why in skipped.items()]
    )
    print()
    print(report)
    (out_dir / "results.txt").write_text(report + "\n")
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "runs": args.runs,
                "key_type": args.key_type,
                "sizes": sizes,
                "servers": results,
                "skipped": skipped,
                "targets": verdicts,
            },
            indent=2,
            default=str,
        )
    )
    (out_dir / "crowd-latencies.json").write_text(json.dumps(latencies))
    print(
        plot.plot_or_explain(
            out_dir / "crowd-latencies.json", out_dir / "crowd-latency.png", args.plot_python
        )
    )
    print(f"written: {out_dir}/results.txt, results.json, crowd-latencies.json")
    return 0 if results else 1


def _brief(scenario: str, r: dict) -> str:
    ok = "" if r.get("all_ok", True) else "  WRONG RESPONSES"
    gen = f"gen CPU {r.get('generator_cpu_share', 0):.0%}"
    if scenario in ("trunk", "crowd"):
        extra = f", p99 {r['p99_ms']:.2f} ms" if scenario == "crowd" else ""
        return (
            f"{r['responses_ok']} ok, {r['msgs_per_s']:,.0f}/s, "
            f"{r['msgs_per_server_cpu_s']:,.0f}/server-CPU-s{extra}, {gen}{ok}"
        )
    if scenario in ("handshakes", "s_time"):
        return (
            f"{r['handshakes_per_s']:,.0f}/s, {r['handshakes_per_server_cpu_s']:,.0f}"
            f"/server-CPU-s, {gen}{ok}"
        )
    steps = [k for k in r if k.startswith("kib_per_conn_") and k[13:].isdigit()]
    return ", ".join(f"{k[13:]} conns: {r[k]:.1f} KiB/conn" for k in steps) + ok


if __name__ == "__main__":
    sys.exit(main())
