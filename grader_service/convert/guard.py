"""The execution plan: the notebook's cells interleaved with the grader's integrity steps.

Scores must not be forgeable by student code, yet student code shares the kernel process with
the tests. Three layers, cheapest first:

1. **Prevention** (`kernel_support.py`): before every protected group (consecutive test and
   locked code cells) a silent *pre* step restores the kernel machinery captured at start-up
   (transformers, traceback and display hooks, formatters, event callbacks, builtins, the modules
   instructor cells import, names instructor cells define); *unstash* gives the student's versions
   back afterwards so the student's own cells run as written.
   The same *pre* step arms the comparison checker (`kernel_checks.py`): protected cells compile
   with their comparisons and truth tests rewritten into calls to it, so a value built by student
   code (a float subclass whose `__eq__` always says True) cannot decide a test.
2. **Generic canaries**, after each protected group, sent exactly like test cells: one must fail
   with `AssertionError(<nonce>)`, one must display a known number. Any tampering that survived
   step 1 and makes failures pass (or changes displayed numbers, i.e. partial credit) shows up
   here; every test of the group then scores 0 with a note.
3. **Mutation runs**: before a test runs for real, the same test source runs once with every name
   the answers define replaced by a wrong-answer object. A test that references answers and still
   passes is not being executed honestly (an AST/input transformer rewriting it, a no-op helper,
   a patched builtin...); the real run then scores 0 with a note. The random-number state is saved
   and restored around it so tests drawing random inputs see the same numbers.

The nonces come from `secrets`, so no earlier submission or stale output can predict them.
Internal steps are `user_expressions`: carried by the request of the cell just before them when
that cell succeeds (the kernel evaluates them right after the cell's code and its events, the
same point a request of their own would reach, one round trip sooner), otherwise sent alone
with `silent=True` (no history, no `pre_run_cell` events). Canaries and mutation runs are sent
like ordinary cells so student hooks cannot tell them from tests by how they arrive.
"""

from __future__ import annotations

import ast
import json
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType

from nbformat import NotebookNode

from ..states import StepKind
from . import cells as nbcells

SUPPORT_FILENAME = "<grader-support>"
CHECKS_FILENAME = "<grader-checks>"

# Never substituted by wrong answers even if an answer cell rebinds them.
_NEVER_SUBSTITUTE = frozenset({"get_ipython", "print", "display", "__builtins__"})

# Packages whose module-level functions and classes the guard also restores.
PROTECTED_PACKAGES = ("IPython", "ipykernel", "traitlets", "jupyter_client", "zmq", "comm")


@lru_cache(maxsize=1)
def support_source() -> str:
    return (Path(__file__).with_name("kernel_support.py")).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def support_code() -> CodeType:
    """kernel_support compiled (~8 ms): the fork server does it once for every kernel it forks."""
    return compile(support_source(), SUPPORT_FILENAME, "exec")


@lru_cache(maxsize=1)
def checks_source() -> str:
    return (Path(__file__).with_name("kernel_checks.py")).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def checks_code() -> CodeType:
    """kernel_checks (the comparison checker of protected cells) compiled, like `support_code`."""
    return compile(checks_source(), CHECKS_FILENAME, "exec")


# ---- static analysis of cell sources -------------------------------------------------------------


def parse_cell(source: str) -> ast.Module | None:
    """Parse a code cell as Python; IPython syntax (magics, `!cmd`) is translated first."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # unparsable code is simply not analysed
        return None


def _target_names(target: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(target) if isinstance(node, ast.Name)}


def bound_names(source: str) -> set[str]:
    """Names a cell binds at module level (defs, classes, imports, assignments, loop targets)."""
    tree = parse_cell(source)
    if tree is None:
        return set()
    names = _bound_in_block(tree.body)
    # An assignment expression binds its name wherever it stands (inside defs too, as before).
    names.update(node.target.id for node in ast.walk(tree) if isinstance(node, ast.NamedExpr))
    return names


def _bound_in_block(statements: list[ast.stmt]) -> set[str]:
    """Names the statements bind, and those of the blocks nested in them that run at the same level."""
    names: set[str] = set()
    for node in statements:
        names |= _bound_by_statement(node)
        for block in _nested_blocks(node):
            names |= _bound_in_block(block)
    return names


def _bound_by_statement(node: ast.stmt) -> set[str]:
    """The names one statement binds by itself (not in the blocks nested in it)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name != "*"}
    if isinstance(node, ast.Assign):
        return set().union(*(_target_names(target) for target in node.targets))
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return _target_names(node.target)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
        return set().union(*(_target_names(target) for target in targets))
    return set()


