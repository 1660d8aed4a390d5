"""Answers must not be able to fake equality (or truth) in the tests that grade them.

One assignment with one small question per kind of value: a float, an int, a str, a list, a tuple,
a dict, a set, a bool, a numpy array, a pandas Series, and questions about a class the student
writes. The *fake* submission answers every question with a value whose class claims to be equal
to anything (a subclass of the expected builtin, a plain class, an ndarray or Series subclass, a
value whose `__eq__` returns a truthy object of its own, ...); its contents are wrong. Graded
naively (no guard) every fake passes, which shows each is a real cheat; graded normally every
faked test scores 0 with a note. The *legit* submission answers with values of other honest types
(numpy scalars, a namedtuple, a Counter, a real DataFrame, the student's own classes compared
through their methods) and must earn full marks.
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from grader_service.convert.release import release_assignment

from .builders import answer, graded, locked, markdown, notebook, with_answers, write
from .conftest import only_notebook, points

pytest.importorskip("numpy")
pytest.importorskip("pandas")


def _question(name: str, solution: str, test: str, points: float = 1) -> list:
    source = f"### BEGIN SOLUTION\n{textwrap.dedent(solution).strip()}\n### END SOLUTION"
    return [answer(name, source), graded(f"test_{name}", textwrap.dedent(test).strip(), points)]


QUESTIONS = {
    "half": ("def half(x):\n    return x / 2", "assert half(3) == 1.5\nassert half(5) == 2.5"),
    "double": ("def double(n):\n    return 2 * n", "assert double(4) == 8"),
    "greet": ("def greet(name):\n    return f'Hello, {name}!'", "assert greet('Ann') == 'Hello, Ann!'"),
    "evens": ("def evens(n):\n    return list(range(0, n, 2))", "assert evens(7) == [0, 2, 4, 6]"),
    "minmax": ("def minmax(xs):\n    return (min(xs), max(xs))", "assert minmax([3, 1, 2]) == (1, 3)"),
    "counts": (
        "def counts(s):\n    return {c: s.count(c) for c in set(s)}",
        "assert counts('aba') == {'a': 2, 'b': 1}",
    ),
    "uniq": ("def uniq(xs):\n    return set(xs)", "assert uniq([1, 1, 2]) == {1, 2}"),
    # Expected value on the left: a subclass of float overriding __eq__ is asked first (reflected).
    "mean": ("def mean(xs):\n    return sum(xs) / len(xs)", "assert 2.5 == mean([2, 3])"),
    # != and not: a fake needs __ne__ to match.
    "square": ("def square(x):\n    return x * x", "assert square(3) == 9\nassert not (square(3) != 9)"),
    "cube": ("def cube(x):\n    return x ** 3", "assert cube(2) == 8"),
    "inside": (
        "def inside(x, lo, hi):\n    return lo <= x <= hi",
        "assert inside(5, 0, 10)\nassert inside(11, 0, 10) == False",
    ),
    "fact": (
        "def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)",
        "assert fact(5) == 120",
    ),
    "pairs": (
        "def pairs(n):\n    return [(i, i * i) for i in range(n)]",
        "assert pairs(3) == [(0, 0), (1, 1), (2, 4)]",
    ),
    "pick": ("def pick(xs):\n    return max(xs)", "assert pick([4, 5]) in [5, 6]"),
    "primes": (
        "def primes(n):\n    return [p for p in range(2, n) if all(p % d for d in range(2, p))]",
        "assert len(primes(10)) == 4 and primes(10)[0] == 2\nassert primes(10) == [2, 3, 5, 7]",
    ),
    "accuracy": ("def accuracy():\n    return 0.95", "assert 0.9 < accuracy() <= 1.0"),
    "shout": ("def shout(s):\n    return s.upper()", "assert shout('hey').lower() == 'hey'"),
    "scale": (
        "def scale(a, k):\n    return a * k",
        "assert (scale(np.arange(3), 2) == np.array([0, 2, 4])).all()",
    ),
    # np.testing is a call, not a comparison: its arguments are seen as their trusted base class.
    "unit": (
        "def unit(v):\n    return v / np.linalg.norm(v)",
        "np.testing.assert_allclose(unit(np.array([3.0, 4.0])), [0.6, 0.8])\n"
        "np.testing.assert_array_equal(unit(np.array([2.0, 0.0])), [1.0, 0.0])",
    ),
    "totals": (
        "def totals(df):\n    return df.sum()",
        "assert (totals(pd.DataFrame({'a': [1, 2], 'b': [3, 4]})) == pd.Series({'a': 3, 'b': 7})).all()",
    ),
}

SOURCE_CELLS = [
    markdown("# Values\nAnswer the questions."),
    locked("imports", "import math\nimport numpy as np\nimport pandas as pd"),
]
for _name, (_solution, _test) in QUESTIONS.items():
    SOURCE_CELLS += _question(_name, _solution, _test)
# A class the student writes, tested through its methods and its own __eq__ (both sides its class).
SOURCE_CELLS += _question(
    "stack",
    """
    class Stack:
        def __init__(self):
            self.items = []
        def push(self, x):
            self.items.append(x)
        def pop(self):
            return self.items.pop()
        def __len__(self):
            return len(self.items)
        def __eq__(self, other):
            return isinstance(other, Stack) and self.items == other.items
    """,
    """
    s = Stack()
    s.push(1)
    s.push(2)
    assert len(s) == 2 and s.pop() == 2
    t = Stack()
    t.push(1)
    assert s == t and not (s == Stack())
    """,
)
SOURCE_CELLS += _question(
    "point",
    """
    from dataclasses import dataclass
    @dataclass
    class Point:
        x: float
        y: float
    def midpoint(a, b):
        return Point((a.x + b.x) / 2, (a.y + b.y) / 2)
    """,
    "assert midpoint(Point(0, 0), Point(2, 4)) == Point(1, 2)\nassert [midpoint(Point(0, 0), Point(2, 2))] == [Point(1, 1)]",
)
# A class the instructor's read-only cell defines: its own __eq__ is trusted.
SOURCE_CELLS.append(
    locked(
        "money",
        "class Money:\n    def __init__(self, cents):\n        self.cents = cents\n"
        "    def __eq__(self, other):\n        return self.cents == (other.cents if isinstance(other, Money) else other)\n"
        "    __hash__ = None",
    )
)
SOURCE_CELLS += _question(
    "price",
    "def price(euros):\n    return Money(euros * 100)",
    "assert price(2) == 200 and price(2) == Money(200) and not (price(2) == 199)",
)
SOURCE_CELLS += _question(
    "approx",
    "def third(x):\n    return x / 3",
    "assert math.isclose(third(1), 1 / 3)\nassert np.isclose(third(2), 2 / 3)\nassert abs(third(3) - 1.0) < 1e-9",
)
SOURCE_CELLS += _question(
    "frame",
    "def table(n):\n    return pd.DataFrame({'n': range(n), 'sq': [i * i for i in range(n)]})",
    "_expected = pd.DataFrame({'n': range(3), 'sq': [0, 1, 4]})\nassert _expected.equals(table(3))\n"
    "assert np.allclose(table(3)['sq'].to_numpy(), [0, 1, 4])\nassert list(table(3).columns) == ['n', 'sq']",
)

FAKES_PRELUDE = """
import numpy as np, pandas as pd
class _Yes:
    def __bool__(self):
        return True
