"""What the numbers depend on: CPU, load (uptime), date, source commit."""
import datetime
import os
import re
import subprocess


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load():
    """(1, 5, 15 minute load averages) as `uptime` prints them."""
    text = subprocess.run(["uptime"], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"}).stdout
    m = re.search(r"load averages?:\s*([\d.]+),?\s+([\d.]+),?\s+([\d.]+)", text)
    if m:
        return tuple(float(x) for x in m.groups())
    with open("/proc/loadavg") as f:  # uptime missing or in another format
        return tuple(float(x) for x in f.read().split()[:3])


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def commit(repo):
    p = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else "unknown"
