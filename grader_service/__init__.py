"""grader-service: automatic grading of Jupyter notebook assignments."""

__version__ = "0.1.0"