def _liar(base, value, truthy_result=False):
    # A `base` holding `value` that says it equals anything (and is unequal to nothing).
    def eq(self, other):
        return _Yes() if truthy_result else True
    def ne(self, other):
        return False
    ns = {"__eq__": eq, "__ne__": ne, "__hash__": lambda self: 0}
    if base in (list, str):
        ns["__len__"] = lambda self: 4
        ns["__getitem__"] = lambda self, i: 2
    if base in (float, int):
        for op in ("__lt__", "__le__", "__gt__", "__ge__"):
            ns[op] = lambda self, other: True
    if base is str:
        ns["lower"] = lambda self: _liar(str, "nope")
    cls = type("Answer", (base,), ns)
    return cls(value) if base is not object else cls()
class _Always:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    __hash__ = object.__hash__
class _FakeArray(np.ndarray):
    # Equal to anything, for == and for numpy's own comparisons (np.testing, np.isclose).
    def __eq__(self, other):
        return np.ones(np.broadcast(self, other).shape, dtype=bool).view(_FakeArray)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [i.view(np.ndarray) if isinstance(i, np.ndarray) else i for i in inputs]
        if ufunc.__name__ in ("equal", "less_equal", "less", "isclose"):
            return np.ones(np.broadcast(*plain).shape, dtype=bool).view(_FakeArray)
        kwargs.pop("out", None)
        result = getattr(ufunc, method)(*plain, **kwargs)
        return result.view(_FakeArray) if isinstance(result, np.ndarray) else result
