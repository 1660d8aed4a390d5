"""The notebook engine: release, autograde, feedback and validate for nbgrader-format notebooks.

Independent of the web service: the same code runs in a local sandbox subprocess and inside a
Kubernetes pod, driven by the `grader-convert` command line (`cli.py`); the service calls
`release.release_assignment` and `feedback.generate_feedback` directly and runs autograde as a
subprocess, reading the JSON summary line it prints and `OUTPUT/gradebook.json`
(schema: `gradebook.py`).

Layout:
- cells, notebooks: the nbgrader metadata format, marker regions, robust notebook I/O;
- preprocessors/: small transformations, one concern each; each command is a list of them;
- release: the student version (JSON-equal to nbgrader generate_assignment's);
- autograde: restore protected cells, execute (kernel, guard), score, write the gradebook;
- kernel, kernel_support, guard, watch, processes: running untrusted notebooks safely and
  keeping their code from forging scores (see guard.py for the layers);
- options: the autograde knobs (`AutogradeOptions`: the command line, built and parsed);
- scoring: points for one test cell; verdicts: the integrity verdicts over a notebook; feedback: the HTML pages; validate: the student's check.
"""
