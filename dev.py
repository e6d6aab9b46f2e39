#!/usr/bin/env python3
"""Set up the project's environment and run the quick start or the tests.

    python3 dev.py demo    create .venv, install, generate demo data, run every demo day,
                           print the status
    python3 dev.py test    create .venv, install with the test extras, run the tests
                           (installs Debian's chromium for the report test when missing)

Only the standard library is used here: this script runs before anything is installed.
Each command can be run again; it reinstalls only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def run(*args: str | os.PathLike, env: dict[str, str] | None = None) -> int:
    """Run a command from the repository root; return its exit code."""
    return subprocess.call([str(a) for a in args], cwd=ROOT, env=env)


def must(*args: str | os.PathLike, env: dict[str, str] | None = None) -> None:
    code = run(*args, env=env)
    if code != 0:
        print(f"dev.py: command failed ({code}): {' '.join(map(str, args))}", file=sys.stderr)
        sys.exit(code)


def ensure_environment(extras: str = "") -> None:
    """Create .venv if needed and install the project (editable) with ``extras``."""
    if sys.version_info < (3, 11):
        sys.exit(f"dev.py: Python 3.11 or newer is needed (this is {sys.version.split()[0]})")
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
        must(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".installed{('-' + extras) if extras else ''}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    target = f".[{extras}]" if extras else "."
    print(f"dev.py: installing {target} into {VENV} (first time: a few minutes)")
    must(PYTHON, "-m", "pip", "install", "--quiet", "-e", target)
    stamp.write_text(digest)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(ROOT))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo() -> None:
    ensure_environment()
    env = environment()
    must(BIN / "flywheel", "demo", env=env)
    must(BIN / "flywheel", "run", "--all", env=env)
    print()
    must(BIN / "flywheel", "status", env=env)


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> None:
    """Install Debian's chromium (the report test opens the report in it) when it is
    missing and this machine can: apt-get, as root or through sudo. Says what it does."""
    import shutil

    if CHROMIUM.exists() or not shutil.which("apt-get"):
        return
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and subprocess.call(["sudo", "-n", "true"], stderr=subprocess.DEVNULL) == 0:
        prefix = ["sudo", "-n"]
    else:
        print(f"dev.py: {CHROMIUM} is missing and this user cannot apt-get install it: the report test will skip")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"dev.py: installing chromium for the report test: {' '.join(prefix + ['apt-get', 'install', '-y', 'chromium'])}")
    subprocess.call(prefix + ["apt-get", "update", "-qq"], env=env)
    code = subprocess.call(prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env)
    if code != 0:
        print(f"dev.py: apt-get install chromium failed ({code}): the report test will skip (and fail under CI)")


def test(pytest_args: list[str]) -> None:
    ensure_environment("test")
    ensure_chromium()
    env = environment()
    # pytest exits 5 when it collected no test: that is a failure here, not a pass.
    code = run(PYTHON, "-m", "pytest", *pytest_args, env=env)
    if code == 5:
        print("dev.py: pytest collected no tests", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("demo", "test"):
        sys.exit(__doc__)
    if argv[0] == "demo":
        demo()
    else:
        test(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