class _FakeSeries(pd.Series):
    def __eq__(self, other):
        return pd.Series([True] * len(self), index=self.index)
"""

# Every answer is wrong in its contents, and claims otherwise.
FAKES = {
    "half": "def half(x):\n    return _liar(float, 0.0)",
    "double": "def double(n):\n    return _liar(int, 0)",
    "greet": "def greet(name):\n    return _liar(str, 'nope')",
    "evens": "def evens(n):\n    return _liar(list, [])",
    "minmax": "def minmax(xs):\n    return _liar(tuple, (0, 0))",
    "counts": "def counts(s):\n    return _liar(dict, {})",
    "uniq": "def uniq(xs):\n    return _liar(set, set())",
    "mean": "def mean(xs):\n    return _liar(float, 0.0)",
    "square": "def square(x):\n    return _liar(int, 0)",
    "cube": "def cube(x):\n    return _liar(object, None, truthy_result=True)",
    "inside": "def inside(x, lo, hi):\n    return _Always()",
    "fact": "def fact(n):\n    return _Always()",
    "pairs": "def pairs(n):\n    return [(_liar(int, 0), _liar(int, 0)) for i in range(n)]",
    "pick": "def pick(xs):\n    return _liar(int, 0)",
    "primes": "def primes(n):\n    return _liar(list, [])",
    "accuracy": "def accuracy():\n    return _liar(float, 0.0)",
    "shout": "def shout(s):\n    return _liar(str, 'nope')",
    "scale": "def scale(a, k):\n    return np.zeros(3).view(_FakeArray)",
    "totals": "def totals(df):\n    return _FakeSeries({'a': 0, 'b': 0})",
    "unit": "def unit(v):\n    return np.zeros(2).view(_FakeArray)",
}
FAKED = sorted(f"test_{name}" for name in FAKES)

# Honest answers of other types than the reference's, and the student's own classes.
LEGIT = {
    "half": "def half(x):\n    return np.float64(x) / 2",
    "double": "def double(n):\n    return np.int64(2 * n)",
    "greet": "class Text(str):\n    pass\ndef greet(name):\n    return Text(f'Hello, {name}!')",
    "minmax": (
        "from collections import namedtuple\nMinMax = namedtuple('MinMax', 'lo hi')\n"
        "def minmax(xs):\n    return MinMax(min(xs), max(xs))"
    ),
    "counts": "from collections import Counter\ndef counts(s):\n    return Counter(s)",
    "uniq": "def uniq(xs):\n    return frozenset(xs)",
    "scale": "def scale(a, k):\n    return np.asarray(a) * k",
    "totals": "def totals(df):\n    return df.sum(axis=0)",
    "evens": "import numpy as np\ndef evens(n):\n    return [int(v) for v in np.arange(0, n, 2)]",
}


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("values")
    write(notebook(*SOURCE_CELLS), root / "source" / "values.ipynb")
    release_assignment(root / "source", root / "release")
    release = json.loads((root / "release" / "values.ipynb").read_text())
    source = json.loads((root / "source" / "values.ipynb").read_text())
    solutions = {}
    for cell in source["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            text = "".join(cell["source"])
            solutions[gid] = "\n".join(line for line in text.splitlines() if "### " not in line)
    return {"root": root, "source": root / "source", "release": release, "solutions": solutions}


def _submission(assignment: dict, name: str, answers: dict[str, str], prelude: str = "x = 1") -> Path:
    nb = with_answers(assignment["release"], answers, insert={2: textwrap.dedent(prelude)})
    directory = assignment["root"] / "submissions" / name
    write(nb, directory / "values.ipynb")
    return directory


def _full_marks(book: dict) -> dict[str, float]:
    return {gid: cell["max_points"] for gid, cell in only_notebook(book)["cells"].items()}


@pytest.fixture(scope="module")
def fakes(assignment: dict, grade_case) -> tuple:
    answers = {**assignment["solutions"], **FAKES}
    return grade_case(_submission(assignment, "fakes", answers, FAKES_PRELUDE), assignment["source"])


def test_the_reference_solution_earns_everything(assignment: dict, grade_case) -> None:
    _, book, _ = grade_case(
        _submission(assignment, "reference", assignment["solutions"]), assignment["source"]
    )
    assert points(book) == _full_marks(book)
    assert book["tampering"] is False


def test_every_fake_passes_a_naive_run(assignment: dict, grade_case) -> None:
    """Without the guard (plain Python semantics) each fake earns its test: the cheats are real."""
    answers = {**assignment["solutions"], **FAKES}
    _, book, _ = grade_case(
        _submission(assignment, "fakes_naive", answers, FAKES_PRELUDE), assignment["source"], guard=False
    )
    got = points(book)
    assert {gid: got[gid] for gid in FAKED} == {gid: 1.0 for gid in FAKED}


def test_every_faked_test_scores_zero_with_a_note(fakes: tuple) -> None:
    _, book, _ = fakes
    got = points(book)
    assert {gid: got[gid] for gid in FAKED} == {gid: 0.0 for gid in FAKED}
    # The kernel kept working: the questions answered honestly still pass.
    assert {gid: got[gid] for gid in got if gid not in FAKED} == {gid: 1.0 for gid in got if gid not in FAKED}
    # The questions answered honestly keep their points.
    assert all(got[gid] == 1.0 for gid in got if gid not in FAKED), got
    cells = only_notebook(book)["cells"]
    flagged = sorted(gid for gid in FAKED if cells[gid]["tampering"])
    # `inside` and `fact` return a plain object: a test cannot rely on its truth (fails, flagged)
    # or compare it with a number (fails: it is equal only to itself); the rest claim equality.
    # `primes` is caught before any claim: `len()` is trusted code, which sees the real (empty) list.
    expected_flags = sorted(set(FAKED) - {"test_primes"})
    assert flagged == expected_flags, sorted(set(expected_flags) - set(flagged))
    assert book["tampering"] is True


def test_fake_notes_name_the_class_only_for_staff(fakes: tuple) -> None:
    _, book, _ = fakes
    notes = [n for n in only_notebook(book)["notes"] if n["cell"] == "test_half" and n["kind"] == "tampering"]
    assert notes and "overrides equality" in notes[0]["message"]
    assert "Answer" in notes[0]["detail"] and "Answer" not in notes[0]["message"]


def test_legitimate_answers_of_other_types_earn_everything(assignment: dict, grade_case) -> None:
    answers = {**assignment["solutions"], **LEGIT}
    _, book, _ = grade_case(_submission(assignment, "legit", answers), assignment["source"])
    assert points(book) == _full_marks(book)
    assert book["tampering"] is False


def test_wrong_student_classes_still_fail(assignment: dict, grade_case) -> None:
    """The student's own __eq__ decides Stack == Stack; a lying one is caught by the negative check."""
    answers = dict(assignment["solutions"])
    answers["stack"] = answers["stack"].replace(
        "return isinstance(other, Stack) and self.items == other.items", "return True"
    )
    answers["point"] = answers["point"].replace("/ 2", "/ 3")
    _, book, _ = grade_case(_submission(assignment, "wrong_classes", answers), assignment["source"])
    got = points(book)
    assert got["test_stack"] == 0.0 and got["test_point"] == 0.0
    assert sum(got.values()) == sum(_full_marks(book).values()) - 2