def _nested_blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    """The blocks of a compound statement that run in the cell's own scope (not a def's or class's)."""
    if isinstance(node, (ast.For, ast.AsyncFor, ast.If, ast.While)):
        return [node.body, node.orelse]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [node.body]
    if isinstance(node, ast.Try):
        return [node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody]
    return []


def loaded_names(source: str) -> set[str]:
    tree = parse_cell(source)
    if tree is None:
        return set()
    return {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }


def imported_modules(sources: list[str]) -> list[str]:
    """Modules instructor code uses: imports plus dotted attribute chains on imported aliases.

    `import numpy as np` + `np.testing.assert_allclose(...)` yields numpy and numpy.testing (a
    lazily loaded submodule), so both are imported and baselined before any student code runs.
    """
    aliases: dict[str, str] = {}
    modules: set[str] = set()
    trees = [tree for tree in (parse_cell(src) for src in sources) if tree is not None]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    modules.add(alias.name)
                    if alias.asname:  # import numpy.testing as npt: npt is numpy.testing
                        aliases[alias.asname] = alias.name
                    else:  # import os.path: the name bound is os
                        top = alias.name.split(".")[0]
                        aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
                for alias in node.names:
                    modules.add(f"{node.module}.{alias.name}")
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain: list[str] = []
            current: ast.AST = node
            while isinstance(current, ast.Attribute):
                chain.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id in aliases:
                parts = [aliases[current.id], *reversed(chain)]
                for end in range(2, len(parts)):
                    modules.add(".".join(parts[:end]))
    return sorted(modules)


