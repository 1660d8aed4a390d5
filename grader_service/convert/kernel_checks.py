"""Comparisons in test cells that values built by student code cannot fake (runs in the kernel).

Like `kernel_support.py`, this file is not imported by the grader: its source is executed in the
student's kernel, as a private module, before any student code. Standard library only.

The cheat it stops. `assert f(x) == y` asks the *answer* whether it equals the expected value: an
answer returning an object whose `__eq__` always says True (a `float` or `list` subclass, or any
class) passes every such test, and mutation runs cannot see it (they replace the answers, not the
values the answers return). The same goes for `!=`, `<`, `in`, and for the truth value that
`assert` finally takes (`__bool__`).

The rule. While a protected group runs, every test and locked cell is compiled through
`CheckTransformer`: each comparison becomes a call to `Checker.compare`, each truth test
(`assert`, `if`, `while`, `not`, conditional expressions and comprehension filters) a call to
`Checker.truth`, and the callee of each call with arguments goes through `Checker.callee`. These decide by the
semantics of *trusted* classes only:

- a class is trusted if it existed before student code ran (builtins, the standard library and
  whatever the instructor's cells import, preloaded), or if it was loaded later from a module file
  of the Python installation (numpy imported by the student's cell) with its comparison methods
  defined in such files;
- a value whose class (or a class in its MRO) is untrusted *and* defines comparison or truth
  methods is compared as the trusted thing it is made of: a subclass of `float`, `int`, `str`,
  `bytes`, `complex`, `list`, `tuple`, `dict`, `set` or `frozenset` as an exact builtin with
  the same contents (read through the builtin's own C accessors, so overridden `__iter__`,
  `__len__` or `__getitem__` do not matter either), a numpy array or pandas object as the base
  class, anything else as a bare object (equal only to itself);
- containers are compared element by element under the same rule;
- a test comparing two values that are *both* instances of the student's own classes (an
  instructor's `Vector(1, 2) == v`) is testing the student's `__eq__`: that comparison runs as
  written, but its result must still be a trusted value (a bool) to decide anything;
- a truth test on a value whose class defines its own `__bool__`/`__len__` in student code fails;
- a call into trusted code (builtins, the installation's modules, functions of the instructor's
  read-only cells) gets its arguments with the fakes undone as above, except that instances of the
  student's own classes stay as they are (`sorted` needs their `__lt__`); the student's own functions
  get their arguments untouched.

When the value's own methods would have said otherwise (a fake float claiming to equal the
expected value), the checker records it; the grader zeroes the test with a tampering note.

What it does not cover (documented): methods an answer's class overrides, called on the answer
(`answer.equals(expected)` runs the student's `equals`; write `expected.equals(answer)`), an
instance of the student's own class passed to trusted code that compares it internally (numpy
turns it into an object array and asks its `__eq__`), code that forges where a class comes from
(module attributes and code file names), and a thread that keeps re-installing an AST
transformer undoing the rewriting of selected cells. Tampering with the checker itself is undone
before every protected cell and shows in the canaries and mutation runs, which use it too.
"""

import ast as _ast
import functools as _functools
import operator as _operator
import os as _os
import sys as _sys

# Module globals shadow the builtins: bound now, before any student code runs, so a later patch of
# `builtins` does not reach the checker (and the grader restores this namespace before each cell).
from builtins import (  # noqa: F401, UP029 - they are here to be found first
    AssertionError,
    BaseException,
    Exception,
    RecursionError,
    RuntimeError,
    bool,
    bytes,
    classmethod,
    complex,
    dict,
    float,
    frozenset,
    int,
    list,
    object,
    property,
    set,
    slice,
    staticmethod,
    str,
    tuple,
    type,
)