# Student code going after the checker itself, with fake answers.
TAMPERING = {
    # Lying about the fakes only (a kernel whose isinstance lies about everything stops working).
    "patched_builtins": """
        import builtins
        _real = (builtins.type, builtins.isinstance, builtins.getattr)
        def _is_fake(obj):
            return _real[0](obj).__name__ in ("Answer", "_Always", "_FakeArray", "_FakeSeries")
        builtins.isinstance = lambda obj, cls: True if _is_fake(obj) else _real[1](obj, cls)
        builtins.getattr = lambda obj, *a: (lambda *x, **k: True) if _is_fake(obj) else _real[2](obj, *a)
    """,
    "patched_operator": """
        import operator
        operator.eq = lambda a, b: True
        operator.ne = lambda a, b: False
        operator.contains = lambda a, b: True
        operator.truth = lambda a: True
    """,
    "patched_checker": """
        _chk = [v for k, v in globals().items() if k.startswith('_grader_checks_')][0]
        type(_chk).compare = lambda self, op, a, b: True
        type(_chk).truth = lambda self, value: True
        _chk.compare = lambda op, a, b: True
        _chk.suspect = lambda cls: False
        _chk._trusted = type('AllIds', (), {'__contains__': lambda self, x: True})()
    """,
    "replaced_checker": """
        _name = [k for k in globals() if k.startswith('_grader_checks_')][0]
        class _Pass:
            def compare(self, op, a, b):
                return True
            def chain(self, ops, *args):
                return True
            def truth(self, value):
                return True
        globals()[_name] = _Pass()
    """,
    "removed_transformer": """
        ip = get_ipython()
        for t in list(ip.ast_transformers):
            t.active = False
            type(t).visit = lambda self, node: node
        ip.ast_transformers.clear()
    """,
    "patched_checker_module": """
        _chk = [v for k, v in globals().items() if k.startswith('_grader_checks_')][0]
        _g = type(_chk).compare.__globals__
        _g['_type'] = lambda obj: int
        _g['_ATOMS'] = frozenset({object})
        _g['SEMANTIC'] = frozenset()
    """,
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampering_with_the_checker_gains_nothing(assignment: dict, grade_case, name: str) -> None:
    """Each is put back before the protected cells run (noted), so the fakes fail as before."""
    answers = {**assignment["solutions"], **FAKES}
    prelude = FAKES_PRELUDE + textwrap.dedent(TAMPERING[name])
    _, book, _ = grade_case(_submission(assignment, f"tamper_{name}", answers, prelude), assignment["source"])
    got = points(book)
    assert {gid: got[gid] for gid in FAKED} == {gid: 0.0 for gid in FAKED}
    # The kernel kept working: the questions answered honestly still pass.
    assert {gid: got[gid] for gid in got if gid not in FAKED} == {gid: 1.0 for gid in got if gid not in FAKED}


# ---- the checker on its own (no kernel): the semantics, case by case ---------------------------------


@pytest.fixture(scope="module")
def checked() -> Callable[[str], dict]:
    """exec(source) compiled as a protected cell is, with a checker made first (as in the kernel)."""
    import ast
    import types

    from grader_service.convert.guard import checks_code

    module = types.ModuleType("_grader_checks_under_test")
    exec(checks_code(), module.__dict__)
    # As in a kernel, whose working directory is the submission's (this checkout may hold the venv).
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="checker-cwd-"))
    try:
        checker = module.Checker()
    finally:
        os.chdir(cwd)
    transformer = module.CheckTransformer("CHK")
    transformer.active = True

    def run(source: str, ns: dict | None = None, student: bool = False) -> dict:
        """Run `source` as a protected cell, or (`student`) as the student's cell: not rewritten."""
        ns = {"CHK": checker} if ns is None else ns
        tree = ast.parse(textwrap.dedent(source))
        if not student:
            tree = transformer.visit(tree)
        exec(compile(tree, "<test cell>", "exec"), ns)
        ns["_detected"] = checker.take_detected()
        return ns

    run.checker = checker  # type: ignore[attr-defined]
    run.module = module  # type: ignore[attr-defined]
    return run


