"""Where things live in the data directory. Paths use database ids, never user-supplied names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def source_repo(self, assignment_id: int) -> Path:
        return self.root / "repos" / "source" / f"{assignment_id}.git"

    def release_repo(self, assignment_id: int) -> Path:
        return self.root / "repos" / "release" / f"{assignment_id}.git"

    def submission_repo(self, assignment_id: int, user_id: int) -> Path:
        return self.root / "repos" / "submissions" / str(assignment_id) / f"{user_id}.git"

    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir() / str(job_id)

    def results_dir(self, submission_id: int) -> Path:
        """The latest grading's output (`output/`) and its rendered feedback (`feedback/`)."""
        return self.root / "results" / str(submission_id)

    def source_cache_dir(self) -> Path:
        return self.root / "cache" / "sources"

    def source_cache(self, assignment_id: int, commit: str) -> Path:
        """An assignment's source files at one commit, exported once and copied into every job."""
        return self.source_cache_dir() / f"{assignment_id}-{commit}"

    def tmp_dir(self) -> Path:
        return self.root / "tmp"
