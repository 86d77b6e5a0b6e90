"""An empty Prefect database at the installed Prefect's schema, for the test servers.

Creating Prefect's SQLite database (its migrations) costs 10-14 s of CPU each time a server
starts on a new database; the suite starts several (one test server per xdist worker, the
browser's `opsbook serve`). The migrations run once per Prefect version and machine, under a
file lock (xdist workers ask at the same moment), into a file every later start copies.
The first-hour path, a server opsbook starts on no database at all, stays tested as it is
(tests/e2e/test_cli.py's server).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path


def template() -> Path:
    """The migrated empty database (made on first use)."""
    where = Path(tempfile.gettempdir()) / f"opsbook-test-prefect-db-{version('prefect')}-{os.getuid()}"
    where.mkdir(mode=0o700, exist_ok=True)
    st = where.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or where.is_symlink():
        raise RuntimeError(f"{where} is not a private directory of this user: remove it")
    db = where / "prefect.db"
    with open(where / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists():
            work = Path(tempfile.mkdtemp(prefix="migrating-", dir=where))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update({"PREFECT_HOME": str(work), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{work / 'prefect.db'}"})
            out = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"prefect server database upgrade failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
            with sqlite3.connect(work / "prefect.db") as con:  # everything in the one file that is copied
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            os.replace(work / "prefect.db", db)  # whole or not at all
            shutil.rmtree(work, ignore_errors=True)
    return db


def copy_to(directory: Path | str, name: str = "prefect.db") -> Path:
    """A copy of the template as ``directory/name`` (prefect.db: Prefect's file under PREFECT_HOME)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(template(), directory / name))