STUDENT_CLASSES = """
import collections, numpy as np
class FF(float):
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__
class FL(list):
    def __eq__(self, other):
        return True
    def __len__(self):
        return 5
class FA(np.ndarray):
    def __new__(cls, value):
        return np.array([value]).view(cls)
    def __eq__(self, other):
        return np.ones(self.shape, dtype=bool)
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return np.ones(np.broadcast(*inputs).shape, dtype=bool) if ufunc.__name__ in ("equal", "isclose") else NotImplemented
class FI(int):
    def __eq__(self, other):
        return True
    def __hash__(self):
        return 0
class Vec:
    def __init__(self, x):
        self.x = x
    def __eq__(self, other):
        return isinstance(other, Vec) and self.x == other.x
    __hash__ = None
class Stack:
    def __len__(self):
        return 0
P = collections.namedtuple("P", "x y")
def objects(*items):
    return np.array(list(items), dtype=object)
def ordered(**items):
    return collections.OrderedDict(**items)
"""

SEMANTICS = {
    # (expression, value it must have, whether a fake is noted)
    "FF(0.0) == 3.0": (False, True),
    "3.0 == FF(0.0)": (False, True),
    "FF(3.0) == 3.0": (True, False),
    "FF(0.0) != 3.0": (True, False),
    "[FF(0.0)] == [3.0]": (False, True),
    "(FF(0.0), 1) == (3.0, 1)": (False, True),
    "{'a': FF(0.0)} == {'a': 3.0}": (False, True),
    "{FI(1): 'x'} == {2: 'x'}": (False, False),
    "P(FF(0.0), 2) == (1.0, 2)": (False, True),
    "P(1, 2) == (1, 2)": (True, False),
    "ordered(a=FF(0.0)) == {'a': 3.0}": (False, True),
    "collections.Counter('aab') == {'a': 2, 'b': 1}": (True, False),
    "3 in [FI(0)]": (False, True),
    "FI(0) in [3, 4]": (False, True),
    "FI(3) in {3, 4}": (True, True),  # its hash hides it from the set: noted either way
    "0.0 < FF(0.5) < 1.0": (True, False),
    "1.0 < FF(0.5) < 2.0": (False, False),
    "Vec(1) == Vec(1)": (True, False),
    "Vec(1) == Vec(2)": (False, False),
    "[Vec(1), Vec(2)] == [Vec(1), Vec(2)]": (True, False),
    "Vec(1) in [Vec(0), Vec(1)]": (True, False),
    "Vec(1) == 1": (False, False),
    "objects(FF(0.0)) == np.array([3.0])": ([False], True),
    # Calls into trusted code get the fakes' contents: numpy's own comparisons cannot be fooled.
    "np.array_equal(objects(FF(0.0)), [3.0])": (False, False),
    "np.testing.assert_array_equal(FA(0.0), [3.0]) is None": ("AssertionError", False),
    "len(FL([1, 2])) == 2 and sorted([Vec(2), Vec(1)], key=lambda v: v.x)[0].x == 1": (True, False),
    "(np.arange(3) == np.array([0, 1, 2])).all()": (True, False),
    "np.float64(0.5) == 0.5": (True, False),
    "np.int64(3) in [1, 2, 3]": (True, False),
    "None == FF(0.0)": (False, True),
    "FF(0.0) is FF(0.0)": (False, False),
}