# ---- the plan ------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of the plan: a cell sent to the kernel, or a grader check.

    kind: "cell" (an ordinary notebook cell), "test", "locked" (protected, instructor's code),
    "mutant" (a test run with wrong answers), "canary-error", "canary-value" (sent like cells);
    "setup", "pre", "post", "unstash", "checkpoint" (internal checks: user expressions, carried
    by the request of the cell before them or sent alone).
    """

    kind: StepKind
    source: str = ""
    cell_index: int | None = None
    grade_id: str | None = None
    group: int | None = None
    expect: str = ""
    call: str = ""

    def __post_init__(self) -> None:
        self.kind = StepKind(self.kind)  # a misspelt kind fails here, not as a step nobody handles

    @property
    def internal(self) -> bool:
        return self.kind.internal

    @property
    def sent_as_cell(self) -> bool:
        return not self.internal


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    registry: str = ""
    groups: dict[int, list[str]] = field(default_factory=dict)  # group -> grade ids of its tests


def _support_call(registry: str, method: str, *args: object) -> str:
    rendered = ", ".join(json.dumps(arg) for arg in args)
    return f"__import__('sys').modules[{registry!r}].{method}({rendered})"


def setup_expression(registry: str, preimports: list[str], nonce: str, *, forked_kernel: bool = False) -> str:
    """A single expression that loads kernel_support and kernel_checks as private modules and installs them.

    A kernel forked from the fork server already holds this module and the compiled support code
    (no student code has run in it yet); any other kernel gets the source.
    """
    install = (
        f"m._install({registry!r}, {json.dumps(preimports)}, {json.dumps(list(PROTECTED_PACKAGES))}, "
        f"{nonce!r}, c)"
    )
    if forked_kernel:
        code = f"__import__('sys').modules[{__name__!r}].support_code()"
        checks = f"__import__('sys').modules[{__name__!r}].checks_code()"
    else:
        code = f"compile({support_source()!r}, {SUPPORT_FILENAME!r}, 'exec')"
        checks = f"compile({checks_source()!r}, {CHECKS_FILENAME!r}, 'exec')"
    modules = (
        "__import__('types').ModuleType('_grader_support'), __import__('types').ModuleType('_grader_checks')"
    )
    return f"(lambda m, c: (exec({checks}, c.__dict__), exec({code}, m.__dict__), {install})[2])({modules})"


def build_plan(
    nb: NotebookNode,
    solution_names: set[str],
    *,
    mutation_runs: bool = True,
    guard: bool = True,
    forked_kernel: bool = False,
) -> Plan:
    """Interleave the notebook's code cells with guard, mutation and canary steps.

    `nb` is the reconciled notebook (roles in `metadata.grader.role`); `solution_names` are the
    names the instructor's answer cells bind (what a wrong answer replaces in mutation runs).
    `guard=False` gives the bare notebook (plus setup): `validate` uses it, where the student
    only checks their own work, and the tests use it to show each cheat works without the guard.
    """
    registry = "_grader_" + secrets.token_hex(8)
    plan = Plan(registry=registry)
    instructor_sources = [
        nbcells.source_text(c) for c in nb.cells if c.cell_type == "code" and _role(c) in ("test", "locked")
    ]
    nonce = secrets.token_hex(8)
    plan.steps.append(
        Step(
            StepKind.SETUP,
            call=setup_expression(
                registry, imported_modules(instructor_sources), nonce, forked_kernel=forked_kernel
            ),
            expect=nonce,
        )
    )

    group = -1
    in_group = False
    substitutable = sorted(solution_names - _NEVER_SUBSTITUTE)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not nbcells.source_text(cell).strip():
            continue
        role = _role(cell)
        protected = role in ("test", "locked") and guard
        if in_group and not protected:
            _close_group(plan, registry, group)
            in_group = False
        if not protected:
            kind = StepKind.TEST if role == "test" else StepKind.CELL
            plan.steps.append(
                Step(kind, nbcells.source_text(cell), cell_index=index, grade_id=nbcells.grade_id(cell))
            )
            continue
        if not in_group:
            group += 1
            in_group = True
            plan.groups[group] = []
        substitute: list[str] = []
        if role == "test" and mutation_runs:
            substitute = sorted(loaded_names(nbcells.source_text(cell)) & set(substitutable))
        _add_protected_cell(plan, group, index, cell, substitute)
    if in_group:
        _close_group(plan, registry, group)
    return plan


def _add_protected_cell(
    plan: Plan, group: int, index: int, cell: NotebookNode, substitute: list[str]
) -> None:
    """The steps of a protected cell in `group`: the guard's `pre`, the mutation run (with `post`)
    when names are `substitute`d, the cell itself, and after a locked cell a checkpoint of the names
    it binds."""
    registry = plan.registry
    source = nbcells.source_text(cell)
    gid = _grade_id(cell)
    pre_nonce = secrets.token_hex(8)
    plan.steps.append(
        Step(
            StepKind.PRE,
            call=_support_call(registry, "pre", pre_nonce, substitute, gid),
            expect=pre_nonce,
            group=group,
            grade_id=gid,
        )
    )
    if substitute:
        post_nonce = secrets.token_hex(8)
        plan.steps.append(Step(StepKind.MUTANT, source, cell_index=index, grade_id=gid, group=group))
        plan.steps.append(
            Step(
                StepKind.POST,
                call=_support_call(registry, "post", post_nonce),
                expect=post_nonce,
                group=group,
            )
        )
    if _role(cell) == "test":
        plan.groups[group].append(gid or f"#{index}")
        plan.steps.append(Step(StepKind.TEST, source, cell_index=index, grade_id=gid, group=group))
        return
    plan.steps.append(Step(StepKind.LOCKED, source, cell_index=index, grade_id=gid, group=group))
    names = sorted(bound_names(source))
    if names:
        call = _support_call(registry, "checkpoint", names)
        plan.steps.append(Step(StepKind.CHECKPOINT, call=call, expect="ok", group=group))


def _close_group(plan: Plan, registry: str, group: int) -> None:
    a, b = secrets.randbelow(9000) + 1000, secrets.randbelow(9000) + 1000
    if a == b:
        b += 1
    error_nonce = secrets.token_hex(12)
    # The value canary comes last: it succeeds, so the unstash after it rides on its request.
    # (Their order hides nothing: each is recognisable by its source anyway.)
    plan.steps.append(
        Step(StepKind.CANARY_ERROR, f'assert {a} == {b}, "{error_nonce}"', expect=error_nonce, group=group)
    )
    plan.steps.append(
        Step(StepKind.CANARY_VALUE, f"({a} + {b}) * 0.5", expect=repr((a + b) * 0.5), group=group)
    )
    unstash_nonce = secrets.token_hex(8)
    plan.steps.append(
        Step(
            StepKind.UNSTASH,
            call=_support_call(registry, "unstash", unstash_nonce),
            expect=unstash_nonce,
            group=group,
        )
    )


def _role(cell: NotebookNode) -> str:
    return ((cell.get("metadata") or {}).get("grader") or {}).get("role", "student")


def _grade_id(cell: NotebookNode) -> str | None:
    return ((cell.get("metadata") or {}).get("grader") or {}).get("grade_id") or nbcells.grade_id(cell)
