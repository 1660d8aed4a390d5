"""SQLAlchemy 2 models, one module per entity. Importing this package registers them all."""

from .api_token import ApiToken
from .assignment import Assignment
from .base import Base, utcnow
from .extension import Extension
from .grade import Grade, GradeChange
from .grading_job import GradingJob, GradingRun
from .lecture import Lecture
from .role import Role
from .submission import Submission
from .user import User

__all__ = [
    "ApiToken",
    "Assignment",
    "Base",
    "Extension",
    "Grade",
    "GradeChange",
    "GradingJob",
    "GradingRun",
    "Lecture",
    "Role",
    "Submission",
    "User",
    "utcnow",
]