@pytest.mark.parametrize("expression", sorted(SEMANTICS))
def test_comparisons_are_decided_by_trusted_semantics(checked, expression: str) -> None:
    want, noted = SEMANTICS[expression]
    ns = checked(STUDENT_CLASSES, student=True)
    try:
        checked(f"_result = {expression}", ns)
    except AssertionError as e:
        ns.update(_result=type(e).__name__, _detected=checked.checker.take_detected())
    result = ns["_result"]
    result = result.tolist() if hasattr(result, "tolist") else result
    assert result == want and type(result) is type(want)
    assert bool(ns["_detected"]) is noted, ns["_detected"]


def test_truth_of_a_student_object_decides_nothing(checked) -> None:
    ns = checked(STUDENT_CLASSES + "class Yes:\n    def __bool__(self):\n        return True\n", student=True)
    with pytest.raises(checked.module.UntrustedValue):
        checked("assert Yes()", ns)
    with pytest.raises(checked.module.UntrustedValue):
        checked("assert not Stack()", ns)
    # A builtin subclass's truth is that of its contents; an ordinary object is true, as in Python.
    checked("class L(list):\n    def __len__(self):\n        return 3\nassert not L()\nassert object()", ns)


def test_rewritten_cells_keep_python_semantics(checked) -> None:
    ns = checked(
        """
        _log = []
        def f(x):
            _log.append(x)
            return x
        assert f(1) == 1 and not f(2) == 3, "message kept"
        _n = sum(1 for i in range(10) if i % 2 == 0)
        _w = 0
        while _w < 3:
            _w += 1
        _y = "a" if _w == 3 else "b"
        class K:
            limit = 2
            ok = limit > 1
        def helper(a, b):
            return a == b
        _same = [helper(i, i) for i in range(3)]
        _none = f(None) is None
        _walrus = (z := 5) == 5
        """
    )
    assert ns["_log"] == [1, 2, None] and ns["_n"] == 5 and ns["_w"] == 3 and ns["_y"] == "a"
    assert ns["K"].ok is True and ns["_same"] == [True] * 3 and ns["_none"] and ns["_walrus"]
    with pytest.raises(AssertionError, match="message kept"):
        checked("assert 1 == 2, 'message kept'", ns)


