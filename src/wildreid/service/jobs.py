"""Background batch jobs: identify many uploaded photos without blocking interactive requests.

Batch jobs run one at a time on their own worker thread, photo by photo; interactive requests run
on the server's request threads and take the catalogue's lock only for the short search and write
steps, so an interactive identification never waits for a batch to finish (at most for one
photo's search, and with local re-ranking for one chunk of 32 feature extractions; matching
runs in each request's own thread).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from wildreid.errors import NotFoundError, WildReIDError

__all__ = ["Job", "JobRunner"]

logger = logging.getLogger(__name__)

_KEEP_JOBS = 200


@dataclass
class Job:
    """One batch: its id, progress and per-photo results (identification dicts or errors)."""

    job_id: str
    total: int
    done: int = 0
    status: str = "queued"
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready progress and results."""
        return {
            "job_id": self.job_id,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "results": list(self.results),
        }


class JobRunner:
    """Runs batch jobs on one background thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wildreid-batch")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(
        self, items: list[tuple[str, bytes]], work: Callable[[str, bytes], dict[str, Any]]
    ) -> Job:
        """Queue ``work(name, data)`` for every item; returns the job (progress updates live)."""
        job = Job(job_id=secrets.token_hex(8), total=len(items))
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > _KEEP_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                del self._jobs[oldest]
        self._pool.submit(self._run, job, items, work)
        return job

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; NotFoundError if unknown (or forgotten)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no batch job {job_id!r}")
        return job

    def _run(
        self, job: Job, items: list[tuple[str, bytes]], work: Callable[[str, bytes], dict[str, Any]]
    ) -> None:
        job.status = "running"
        for name, data in items:
            try:
                result = {"file": name, **work(name, data)}
            except WildReIDError as exc:
                result = {"file": name, "error": type(exc).__name__, "detail": str(exc)}
            except Exception as exc:  # a batch must finish; the failure is reported per photo
                logger.exception("batch job %s failed on %s", job.job_id, name)
                result = {"file": name, "error": type(exc).__name__, "detail": str(exc)}
            job.results.append(result)
            job.done += 1
        job.status = "done"

    def shutdown(self) -> None:
        """Stop accepting jobs; wait for the running one."""
        self._pool.shutdown(wait=True, cancel_futures=True)
