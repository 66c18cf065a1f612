"""The embedded store's data dir (``mlflow.db`` + ``artifacts/``): portable, backed up, restored.

MLflow records artifact locations as absolute ``file:`` URIs (the experiment's
``artifact_location``, each run's ``artifact_uri``, each model version's ``source`` and
``storage_location``). A data dir that is moved, copied or restored would therefore read
(or, for new tasks, write) the artifacts of the folder it came from. ``relocate`` fixes that
at every start: before MLflow opens the database, every stored location under the old
artifacts root is rewritten, in one sqlite transaction, to the same path under the current
``<data-dir>/artifacts``. Rewriting the database (rather than translating paths when
reading) keeps MLflow itself, its UI and the registry's model sources right too, and makes
a copy a fully independent store. The rewrite is idempotent: a dir that did not move
changes nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

DB, ARTIFACTS = "mlflow.db", "artifacts"
# (table, column) of every stored artifact location; columns a schema lacks are skipped
LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


class DataDirError(ValueError):
    """The data dir (or a backup) cannot be used as asked; the message says what to do."""


def check_database(db: Path, thorough: bool = False) -> None:
    """Raise DataDirError unless ``db`` (which exists) is an sqlite database; ``thorough``
    also reads every page (sqlite's quick_check: seconds for a large store, so only for
    backups). Plain read-write connections: a crash may have left a journal to roll back."""
    try:
        with closing(sqlite3.connect(db)) as con:
            query = "PRAGMA quick_check" if thorough else "SELECT 'ok' FROM sqlite_master LIMIT 1"
            result = con.execute(query).fetchone() or ("ok",)
    except sqlite3.Error as e:
        raise DataDirError(
            f"{db} is not a usable sqlite database ({e}): restore the data dir from a "
            "backup (sparsecl restore BACKUP DATA_DIR)"
        ) from None
    if result[0] != "ok":
        raise DataDirError(
            f"{db} is damaged (sqlite quick_check: {result[0]}): "
            "restore the data dir from a backup (sparsecl restore BACKUP DATA_DIR)"
        )


def relocate(db: Path, artifact_root: Path, experiment: str) -> str | None:
    """Point the stored artifact locations at ``artifact_root``; returns the old root when
    something was rewritten (the data dir was moved, copied or restored), else None."""
    if not db.exists():
        return None
    check_database(db)
    new = artifact_root.resolve().as_uri()
    with closing(sqlite3.connect(db)) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return None  # not an MLflow store yet: MLflow creates it
        row = con.execute(
            "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
        ).fetchone()
        old = row[0] if row else None
        if not old or old == new or not old.startswith("file:"):
            return None
        with con:  # one transaction: all locations move, or none
            for table, column in LOCATIONS:
                if table not in tables:
                    continue
                columns = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    continue
                con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (new, len(old) + 1, old, len(old) + 1, old + "/"),
                )
        return str(old)


def backup(data_dir: Path, dest: Path) -> None:
    """A consistent snapshot of a data dir in ``dest`` (which must not exist or be empty).

    The database is copied first with sqlite's online backup API (a server may keep
    running), then the artifacts: a task's artifacts are written before its commit tag
    and never change afterwards, so every task committed in the snapshot finds its files.
    """
    if not (data_dir / DB).is_file():
        raise DataDirError(f"{data_dir} holds no embedded store (no {DB}); nothing to back up")
    _copy(data_dir, dest, "backup destination")


def restore(source: Path, data_dir: Path) -> None:
    """Copy a backup (or a stopped data dir) into an empty ``data_dir``; the next start
    (``serve`` or ``store check``) adopts it (see ``relocate``)."""
    if not (source / DB).is_file():
        raise DataDirError(f"{source} is not a sparsecl backup (no {DB})")
    _copy(source, data_dir, "data dir")


def _copy(source: Path, dest: Path, what: str) -> None:
    """The database (sqlite online backup), then the artifacts, into an empty ``dest``."""
    check_database(source / DB, thorough=True)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataDirError(
            f"the {what} {dest} exists and is not empty: refusing to overwrite it; "
            "choose a new (or empty) folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with (
        closing(sqlite3.connect(source / DB)) as src,
        closing(sqlite3.connect(dest / DB)) as target,
    ):
        src.backup(target)
    if (source / ARTIFACTS).is_dir():
        shutil.copytree(source / ARTIFACTS, dest / ARTIFACTS)
    else:
        (dest / ARTIFACTS).mkdir()