def test_classes_loaded_later_are_trusted_only_from_the_installation(checked) -> None:
    """A module imported after the snapshot keeps its semantics; one forged in student code does not."""
    import sys

    candidates = ["ipaddress", "fractions", "decimal", "uuid", "zoneinfo", "graphlib"]
    name = next((m for m in candidates if m not in sys.modules), None)
    if name is None:
        pytest.skip("every candidate module is imported already")
    ns = checked(f"import {name} as _late, types\n", student=True)
    late = next(v for v in vars(ns["_late"]).values() if isinstance(v, type) and "__eq__" in vars(v))
    assert checked.checker.trusted(late)
    forged = checked(
        """
        import sys
        class Fake(float):
            def __eq__(self, other):
                return True
        Fake.__module__ = _late.__name__
        setattr(_late, "Fake", Fake)
        _result = Fake(0.0) == 3.0
        """,
        ns,
    )
    assert forged["_result"] is False


def test_calls_that_read_their_callers_frame_are_left_alone(checked) -> None:
    """eval, super, magics (`%time x = f()` assigns in the caller's frame) must see the cell's frame."""
    import ast

    transformer = checked.module.CheckTransformer("CHK")
    transformer.active = True
    source = "get_ipython().run_line_magic('time', 'x = f(1)')\neval('f(1)')\nsys._getframe(0)\nf(1)"
    rewritten = ast.unparse(transformer.visit(ast.parse(source)))
    assert rewritten.splitlines() == [
        "get_ipython().run_line_magic('time', 'x = f(1)')",
        "eval('f(1)')",
        "sys._getframe(0)",
        "CHK.callee(f)(1)",
    ]
