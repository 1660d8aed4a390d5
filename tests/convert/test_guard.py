"""Static analysis and the execution plan (guard, mutation runs, canaries)."""

from __future__ import annotations

from grader_service.convert.guard import bound_names, build_plan, imported_modules, loaded_names

from .builders import code, notebook


def test_bound_names_cover_defs_imports_assignments_and_magics() -> None:
    src = (
        "import numpy as np\nfrom math import pi as PI\ndef f(): pass\nclass C: pass\nx, (y, z) = 1, (2, 3)\n"
    )
    src += "for i in range(3):\n    w = i\nif True:\n    v = 1\n%matplotlib inline\n"
    assert bound_names(src) == {"np", "PI", "f", "C", "x", "y", "z", "i", "w", "v"}
    assert bound_names("def (") == set()


def test_loaded_names() -> None:
    assert loaded_names("assert add(1, x) == y.z") == {"add", "x", "y"}


def test_imported_modules_include_lazily_loaded_submodules() -> None:
    mods = imported_modules(["import numpy as np", "np.testing.assert_allclose(a, b)", "from os import path"])
    assert {"numpy", "numpy.testing", "os", "os.path"} <= set(mods)


def role(cell, r, gid=None):
    cell.metadata["grader"] = {"role": r, "grade_id": gid}
    return cell


def test_plan_groups_tests_and_adds_canaries_and_mutation_runs() -> None:
    nb = notebook(
        role(code("import math"), "locked", "setup"),
        role(code("def add(a, b):\n    return a + b"), "solution", "add"),
        role(code("assert add(1, 2) == 3"), "test", "t1"),
        role(code("assert math.pi > 3"), "test", "t2"),
        role(code("print('scratch')"), "student"),
        role(code("assert add(0, 0) == 0"), "test", "t3"),
    )
    plan = build_plan(nb, {"add"})
    kinds = [s.kind for s in plan.steps]
    assert kinds[0] == "setup"
    assert plan.groups == {0: [], 1: ["t1", "t2"], 2: ["t3"]}
    assert kinds.count("mutant") == 2, "t2 references no answer: no mutation run"
    assert kinds.count("canary-error") == kinds.count("canary-value") == kinds.count("unstash") == 3
    mutant = next(s for s in plan.steps if s.kind == "mutant")
    assert mutant.source == "assert add(1, 2) == 3"
    pre = next(s for s in plan.steps if s.kind == "pre" and s.grade_id == "t1")
    assert '["add"]' in pre.call
    assert [s.kind for s in plan.steps if s.cell_index == 4] == ["cell"]
    nonces = [s.expect for s in plan.steps if s.kind == "canary-error"]
    assert len(set(nonces)) == 3


def test_unguarded_plan_is_just_the_cells() -> None:
    nb = notebook(role(code("x = 1"), "student"), role(code("assert x"), "test", "t"))
    plan = build_plan(nb, set(), guard=False)
    assert [s.kind for s in plan.steps] == ["setup", "cell", "test"]
