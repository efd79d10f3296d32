"""Machine, library versions and thread settings, for every report header."""
import datetime
import os
import platform
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def _memory_gib():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def thread_pools():
    """threadpoolctl's view of the loaded BLAS and OpenMP pools, one string each."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed"]
    return [f"{p.get('user_api')}/{p.get('internal_api')} {p.get('version') or ''}: "
            f"{p.get('num_threads')} threads" for p in threadpool_info()]


def environment():
    """(machine info, library versions, thread variables, thread pools): dicts of strings and
    a list of strings."""
    from .. import __version__
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "python": sys.version.split()[0], "cpu_count": str(os.cpu_count())}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = str(len(os.sched_getaffinity(0)))
    info["memory"] = f"{_memory_gib():.1f} GiB"
    versions = {"sparseadv": __version__}
    for mod in ("numpy", "scipy", "tqdm", "matplotlib", "sklearn", "threadpoolctl", "Cython",
                "torch"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a broken optional install is reported, not fatal
            versions[mod] = "not installed"
    env = {k: os.environ.get(k, "unset") for k in THREAD_VARS}
    return info, versions, env, thread_pools()


def environment_lines(command, extra=()):
    """The environment as Markdown bullet lines, with the command, the date and ``extra``
    (key, value) pairs."""
    info, versions, env, pools = environment()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"- command: `{command}`", f"- date: {date}"]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines.append("- libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append("- threads: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "; "
                 + "; ".join(pools))
    if hasattr(os, "getloadavg"):
        lines.append("- load average (1, 5, 15 min): "
                     + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    lines += [f"- {k}: {v}" for k, v in extra]
    return lines
