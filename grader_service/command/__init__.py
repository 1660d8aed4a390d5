"""Command assignments: any program, graded in stages by the instructor's harness (issue 19).

`spec.py` reads grader.yaml (what runs, in which stages, what students may submit); `results.py`
reads the harness's Gradescope-style results and maps them onto the notebook engine's gradebook.
The stages run in the executors (`autograding/local.py`, refused by `autograding/kube/`).
"""
