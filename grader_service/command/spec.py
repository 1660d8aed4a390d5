"""grader.yaml: what a command assignment's harness runs, in stages, and what students may submit.

The file is checked against one JSON Schema (`SCHEMA`), never by hand-written checks, so the
reference in docs/command-assignments.md is generated from the same schema (`reference()`), and
an upload whose grader.yaml does not validate is refused with the field named (`SpecError`).
The service parses it (trusted: the instructor's own file) when the source is uploaded or
released and when a job is staged; the stages then run in a sandbox (`autograding/local.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_FILE = "grader.yaml"
# Where a stage sees the job's parts (the local sandbox binds them there, a pod mounts them).
RESULTS_DIR = "/job/results"
RESULTS_STDOUT = "stdout"
MAX_SPEC_BYTES = 256 * 1024

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|K|M|G|T|Ki|Mi|Gi|Ti)?$"
_QUANTITY_TEXT = {
    "type": "string",
    "pattern": _QUANTITY,
    "x-message": "not a number or a quantity such as 512Mi",
}
# A glob relative to the submission's root: no leading '/', no '..' part, no backslash.
_GLOB = r"^(?!/)(?!(.*/)?\.\.(/|$))[^\\\x00]+$"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "grader.yaml",
    "type": "object",
    "additionalProperties": False,
    "required": ["stages"],
    "properties": {
        "submission": {
            "type": "object",
            "description": "What a student may submit.",
            "additionalProperties": False,
            "properties": {
                "files": {
                    "type": "array",
                    "description": "Globs of the files a student may submit, relative to the submission's root "
                    "(`*` and `?` stay within one directory, `**/` spans any number of them). A submission "
                    "holding any other file is refused (422, naming the file). Default: any file.",
                    "minItems": 1,
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": _GLOB,
                        "x-message": "a glob must stay inside the submission (relative, no '..')",
                    },
                },
                "max_bytes": {
                    "type": "integer",
                    "description": "Most bytes a submission may hold, in total (the service's own limit "
                    "applies too).",
                    "minimum": 1,
                },
            },
        },
        "max_score": {
            "type": "number",
            "description": "The assignment's maximum score, shown (e.g. in the lecture's grade table) before "
            "any grading. Default: none; each grading's maximum is then the sum of its tests' `max_score`.",
            "minimum": 0,
        },
        "stages": {
            "type": "array",
            "description": "The stages, run in order. A stage fails when it times out, prints more than "
            "the output limit, its results are missing or malformed, or (a stage without `results`) its "
            "command exits with another code than 0; a failing stage stops the pipeline (the grading "
            "fails, naming the stage) unless it says `continue_on_failure`.",
            "minItems": 1,
            "maxItems": 16,
            "items": {"$ref": "#/$defs/stage"},
        },
    },
    "$defs": {
        "stage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "command"],
            "properties": {
                "name": {
                    "type": "string",
                    "description": "The stage's name, unique in the file (letters, digits, `-`, `_`, `.`).",
                    "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                    "x-message": "a name is 1-63 letters, digits, '-', '_' or '.'",
                },
                "command": {
                    "type": "array",
                    "description": "The program and its arguments (no shell: write `[sh, -c, '...']` for "
                    "one). It runs in /job/submission, with /job/grader (the source, read-only), "
                    "/job/results (writable, empty at the start of each stage) and a writable /tmp.",
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1, "maxLength": 4096},
                },
                "image": {
                    "type": "string",
                    "description": "The container image the Kubernetes executor runs the stage in; the local "
                    "executor runs it in its sandbox on the service's machine, ignoring this.",
                    "minLength": 1,
                    "maxLength": 255,
                },
                "timeout": {
                    "type": "number",
                    "description": "Seconds the stage may run (wall clock) before all its processes are "
                    "killed and the grading fails with 'timed out'. Default: the assignment's `timeout`.",
                    "exclusiveMinimum": 0,
                    "maximum": 86400,
                },
                "network": {
                    "type": "boolean",
                    "description": "Whether the stage may use the network. Only if the admin allows it too "
                    "(`c.AutogradeExecutor.allow_network`); otherwise the stage has loopback only. On "
                    "Kubernetes the stages of a grading share one pod, and so one network: it is open "
                    "only when every stage asks for it.",
                    "default": False,
                },
                "memory": {
                    "description": "Memory limit: bytes, or a quantity such as `512Mi`. Default: the "
                    "assignment's.",
                    "oneOf": [{"type": "integer", "minimum": 1}, _QUANTITY_TEXT],
                },
                "cpu": {
                    "description": "CPU limit: cores, or a quantity such as `500m` (Kubernetes). Default: the "
                    "assignment's.",
                    "oneOf": [
                        {"type": "number", "exclusiveMinimum": 0},
                        _QUANTITY_TEXT,
                    ],
                },
                "results": {
                    "type": "string",
                    "description": "Where the stage leaves its Gradescope-style results: a file under "
                    "/job/results, or `stdout` (the last JSON object the command printed). The last stage "
                    "with `results` gives the grading's results; at least one stage must have them. Such a "
                    "stage is judged by its results, not by its exit code (a harness may exit 1 when tests "
                    "fail).",
                    "pattern": r"^(stdout|/job/results/(?!(.*/)?\.\.(/|$))[^\x00]+)$",
                    "x-message": "results are `stdout` or a file under /job/results",
                },
                "continue_on_failure": {
                    "type": "boolean",
                    "description": "Run the next stages even if this one fails.",
                    "default": False,
                },
            },
        }
    },
}


class SpecError(ValueError):
    """grader.yaml does not validate; the message names the field and the problem."""


@dataclass(frozen=True)
class Stage:
    name: str
    command: tuple[str, ...]
    image: str | None = None
    timeout: float | None = None  # None: the assignment's timeout
    network: bool = False
    memory: str | int | None = None
    cpu: float | str | None = None
    results: str | None = None  # a path under /job/results, "stdout", or None
    continue_on_failure: bool = False


@dataclass(frozen=True)
class CommandSpec:
    stages: tuple[Stage, ...]
    files: tuple[str, ...] = ()  # globs; empty: any file
    max_bytes: int | None = None
    max_score: float | None = None

    def allows(self, path: str) -> bool:
        """Whether a student may submit the file at `path` (relative, '/'-separated)."""
        return not self.files or any(glob_regex(p).fullmatch(path) for p in self.files)

    def as_dict(self) -> dict[str, Any]:
        """What the service keeps of it (the assignment's skeleton): what submissions may hold."""
        return {
            "files": list(self.files),
            "max_bytes": self.max_bytes,
            "stages": [s.name for s in self.stages],
        }


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression: `*`, `?` within one path part, `**/` any number of directories."""
    out = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        text = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
        out.append(text if last else text + "/")
    return re.compile("".join(out))


def field_path(path: Any) -> str:
    """A jsonschema error path as the field's name: `stages[1].timeout`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_ARTICLE = {"number": "a number", "string": "a string", "object": "an object", "array": "a list",
            "integer": "an integer", "boolean": "true or false"}  # fmt: skip


