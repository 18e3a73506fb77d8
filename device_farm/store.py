"""The results store: SQLite, one file (``--db``; default ``$XDG_DATA_HOME/edgekit/farm.sqlite``).

Tables: ``jobs`` (one row per job, its final state and reason), ``attempts`` (every try: device,
state, reason, when it ran), ``results`` (what the runner measured, with the device fingerprint and
the per-query latencies for distributions and confidence intervals), ``parity`` (the accuracy pass:
SQNR, cosine and max-abs error vs fp32 per checked part) and ``devices`` (health).
Writes commit per call, so a crash of the host loses no finished result.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .accuracy import parity_rows
from .jobs import Job

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, package TEXT NOT NULL, sha256 TEXT NOT NULL,
    scenario TEXT NOT NULL, state TEXT NOT NULL, device TEXT, reason TEXT, attempts INTEGER NOT NULL,
    created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL, n INTEGER NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
    started REAL, ended REAL, PRIMARY KEY (job_id, n));
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY, device TEXT NOT NULL, fingerprint TEXT NOT NULL, fingerprint_json TEXT NOT NULL,
    package TEXT NOT NULL, sha256 TEXT NOT NULL, name TEXT, target TEXT, precision TEXT, runtime TEXT,
    scenario TEXT NOT NULL, loadgen TEXT, created REAL NOT NULL, result_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parity (
    job_id TEXT NOT NULL, part TEXT NOT NULL, output TEXT NOT NULL, sqnr_db REAL, cosine REAL, max_abs REAL,
    samples INTEGER NOT NULL, reference_sha256 TEXT NOT NULL, data_sha256 TEXT NOT NULL, PRIMARY KEY (job_id, part));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, bad INTEGER NOT NULL DEFAULT 0, consecutive_incomplete INTEGER NOT NULL DEFAULT 0,
    reason TEXT, updated REAL NOT NULL);
"""


def default_db() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edgekit" / "farm.sqlite"


class Store:
    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path is not None else default_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------- writes
    def save_job(self, run_id: str, job: Job) -> None:
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO jobs (id, run_id, package, sha256, scenario, state, device, reason, attempts, created, finished)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
                " device=excluded.device, reason=excluded.reason, attempts=excluded.attempts, finished=excluded.finished",
                (job.id, run_id, str(job.package), job.sha256, job.settings.scenario.value, job.state.value,
                 job.device, job.reason, len(job.attempts), now, now if job.state.terminal else None))
            for n, a in enumerate(job.attempts):
                self._db.execute(
                    "INSERT OR REPLACE INTO attempts (job_id, n, device, state, reason, started, ended) VALUES (?,?,?,?,?,?,?)",
                    (job.id, n, a.device, a.state.value, a.reason, a.started, a.ended))
            if job.result is not None:
                r = job.result
                model = r.get("model") or {}
                fp = r.get("fingerprint") or {}
                self._db.execute(
                    "INSERT OR REPLACE INTO results (job_id, device, fingerprint, fingerprint_json, package, sha256, name,"
                    " target, precision, runtime, scenario, loadgen, created, result_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.device, fp.get("id", ""), json.dumps(fp), str(job.package), job.sha256,
                     model.get("name"), model.get("target"), model.get("precision"), model.get("runtime"),
                     job.settings.scenario.value, r.get("loadgen"), now, json.dumps(r)))
                par = r.get("parity")
                if par:  # the accuracy pass: one row per checked part, queryable without parsing result_json
                    self._db.executemany(
                        "INSERT OR REPLACE INTO parity (job_id, part, output, sqnr_db, cosine, max_abs, samples,"
                        " reference_sha256, data_sha256) VALUES (?,?,?,?,?,?,?,?,?)",
                        [(job.id, *row, par["samples"], par["reference_sha256"], par["data_sha256"])
                         for row in parity_rows(par)])

    def set_device(self, device: str, *, bad: bool, consecutive: int, reason: Optional[str]) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO devices (id, bad, consecutive_incomplete, reason, updated)"
                             " VALUES (?,?,?,?,?)", (device, int(bad), consecutive, reason, time.time()))

    # ------------------------------------------------------------- reads
    def device_health(self) -> Dict[str, Dict[str, Any]]:
        rows = self._db.execute("SELECT id, bad, consecutive_incomplete, reason, updated FROM devices").fetchall()
        return {r[0]: {"bad": bool(r[1]), "consecutive_incomplete": r[2], "reason": r[3], "updated": r[4]} for r in rows}

    def _rows(self, table: str, cols: Tuple[str, ...], order: str, **where: Optional[str]) -> List[Dict[str, Any]]:
        """``SELECT cols FROM table [WHERE k = ? ...] ORDER BY order`` as dicts; a None filter is left out."""
        terms = [(k, v) for k, v in where.items() if v]
        q = f"SELECT {', '.join(cols)} FROM {table}"
        if terms:
            q += " WHERE " + " AND ".join(f"{k} = ?" for k, _ in terms)
        return [dict(zip(cols, r)) for r in self._db.execute(f"{q} ORDER BY {order}", [v for _, v in terms])]

    def jobs(self, run_id: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._rows("jobs", ("id", "run_id", "package", "sha256", "scenario", "state", "device", "reason",
                                   "attempts", "created", "finished"), "created", run_id=run_id)

    def attempts(self, job_id: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._rows("attempts", ("job_id", "n", "device", "state", "reason", "started", "ended"), "job_id, n",
                          job_id=job_id)

    def parity(self, job_id: Optional[str] = None) -> List[Dict[str, Any]]:
        return self._rows("parity", ("job_id", "part", "output", "sqnr_db", "cosine", "max_abs", "samples",
                                     "reference_sha256", "data_sha256"), "job_id, part", job_id=job_id)

    def results(self, *, run_id: Optional[str] = None, sha256: Optional[str] = None) -> Iterator[Dict[str, Any]]:
        q = ("SELECT r.job_id, r.device, r.fingerprint, r.package, r.sha256, r.name, r.target, r.precision, r.runtime,"
             " r.scenario, r.loadgen, r.created, r.result_json, j.run_id FROM results r JOIN jobs j ON j.id = r.job_id")
        where, args = [], []
        if run_id:
            where.append("j.run_id = ?")
            args.append(run_id)
        if sha256:
            where.append("r.sha256 LIKE ?")
            args.append(sha256 + "%")
        if where:
            q += " WHERE " + " AND ".join(where)
        cols = ("job_id", "device", "fingerprint", "package", "sha256", "name", "target", "precision", "runtime",
                "scenario", "loadgen", "created", "result", "run_id")
        for r in self._db.execute(q + " ORDER BY r.created", args):
            row = dict(zip(cols, r))
            row["result"] = json.loads(row["result"])
            yield row