_type = type
_id = id
_len = len
_bool = bool
_iter = iter
_map = map
_set = set
_frozenset = frozenset
_list = list
_tuple = tuple
_dict = dict
_str = str
_repr = repr
_getattr = getattr
_all = all
_any = any
_zip = zip
_isinstance = isinstance
_enumerate = enumerate
_slice = slice
_complex = complex
_NoneType = type(None)
_mro_of = type.__dict__["__mro__"].__get__
_dict_of = type.__dict__["__dict__"].__get__
_name_of = type.__dict__["__name__"].__get__
_qualname_of = type.__dict__["__qualname__"].__get__
_modules = _sys.modules
_partial = _functools.partial
_FunctionType = type(lambda: None)
_MethodType = type((lambda: None).__get__(0))
_BuiltinType = type(len)
_ModuleType = type(_sys)

# Calls that look at the identity or the frame of their arguments rather than their value: left as written.
_NO_WRAP_NAMES = frozenset(
    {
        "super", "eval", "exec", "locals", "globals", "vars", "dir", "breakpoint", "__import__",
        "getattr", "hasattr", "setattr", "delattr", "isinstance", "issubclass", "type", "id", "callable",
    }
)  # fmt: skip
# (IPython's magics read their caller's local variables through the frame too: `%time x = f()`.)
_NO_WRAP_ATTRS = frozenset({"_getframe", "currentframe", "run_line_magic", "run_cell_magic"})
_realpath = _os.path.realpath

_OPS = {
    "==": _operator.eq,
    "!=": _operator.ne,
    "<": _operator.lt,
    "<=": _operator.le,
    ">": _operator.gt,
    ">=": _operator.ge,
    "in": lambda a, b: _operator.contains(b, a),
    "not in": lambda a, b: not _operator.contains(b, a),
    "is": _operator.is_,
    "is not": _operator.is_not,
}
_OP_SYMBOL = {
    _ast.Eq: "==",
    _ast.NotEq: "!=",
    _ast.Lt: "<",
    _ast.LtE: "<=",
    _ast.Gt: ">",
    _ast.GtE: ">=",
    _ast.In: "in",
    _ast.NotIn: "not in",
    _ast.Is: "is",
    _ast.IsNot: "is not",
}

# Exact types whose values hold no other objects: compared natively, always.
_ATOMS = frozenset({bool, int, float, complex, str, bytes, _NoneType, type(...), range})
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})

# Methods through which a value decides a comparison, a membership or a truth test, or takes
# over numpy's and pandas' operators. One of them defined by an untrusted class makes it suspect.
SEMANTIC = frozenset(
    {
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__bool__",
        "__len__",
        "__hash__",
        "__contains__",
        "__iter__",
        "__getitem__",
        "__array__",
        "__array_ufunc__",
        "__array_function__",
        "__array_priority__",
        "__array_interface__",
        "__array_struct__",
        "__array_wrap__",
        "__array_finalize__",
        "__pandas_priority__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
    }
)


def _as_exact(value, base):
    """The exact builtin `base` with `value`'s contents, read through `base`'s own C code."""
    if base is float:
        return float.__float__(value)
    if base is int:
        return int.__int__(value)
    if base is str:
        return str.__str__(value)
    if base is bytes:
        return bytes.__getitem__(value, _slice(None))
    if base is complex:
        return _complex(complex.real.__get__(value), complex.imag.__get__(value))
    if base is list:
        return list.copy(value)
    if base is tuple:
        return tuple.__getitem__(value, _slice(None))
    if base is dict:
        return _dict(dict.items(value))
    if base is set:
        return _set(set.__iter__(value))
    return _frozenset(frozenset.__iter__(value))


# How a C extension's class holds its own methods and attributes.
_C_MEMBERS = frozenset({"wrapper_descriptor", "method_descriptor", "getset_descriptor", "member_descriptor"})

_EXACT_BASES = (bool, float, int, str, bytes, complex, list, tuple, dict, set, frozenset)


class _Bare:
    """A value of an untrusted class seen without its own methods: equal only to itself."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        if _type(other) is _Bare:
            return self.obj is other.obj
        return self.obj is other

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return _id(self.obj)

    def __repr__(self):
        return "<value of an untrusted class>"


class UntrustedValue(AssertionError):
    """Raised when a test would have to rely on a value's own (student-defined) truth value."""