def describe(error: jsonschema.ValidationError) -> str:
    """A schema error in plain words (`not a number`, `unknown key 'x'`), without the field's name."""
    schema: Any = error.schema if isinstance(error.schema, dict) else {}
    instance: Any = error.instance
    value: Any = error.validator_value
    if error.validator == "type":
        wanted = value if isinstance(value, list) else [value]
        return "not " + " or ".join(_ARTICLE.get(str(w), str(w)) for w in wanted)
    if error.validator == "additionalProperties":
        unknown = sorted(set(instance) - set(schema.get("properties", {})))
        return f"unknown key {', '.join(map(repr, unknown))}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is missing")
    if error.validator == "pattern" and "x-message" in schema:
        return f"{instance!r}: {schema['x-message']}"
    if error.validator == "oneOf":
        return f"{instance!r} is not {str(schema.get('description', 'valid')).split(':')[0].lower()}"
    if error.validator == "anyOf" and "x-message" in schema:
        return str(schema["x-message"])
    if error.validator == "enum":
        return f"{json.dumps(instance)[:100]} is not one of {', '.join(map(str, value))}"
    return error.message[:300]


def parse(text: str | bytes) -> CommandSpec:
    """grader.yaml's text as a `CommandSpec`, or `SpecError` naming the first problem."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{SPEC_FILE} is larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{SPEC_FILE} is not YAML: {e}") from None
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise SpecError(f"{SPEC_FILE}: {field_path(error.absolute_path)}: {describe(error)}")
    stages = tuple(_stage(item) for item in data["stages"])
    names = [s.name for s in stages]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SpecError(f"{SPEC_FILE}: stages[{i}].name: {name!r} is the name of an earlier stage")
    if not any(s.results for s in stages):
        raise SpecError(f"{SPEC_FILE}: stages: no stage has `results` (where the tests' scores are)")
    submission = data.get("submission") or {}
    max_score = float(data["max_score"]) if "max_score" in data else None
    return CommandSpec(stages, tuple(submission.get("files", ())), submission.get("max_bytes"), max_score)


def _stage(item: dict[str, Any]) -> Stage:
    return Stage(
        name=item["name"],
        command=tuple(item["command"]),
        image=item.get("image"),
        timeout=float(item["timeout"]) if "timeout" in item else None,
        network=bool(item.get("network", False)),
        memory=item.get("memory"),
        cpu=item.get("cpu"),
        results=item.get("results"),
        continue_on_failure=bool(item.get("continue_on_failure", False)),
    )


def read(directory: Path) -> CommandSpec:
    """The grader.yaml of a source directory."""
    path = directory / SPEC_FILE
    if path.is_symlink() or not path.is_file():
        raise SpecError(f"The source has no {SPEC_FILE} (a command assignment's source needs one)")
    return parse(path.read_bytes())


def reference() -> str:
    """The Markdown reference of grader.yaml's keys, from `SCHEMA` (docs/command-assignments.md)."""
    rows = ["| key | type | meaning |", "|---|---|---|"]

    def add(prefix: str, node: dict[str, Any]) -> None:
        required = set(node.get("required", ()))
        for key, prop in node["properties"].items():
            prop = SCHEMA["$defs"]["stage"] if prop.get("items", {}).get("$ref") else prop
            name = f"{prefix}{key}" + ("[]" if key == "stages" else "")
            kind = _type_of(prop) + (", required" if key in required else "")
            rows.append(f"| `{name}` | {kind} | {node['properties'][key].get('description', '')} |")
            if "properties" in prop:
                add(f"{name}.", prop)

    add("", SCHEMA)
    return "\n".join(rows) + "\n"


def _type_of(prop: dict[str, Any]) -> str:
    if "oneOf" in prop:
        return " or ".join(_type_of(p) for p in prop["oneOf"])
    kind = prop.get("type", "object")
    if kind == "array":
        return f"list of {_type_of(prop['items'])}" if "type" in prop.get("items", {}) else "list"
    return str(kind)
