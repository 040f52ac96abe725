"""Measuring one benchmark run of ``inference_speed.py``: wall time and peak memory of a fresh process,
and the state of the machine (load, other busy processes, hardware)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pss_bytes(pid: int) -> int:
    """Proportional set size of one process (pages shared with other processes split between them)."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def run_measured(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, poll_s: float = 0.05, pss_every_s: float = 1.0
) -> dict:
    """Run ``cmd`` in a fresh process: wall time, exit code and peak memory (rusage; process-tree polling)."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            top = None
        peak_pss = peak_sum = 0
        max_procs = 1
        next_pss = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - t0
                break
            if top is not None:
                try:
                    procs = [top, *top.children(recursive=True)]
                except psutil.Error:
                    procs = [top]
                rss_sum = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss_sum += p.memory_info().rss  # /proc/PID/statm: cheap enough to poll often
                peak_sum = max(peak_sum, rss_sum)
                max_procs = max(max_procs, len(procs))
                now = time.perf_counter()
                if len(procs) > 1 and now >= next_pss:  # smaps_rollup costs ~10-25 ms per large process
                    pss = 0
                    for p in procs:
                        with contextlib.suppress(OSError, ValueError):
                            pss += _pss_bytes(p.pid)
                    peak_pss = max(peak_pss, pss)
                    next_pss = now + pss_every_s
            time.sleep(poll_s)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rusage_mb = usage.ru_maxrss / 1024.0  # kB on Linux
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(max(rusage_mb, peak_pss / 2**20), 1),
        "peak_rss_rusage_mb": round(rusage_mb, 1),
        "peak_pss_tree_polled_mb": round(peak_pss / 2**20, 1),
        "peak_rss_tree_sum_polled_mb": round(peak_sum / 2**20, 1),
        "max_processes": max_procs,
        "user_cpu_s": round(usage.ru_utime, 2),
        "system_cpu_s": round(usage.ru_stime, 2),
        "returncode": proc.returncode,
        "log": str(log),
    }


def check_run(result: dict, what: str) -> None:
    if result["returncode"] != 0:
        tail = Path(result["log"]).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} failed (exit {result['returncode']}); log {result['log']}:\n{tail}")


def busy_other_processes(seconds: float = 2.0) -> dict:
    """Load average and the processes (other than this one) that used CPU over ``seconds``."""
    import psutil

    me = os.getpid()
    procs = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.info["pid"] == me:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    total = 0.0
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 5.0:
            total += pct
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or ""])[:160]
            busy.append({"pid": p.info["pid"], "cpu_percent": round(pct, 1), "cmd": cmd})
    return {
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "other_processes_cpu_percent": round(total, 1),
        "busy_processes": sorted(busy, key=lambda d: -d["cpu_percent"])[:8],
    }


def machine_info() -> dict:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