class Checker:
    """Decides the comparisons and truth tests of protected cells by trusted semantics only."""

    def __init__(self):
        self._trusted = _frozenset()  # ids of the classes that existed before student code ran
        self._keep = ()  # ...and those classes, kept alive (so no other object can take an id)
        self._instructor = _frozenset()  # ids of classes the instructor's read-only cells defined
        self._instructor_keep = ()
        self._verdicts = {}  # id -> (class, suspect?): cache for every class seen since
        self._late = {}  # id -> (class, trusted?): classes created after the snapshot
        self._callees = {}  # id -> (callable, trusted code?): see `call`
        self._roots = ()
        self.label = None
        self.detected = []  # (label, message, detail): fakes noticed while `label` ran
        self.snapshot()

    # ---- trust -----------------------------------------------------------------------------

    def snapshot(self):
        """Trust every class that exists now (no student code has run yet): ~2 ms."""
        stack = [object]
        found = {}
        while stack:
            cls = stack.pop()
            if _id(cls) in found:
                continue
            found[_id(cls)] = cls
            try:
                stack.extend(_type.__subclasses__(cls))
            except TypeError:  # `type` itself: its __subclasses__ needs the instance form
                stack.extend(cls.__subclasses__(cls))
        self._trusted = _frozenset(found)
        self._keep = _tuple(found.values())
        self.forget()
        self._roots = self._install_roots()

    def trust(self, classes):
        """Trust classes and functions defined by the instructor's cells (the grader's checkpoint)."""
        self._instructor_keep = self._instructor_keep + _tuple(classes)
        self._instructor = _frozenset(_id(cls) for cls in self._instructor_keep)
        self.forget()

    def forget(self):
        """Drop the verdicts cached since the snapshot (the grader calls it before every protected cell)."""
        self._verdicts.clear()
        self._late.clear()
        self._callees.clear()

    @staticmethod
    def _install_roots():
        """Where the Python installation's modules live (read-only for the kernel in the sandboxes)."""
        import sysconfig

        roots = set()
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            path = sysconfig.get_paths().get(key)
            if path:
                roots.add(_realpath(path) + _os.sep)
        for path in _sys.path:
            if path and ("site-packages" in path or "dist-packages" in path):
                roots.add(_realpath(path) + _os.sep)
        private = [_realpath(p) + _os.sep for p in (_os.getcwd(), _os.path.expanduser("~"))]
        return _tuple(r for r in roots if not _any(p.startswith(r) or r.startswith(p) for p in private))

    def _installed_file(self, filename):
        if not _isinstance(filename, _str) or not filename.endswith((".py", ".so", ".pyd")):
            return False
        path = _realpath(filename)
        return _any(path.startswith(root) for root in self._roots)

    def trusted(self, cls):
        """Whether `cls` existed before student code, or was loaded later from the installation."""
        if _id(cls) in self._trusted or _id(cls) in self._instructor:
            return True
        cached = self._late.get(_id(cls))
        if cached is not None and cached[0] is cls:
            return cached[1]
        result = self._late_trusted(cls)
        self._late[_id(cls)] = (cls, result)
        return result

    def _late_trusted(self, cls):
        """Found under its name in a module loaded from the installation, its methods written there."""
        try:
            module = _modules.get(_getattr(cls, "__module__", None))
            if module is None or not self._installed_file(_getattr(module, "__file__", None)):
                return False
            found = module
            for part in _str(_qualname_of(cls)).split("."):
                found = _getattr(found, part, None)
        except Exception:  # an unhashable or lying __module__: not from the installation
            return False
        if found is not cls:
            return False
        return _all(
            self._installed_member(cls, value) for name, value in _dict_of(cls).items() if name in SEMANTIC
        )

    def _installed_member(self, cls, value):
        """A comparison method of a late class: code from the installation, the class's own C slot, or data."""
        kind = _type(value)
        if value is None or kind in (bool, int, float):
            return True
        if kind in (staticmethod, classmethod):
            return self._installed_member(cls, value.__func__)
        if kind is property:
            return self._installed_member(cls, value.fget)
        if _name_of(kind) == "function":
            return self._installed_file(value.__code__.co_filename)
        return _name_of(kind) in _C_MEMBERS and _getattr(value, "__objclass__", None) is cls

    def suspect(self, cls):
        """Whether an untrusted class in `cls`'s MRO defines a comparison or truth method."""
        verdict = self._verdicts.get(_id(cls))
        if verdict is not None and verdict[0] is cls:
            return verdict[1]
        result = False
        for klass in _mro_of(cls):
            if not SEMANTIC.isdisjoint(_dict_of(klass)) and not self.trusted(klass):
                result = True
                break
        self._verdicts[_id(cls)] = (cls, result)
        return result

    def _student_object(self, cls):
        """Made of nothing trusted but `object` (no builtin, numpy or pandas base class)."""
        for klass in _mro_of(cls):
            if klass is object:
                return True
            if self.trusted(klass):
                return False
        return True

    @staticmethod
    def _exact_base(cls):
        mro = _mro_of(cls)
        for base in _EXACT_BASES:
            for klass in mro:
                if klass is base:
                    return base
        return None

    @staticmethod
    def _is_ndarray(cls):
        return _name_of(cls) == "ndarray" and _str(_getattr(cls, "__module__", "")) == "numpy"

    # ---- plain values ----------------------------------------------------------------------

    def _flat(self, value, depth=0):
        """Whether `value` holds only trusted values (at C speed for flat containers of atoms)."""
        t = _type(value)
        if t in _ATOMS:
            return True
        if depth > 100:
            return False
        if t in _CONTAINERS:
            if t is dict:
                if _set(_map(_type, value)) | _set(_map(_type, value.values())) <= _ATOMS:
                    return True
                return _all(self._flat(k, depth + 1) and self._flat(v, depth + 1) for k, v in value.items())
            if _set(_map(_type, value)) <= _ATOMS:
                return True
            return _all(self._flat(item, depth + 1) for item in value)
        if self.suspect(t):
            return False
        base = self._exact_base(t)
        if base is not None and base in _CONTAINERS:  # a namedtuple, an OrderedDict: its items
            return self._flat(_as_exact(value, base), depth + 1)
        if self._is_ndarray(t) and value.dtype.kind == "O":  # an array of Python objects
            return _all(self._flat(item, depth + 1) for item in value.ravel().tolist())
        return True

    def plain(self, value, depth=0):
        """`value` with every untrusted comparison method stripped, recursively."""
        if depth > 100:
            raise RecursionError("value nested too deeply to compare")
        t = _type(value)
        if t in _ATOMS:
            return value
        if t in _CONTAINERS:
            return self._plain_container(value, t, depth)
        suspect = self.suspect(t)
        if not suspect and self._is_ndarray(t) and value.dtype.kind == "O":
            items = [self.plain(item, depth + 1) for item in value.ravel().tolist()]
            out = value.copy()
            out.ravel()[...] = items if out.ndim else items[0]
            return out
        base = self._exact_base(t)
        if base is not None and (suspect or (base in _CONTAINERS and not self._flat(value))):
            exact = _as_exact(value, base)
            return self._plain_container(exact, base, depth) if base in _CONTAINERS else exact
        if not suspect:
            return value
        for klass in _mro_of(t):
            if klass is object:
                break
            if self.trusted(klass):
                return self._as_trusted_base(value, klass)
        return _Bare(value)

    def _plain_container(self, value, t, depth):
        if self._flat(value):
            return value
        if t is dict:
            return {self.plain(k, depth + 1): self.plain(v, depth + 1) for k, v in value.items()}
        items = [self.plain(item, depth + 1) for item in value]
        return items if t is list else t(items)

    def _as_trusted_base(self, value, base):
        """An instance of `base` (a numpy array or pandas object) sharing `value`'s data."""
        module = _str(_getattr(base, "__module__", ""))
        if self._is_ndarray(base):
            return base.view(value, base)
        if module.startswith("pandas"):
            return base(value)
        return _Bare(value)

    # ---- what the transformed cells call ---------------------------------------------------

    def compare(self, op, left, right):
        """`left <op> right` decided by trusted semantics (see the module docstring)."""
        tl, tr = _type(left), _type(right)
        if (tl in _ATOMS and tr in _ATOMS) or op in ("is", "is not"):
            return _OPS[op](left, right)
        if self._flat(left) and self._flat(right):
            return _OPS[op](left, right)
        if self.suspect(tl) and self.suspect(tr) and self._student_object(tl) and self._student_object(tr):
            return _OPS[op](left, right)  # the student's class on both sides: its __eq__ is tested
        if op in ("==", "!="):
            equal = self._pairwise_equal(left, right, 0)
            if equal is None:
                result = _OPS[op](self.plain(left), self.plain(right))
            else:
                result = equal if op == "==" else not equal
        elif op in ("in", "not in"):
            found = self._contains(right, left)
            result = found if op == "in" else not found
        else:
            result = _OPS[op](self.plain(left), self.plain(right))
        self._notice_fake(op, left, right, result)
        return result

    def _pairwise_equal(self, left, right, depth):
        """Equality of two sequences or dicts, item by item (so both-student pairs inside work).

        None when they are not both sequences or both dicts (compare their plain values then).
        """
        a, b = self._shallow(left), self._shallow(right)
        ta, tb = _type(a), _type(b)
        if ta is tb and ta in (list, tuple):
            if _len(a) != _len(b):
                return False
            return _all(self._item_equal(x, y, depth) for x, y in _zip(a, b, strict=True))
        if ta is tb is dict and self._flat(_list(a)) and self._flat(_list(b)):
            if a.keys() != b.keys():
                return False
            return _all(self._item_equal(a[k], b[k], depth) for k in a)
        return None

    def _item_equal(self, x, y, depth):
        if depth > 100:
            raise RecursionError("values nested too deeply to compare")
        if (self._flat(x) and self._flat(y)) or self._both_student(x, y):
            result = x == y
        else:
            result = self._pairwise_equal(x, y, depth + 1)
            if result is None:
                result = self.plain(x, depth + 1) == self.plain(y, depth + 1)
        return result if _type(result) is bool else self.truth(result)

    def _both_student(self, x, y):
        tx, ty = _type(x), _type(y)
        return self.suspect(tx) and self.suspect(ty) and self._student_object(tx) and self._student_object(ty)

    def _contains(self, container, item):
        c = self._shallow(container)
        if _type(c) in _CONTAINERS:
            return _any(self._item_equal(item, member, 0) for member in c)
        return _OPS["in"](self.plain(item), self.plain(container))

    def _shallow(self, value):
        """An untrusted subclass of a builtin container as the exact container (items untouched)."""
        t = _type(value)
        if t in _ATOMS or t in _CONTAINERS:
            return value
        base = self._exact_base(t)
        if base in _CONTAINERS:
            return _as_exact(value, base)
        return value

    def chain(self, ops, *operands):
        """`a < b < c`: every operand evaluated first (documented difference), then pairwise."""
        result = True
        for i, op in _enumerate(ops):
            result = self.compare(op, operands[i], operands[i + 1])
            if not self.truth(result):
                return result
        return result

    def _notice_fake(self, op, left, right, result):
        """Record a value whose own methods claim otherwise than its trusted comparison."""
        try:
            claimed = _OPS[op](left, right)
            if self._outcome(claimed) != self._outcome(result):
                self._record(op, left, right)
        except BaseException:  # noqa: S110 - what the value claims only decides whether to note it
            pass

    def _outcome(self, value):
        """A comparison's result as exact builtins: a bool, or the nested list of an array's bools."""
        t = _type(value)
        if t is bool:
            return value
        if self.suspect(t):  # a student object standing for True or False, or an array subclass
            return _bool(value) if self._student_object(t) else self._outcome(self.plain(value))
        if self._is_ndarray(t):
            return value.tolist()
        if _str(_getattr(t, "__module__", "")).startswith("pandas"):
            return value.to_numpy().tolist()
        return _bool(value)

    def _record(self, op, left, right):
        culprit = left if not self._flat(left) else right
        if op == "call":
            culprit = next((a for a in left if not self._flat(a)), None)
        detail = f"{op} with a value of class {_str(_qualname_of(_type(culprit)))[:80]}"
        message = (
            "a value in this test claims a comparison result that its contents contradict "
            "(a class of the submission overrides equality or truth); scored 0"
        )
        if _len(self.detected) < 20:
            self.detected.append((self.label, message, detail))

    def truth(self, value):
        """`bool(value)`, never decided by a student-defined `__bool__` or `__len__`."""
        t = _type(value)
        if t is bool:
            return value
        if not self.suspect(t):
            return _bool(value)
        if self._student_object(t):
            self._record("bool", value, None)
            raise UntrustedValue(
                "a test cannot rely on the truth value of a value whose class defines it in the submission"
            )
        result = _bool(self.plain(value))
        try:
            claimed = _bool(value)
        except BaseException:
            claimed = result
        if claimed is not result:
            self._record("bool", value, None)
        return result

    def callee(self, func):
        """What a call `func(...)` in a protected cell calls: `func` itself, or for trusted code
        (builtins, the installation's modules, the instructor's functions) `func` behind `_call`,
        which undoes the fakes among the arguments.

        So `np.testing.assert_allclose(answer, expected)`, `len(answer)` or `expected.equals(answer)`
        see an ndarray, list or DataFrame subclass that overrides comparisons as its base class. The
        student's own functions are called directly, from the cell's frame, with their arguments as
        they are.
        """
        cached = self._callees.get(_id(func))
        trusted = cached[1] if cached is not None and cached[0] is func else self._trusted_callee(func)
        return _partial(self._call, func) if trusted else func

    def _call(self, func, /, *args, **kwargs):
        changed = False
        plain_args = []
        for a in args:
            b = a if _type(a) in _ATOMS else self._unfake(a, 0)
            changed = changed or b is not a
            plain_args.append(b)
        plain_kwargs = {k: self._unfake(v, 0) for k, v in kwargs.items()} if kwargs else kwargs
        changed = changed or _any(plain_kwargs[k] is not v for k, v in kwargs.items())
        if not changed:
            return func(*args, **kwargs)
        try:
            return func(*plain_args, **plain_kwargs)
        except AssertionError:
            # An assertion helper failed on the contents: would the values themselves have passed it?
            try:
                func(*args, **kwargs)
            except BaseException:  # noqa: S110 - they would not: nothing claimed otherwise
                pass
            else:
                self._record("call", args, None)
            raise

    def _trusted_callee(self, func):
        if _type(func) is _MethodType:
            func = func.__func__  # the method's code decides, whatever the receiver
        cached = self._callees.get(_id(func))
        if cached is not None and cached[0] is func:
            return cached[1]
        kind = _type(func)
        if kind is _FunctionType:
            result = _id(func) in self._instructor or self._installed_file(func.__code__.co_filename)
        elif kind is _BuiltinType:
            owner = func.__self__
            result = owner is None or _type(owner) is _ModuleType or not self.suspect(_type(owner))
        elif _isinstance(func, type):
            result = self.trusted(func) and not self.suspect(func)
        else:
            result = self.trusted(kind) and not self.suspect(kind)
        if _len(self._callees) < 10_000:
            self._callees[_id(func)] = (func, result)
        return result

    def _unfake(self, value, depth):
        """`value` with untrusted subclasses of trusted classes replaced by their base (recursively).

        Unlike `plain`, instances of the student's own classes stay as they are: a call may need
        their methods (`sorted` of the student's objects uses their `__lt__`).
        """
        t = _type(value)
        if t in _ATOMS or depth > 100:
            return value
        if t in _CONTAINERS:
            if self._flat(value):
                return value
            if t is dict:
                return {self._unfake(k, depth + 1): self._unfake(v, depth + 1) for k, v in value.items()}
            items = [self._unfake(item, depth + 1) for item in value]
            return items if t is list else t(items)
        if not self.suspect(t):
            if self._is_ndarray(t) and value.dtype.kind == "O" and not self._flat(value):
                out = value.copy()
                out.ravel()[...] = [self._unfake(item, depth + 1) for item in value.ravel().tolist()]
                return out
            return value
        if self._student_object(t):
            return value
        base = self._exact_base(t)
        if base is not None:
            exact = _as_exact(value, base)
            return self._unfake(exact, depth + 1) if base in _CONTAINERS else exact
        for klass in _mro_of(t):
            if self.trusted(klass):
                return self._as_trusted_base(value, klass)
        return value

    def take_detected(self):
        found = _list(self.detected)
        self.detected.clear()
        return found


class _Rewriter(_ast.NodeTransformer):
    """Rewrites comparisons and truth tests into calls to the checker bound to `name`."""

    def __init__(self, name):
        self.name = name

    def _call(self, method, args, keywords=()):
        func = _ast.Attribute(value=_ast.Name(id=self.name, ctx=_ast.Load()), attr=method, ctx=_ast.Load())
        return _ast.Call(func=func, args=args, keywords=_list(keywords))

    def _truth(self, test):
        if _isinstance(test, _ast.BoolOp):
            test.values = [self._truth(v) for v in test.values]
            return test
        if _isinstance(test, _ast.UnaryOp) and _isinstance(test.op, _ast.Not):
            return test  # already rewritten by visit_UnaryOp
        return _ast.copy_location(self._call("truth", [test]), test)

    def visit_Compare(self, node):
        self.generic_visit(node)
        ops = [_OP_SYMBOL[_type(op)] for op in node.ops]
        if _all(op in ("is", "is not") for op in ops):
            return node
        if _len(ops) == 1:
            call = self._call("compare", [_ast.Constant(ops[0]), node.left, node.comparators[0]])
        else:
            symbols = _ast.Tuple(elts=[_ast.Constant(op) for op in ops], ctx=_ast.Load())
            call = self._call("chain", [symbols, node.left, *node.comparators])
        return _ast.copy_location(call, node)

    def visit_Call(self, node):
        self.generic_visit(node)
        func = node.func
        if not node.args and not node.keywords:
            return node
        if _isinstance(func, _ast.Name) and func.id in _NO_WRAP_NAMES:
            return node
        if _isinstance(func, _ast.Attribute) and (
            func.attr in _NO_WRAP_ATTRS or (_isinstance(func.value, _ast.Name) and func.value.id == self.name)
        ):
            return node
        node.func = _ast.copy_location(self._call("callee", [func]), func)
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if _isinstance(node.op, _ast.Not):
            node.operand = self._truth(node.operand)
        return node

    def _visit_test(self, node):
        self.generic_visit(node)
        node.test = self._truth(node.test)
        return node

    visit_Assert = visit_If = visit_While = visit_IfExp = _visit_test

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.ifs = [self._truth(test) for test in node.ifs]
        return node


class CheckTransformer:
    """IPython's AST transformer for protected cells; a no-op unless `active`.

    The grader's `pre` step activates it before every protected cell and `unstash` deactivates
    it after the group, so the student's own cells compile exactly as written.
    """

    def __init__(self, name):
        self.rewriter = _Rewriter(name)
        self.active = False
        self.failures = []

    def visit(self, node):
        if not self.active:
            return node
        try:
            return _ast.fix_missing_locations(self.rewriter.visit(node))
        except Exception as e:  # IPython would drop a transformer that raises: fail the cell instead
            self.failures.append(f"{_type(e).__name__}: {e}")
            message = f"the grader could not prepare this cell ({_type(e).__name__})"
            return _ast.parse(f"raise RuntimeError({message!r})")


def install(shell, name):
    """Create the checker and its (inactive) transformer; bind the checker to `name` for the cells."""
    checker = Checker()
    transformer = CheckTransformer(name)
    shell.user_ns[name] = checker
    shell.ast_transformers.append(transformer)
    return checker, transformer
