"""Code the grader runs *inside* the student's kernel, before any student code.

This file is not imported by the grader: its source is sent to the kernel as the first (silent)
cell, so it must stay self-contained (standard library + IPython only) and must not depend on
grader_service being installed where the kernel runs.

What it is for. Student code runs in the same process as the test cells, so it can change how
those tests execute: register AST or input transformers, patch `showtraceback`, the display hook
or the formatters (partial credit is read from the displayed value), add event hooks, monkeypatch
builtins or the helpers tests call (`np.testing.assert_allclose`), shadow modules with files in
the working directory. Before each protected cell the grader calls `pre()`, which puts every such
piece of machinery back to the state captured here at kernel start ("trusted") and keeps the
student's versions aside; `unstash()` reinstates the student's versions after the protected group,
so the student's own cells keep working exactly as they wrote them.

This is prevention for the cheats it knows; it is not a security boundary (code in the same
process can undo anything). The grader backs it with detection that does not depend on this code
being intact: canary cells with per-run nonces and "mutation" runs of each test with wrong answers
substituted (see `guard.py`).
"""

import builtins as _builtins
import contextlib
import random as _random
import sys as _sys
import threading as _threading

_MISSING = object()

# Builtins that IPython/ipykernel rebind around every execution (or that hold the last result).
_VOLATILE_BUILTINS = frozenset({"_", "__", "___", "input", "raw_input", "get_ipython", "exit", "quit"})


class _WrongAnswer:
    """Stands in for every name an answer cell defines while a test runs in "mutation" mode.

    Calling it returns another wrong answer, so a test reaches its assertion helpers with a value
    that no correct check accepts: equality is False, truthiness, iteration, arithmetic, attribute
    access and numeric conversion all raise. A test that still passes is not testing the answer,
    which (for tests that reference answers) means its execution was tampered with.
    """

    __slots__ = ()
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __call__(self, *args, **kwargs):
        return _WrongAnswer()

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    def __repr__(self):
        return "<wrong answer>"

    def __getattr__(self, name):
        raise AttributeError(name)

    def _fail(self, *args, **kwargs):
        raise TypeError("wrong answer")

    __bool__ = __len__ = __iter__ = __getitem__ = __contains__ = _fail
    __float__ = __int__ = __index__ = __complex__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _fail
    __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __neg__ = __pos__ = __abs__ = _fail
    __and__ = __or__ = __xor__ = __lshift__ = __rshift__ = __invert__ = _fail


def _is_routine(value):
    return callable(value) or isinstance(value, (staticmethod, classmethod, property, type(_sys)))


class _Location:
    """One place whose value (and, for lists and dicts, contents) is guarded."""

    __slots__ = ("label", "get", "set")

    def __init__(self, label, get, set_):
        self.label = label
        self.get = get
        self.set = set_


def _label(obj):
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, type(_sys)):
        return obj.__name__
    return type(obj).__name__


def _attr_location(obj, name, label=None):
    def get():
        return getattr(obj, name, _MISSING)

    def set_(value):
        if value is _MISSING:
            if name in getattr(obj, "__dict__", {}):
                delattr(obj, name)
        else:
            setattr(obj, name, value)

    return _Location(label or f"{_label(obj)}.{name}", get, set_)


def _item_location(mapping, key, label=None):
    def get():
        return mapping.get(key, _MISSING)

    def set_(value):
        if value is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = value

    return _Location(label or f"[{key!r}]", get, set_)


def _content(value):
    if type(value) is list:
        return list(value)
    if type(value) is dict:
        return dict(value)
    return None


def _same_content(current, content):
    """Identity-based comparison: a student object's __eq__ must not decide what gets restored."""
    if content is None:
        return True
    snapshot = _content(current)
    if snapshot is None or type(snapshot) is not type(content) or len(snapshot) != len(content):
        return False
    if type(content) is list:
        return all(a is b for a, b in zip(snapshot, content, strict=True))
    return all(k in snapshot and snapshot[k] is v for k, v in content.items())


def _put(location, value, content):
    if location.get() is not value:
        location.set(value)
    if content is not None and not _same_content(value, content):
        if type(value) is list:
            value[:] = content
        elif type(value) is dict:
            value.clear()
            value.update(content)


class GraderSupport:
    """Trusted baseline of the kernel's machinery and the pre/post/unstash operations on it."""

    def __init__(self, preimports=(), protected_modules=(), checks=None, checker_name=None):
        self.failures = []
        from IPython import get_ipython

        self.ip = get_ipython()
        self._preimport(preimports)
        # The comparison checker (kernel_checks.py) snapshots the classes that exist now, before
        # any student code; its objects, classes and module are guarded like the rest.
        self.checker = self.transformer = None
        extras = []
        if checks is not None:
            self.checker, self.transformer = checks.install(self.ip, checker_name)
            extras = [self.checker, self.transformer, self.transformer.rewriter]
        self._checks = (vars(checks), dict(vars(checks))) if checks is not None else None
        self._locations = self._collect_locations()
        self._baseline = [(loc, loc.get()) for loc in self._locations]
        self._baseline = [(loc, value, _content(value)) for loc, value in self._baseline]
        self._classes = self._collect_classes(extras)
        self._class_base = {cls: dict(vars(cls)) for cls in self._classes}
        self._instances = self._collect_instances()
        # The checker's own state (every attribute, data too) is put back before each protected cell.
        self._extras_base = [(obj, dict(vars(obj))) for obj in extras]
        self._instance_base = {id(obj): (obj, dict(vars(obj))) for obj in self._instances}
        self._builtins_base = dict(vars(_builtins))
        self._module_roots = {name.split(".")[0] for name in preimports} | set(protected_modules)
        self._modules_base = {}
        self._snapshot_new_modules()
        self._trusted_names = {checker_name: self.checker} if checks is not None else {}
        self.restored = []
        self._stash = None
        self._subst = None
        self._rng = None

    # ---- setup -------------------------------------------------------------------------------

    def _preimport(self, names):
        """Import the modules the instructor's cells use before a student file can shadow them."""
        saved = list(_sys.path)
        try:
            import os

            cwd = os.getcwd()
            _sys.path[:] = [p for p in _sys.path if p not in ("", ".", cwd)]
            for name in names:
                try:
                    __import__(name)
                except BaseException as e:  # a missing module is the notebook's problem, not ours
                    self.failures.append(f"preimport {name}: {type(e).__name__}")
        finally:
            _sys.path[:] = saved

    def _collect_locations(self):
        ip = self.ip
        locs = []
        for name in (
            "ast_transformers",
            "input_transformers_cleanup",
            "input_transformers_post",
            "input_transformer_manager",
            "custom_exceptions",
            "CustomTB",
            "displayhook",
            "display_pub",
            "display_formatter",
            "display_trap",
            "compile",
            "events",
            "InteractiveTB",
            "SyntaxTB",
            "ast_node_interactivity",
            "autoawait",
            "loop_runner",
            "builtin_trap",
        ):
            if hasattr(ip, name):
                locs.append(_attr_location(ip, name, f"shell.{name}"))
        locs.append(_item_location(ip.user_ns, "__builtins__", "user_ns['__builtins__']"))
        if getattr(ip, "display_trap", None) is not None:
            locs.append(_attr_location(ip.display_trap, "hook", "shell.display_trap.hook"))
        callbacks = getattr(getattr(ip, "events", None), "callbacks", None)
        if isinstance(callbacks, dict):
            for event in list(callbacks):
                locs.append(_item_location(callbacks, event, f"shell.events[{event!r}]"))
        formatter = getattr(ip, "display_formatter", None)
        formatters = getattr(formatter, "formatters", None)
        if isinstance(formatters, dict):
            locs.append(_attr_location(formatter, "formatters", "shell.display_formatter.formatters"))
            for mime in list(formatters):
                label = f"formatter[{mime!r}]"
                locs.append(_item_location(formatters, mime, label))
                fmt = formatters[mime]
                trait_names = getattr(fmt, "trait_names", None)
                names = set(trait_names()) if callable(trait_names) else set()
                names |= {"type_printers", "deferred_printers", "singleton_printers"}
                for attr in sorted(names - {"parent", "config", "log"}):
                    if hasattr(fmt, attr):
                        locs.append(_attr_location(fmt, attr, f"{label}.{attr}"))
        for name in ("excepthook", "displayhook", "stdout", "stderr", "stdin"):
            locs.append(_attr_location(_sys, name, f"sys.{name}"))
        return locs

    def _collect_instances(self):
        ip = self.ip
        objs = [ip]
        # Not display_trap: it rebinds `old_hook` around every execution (its `hook` is guarded).
        for name in (
            "displayhook",
            "display_pub",
            "display_formatter",
            "compile",
            "events",
            "input_transformer_manager",
            "InteractiveTB",
            "SyntaxTB",
            "kernel",
        ):
            obj = getattr(ip, name, None)
            if obj is not None:
                objs.append(obj)
        formatters = getattr(getattr(ip, "display_formatter", None), "formatters", None) or {}
        objs.extend(formatters.values())
        kernel = getattr(ip, "kernel", None)
        for name in ("session", "iopub_socket", "shell_stream"):
            obj = getattr(kernel, name, None)
            if obj is not None:
                objs.append(obj)
        return [o for o in objs if hasattr(o, "__dict__")]

    def _collect_classes(self, extras=()):
        classes = []
        seen = set()
        for obj in [*self._collect_instances(), *extras]:
            for cls in type(obj).__mro__:
                if cls is not object and id(cls) not in seen and "__dict__" in dir(cls):
                    seen.add(id(cls))
                    classes.append(cls)
        try:
            from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult

            for cls in (ExecutionResult, ExecutionInfo):
                if id(cls) not in seen:
                    seen.add(id(cls))
                    classes.append(cls)
        except ImportError:
            pass
        return classes

    # ---- the operations the grader calls -----------------------------------------------------

    def _snapshot_new_modules(self):
        """Baseline protected modules not seen before (packages import submodules lazily)."""
        for name, module in list(_sys.modules.items()):
            if name in self._modules_base or module is None:
                continue
            if name.split(".")[0] in self._module_roots:
                with contextlib.suppress(TypeError):
                    self._modules_base[name] = (module, dict(vars(module)))

    def checkpoint(self, names):
        """Trust the current value of names an instructor cell just bound (modules and routines).

        Also baselines protected modules the instructor cell imported, and tells the comparison
        checker the classes it defined.
        """
        self._snapshot_new_modules()
        ns = self.ip.user_ns
        classes = []
        for name in names:
            value = ns.get(name, _MISSING)
            if value is not _MISSING and _is_routine(value):
                self._trusted_names[name] = value
            if isinstance(value, type):
                classes.append(value)
        if classes and self.checker is not None:
            self._trust_classes(classes)
        return "ok"

    def _trust_classes(self, classes):
        """Classes an instructor cell defined: their own comparisons are trusted (and stay so)."""
        self.checker.trust(classes)
        for obj, base in self._extras_base:
            if obj is self.checker:
                base["_instructor"] = self.checker._instructor
                base["_instructor_keep"] = self.checker._instructor_keep

    def pre(self, nonce, substitute=(), label=None, keep_rng=True):
        """Install the trusted machinery (stashing the student's once per group); maybe substitute.

        Then arm the comparison checker for the cell about to run (`label`: its grade id, which
        the fakes it notices are reported under). Returns `ok:<nonce>:<what was restored>` so the
        grader can note which pieces of the kernel had been changed before a protected cell.
        """
        self.failures = []
        self.restored = []
        if self._stash is None:
            self._stash = self._swap_in_trusted()
        else:
            self._swap_in_trusted()
        if substitute:
            self._substitute(substitute, keep_rng)
        if self.checker is not None:
            self.checker.label = label
            self.transformer.active = True
        return self._report(nonce)

    def post(self, nonce):
        """Undo a mutation run: give the answers their real values back (and the random state)."""
        self.failures = []
        self.restored = []
        if self._subst is not None:
            ns = self.ip.user_ns
            for name, value in self._subst.items():
                self._guarded(_item_location(ns, name).set, value)
            self._subst = None
        if self._rng is not None:
            self._restore_rng(self._rng)
            self._rng = None
        return self._report(nonce)

    def unstash(self, nonce):
        """Reinstate the student's machinery after a protected group."""
        self.failures = []
        self.restored = []
        if self.transformer is not None:
            self.transformer.active = False
        if self._stash is not None:
            for apply in reversed(self._stash):
                self._guarded(apply)
            self._stash = None
        return self._report(nonce)

    # ---- internals ---------------------------------------------------------------------------

    def _report(self, nonce):
        """The step's answer; with the fakes the checker noticed since the last one (once each)."""
        import json

        report = {"restored": self.restored[:50], "failures": self.failures[:10]}
        if self.checker is not None:
            report["fakes"] = self.checker.take_detected()[:20]
            report["failures"] += self.transformer.failures[:5]
            self.transformer.failures.clear()
        return "ok:" + nonce + ":" + json.dumps(report)

    def _guarded(self, func, *args):
        try:
            func(*args)
        except BaseException as e:  # keep going; the grader is told how many failed
            self.failures.append(f"{type(e).__name__}: {e}")

    def _swap_in_trusted(self):
        """Put back every guarded value; return the undo actions that restore what was there."""
        self.restored = []
        undo = []
        if _sys.gettrace() is not None or _threading.gettrace() is not None:
            trace, thread_trace = _sys.gettrace(), _threading.gettrace()
            undo.append(lambda: (_sys.settrace(trace), _threading.settrace(thread_trace)))
            self.restored.append("sys.settrace")
            _sys.settrace(None)
            _threading.settrace(None)
        if _sys.getprofile() is not None or _threading.getprofile() is not None:
            prof, thread_prof = _sys.getprofile(), _threading.getprofile()
            undo.append(lambda: (_sys.setprofile(prof), _threading.setprofile(thread_prof)))
            self.restored.append("sys.setprofile")
            _sys.setprofile(None)
            _threading.setprofile(None)

        for loc, value, content in self._baseline:
            current = loc.get()
            if current is value and _same_content(current, content):
                continue
            cur_content = _content(current)
            undo.append(lambda loc=loc, v=current, c=cur_content: _put(loc, v, c))
            self.restored.append(loc.label)
            self._guarded(_put, loc, value, content)

        # Classes and instances: a routine added later is a method override, so it goes too.
        for cls, base in self._class_base.items():
            undo.extend(self._restore_namespace(vars(cls), base, _label(cls), owner=cls, new_keys=True))
        for obj, base in self._instance_base.values():
            undo.extend(self._restore_namespace(vars(obj), base, _label(obj), new_keys=True))
        undo.extend(
            self._restore_namespace(vars(_builtins), self._builtins_base, "builtins", routines_only=False)
        )
        mods = _sys.modules
        for name, (module, base) in self._modules_base.items():
            if mods.get(name) is not module:
                loc = _item_location(mods, name, f"sys.modules[{name!r}]")
                undo.append(lambda loc=loc, v=mods.get(name, _MISSING): loc.set(v))
                self.restored.append(loc.label)
                self._guarded(loc.set, module)
            undo.extend(self._restore_namespace(vars(module), base, name))
        if self._checks is not None:
            current, base = self._checks
            undo.extend(self._restore_namespace(current, base, "grader checks", routines_only=False))
            for obj, base in self._extras_base:
                undo.extend(
                    self._restore_namespace(
                        vars(obj),
                        base,
                        _label(obj),
                        new_keys=True,
                        routines_only=False,
                        skip=("label", "active"),
                    )
                )
            self.checker.forget()
        ns = self.ip.user_ns
        for name, value in self._trusted_names.items():
            current = ns.get(name, _MISSING)
            if current is not value:
                loc = _item_location(ns, name, f"instructor-defined name {name!r}")
                undo.append(lambda loc=loc, v=current: loc.set(v))
                self.restored.append(loc.label)
                self._guarded(loc.set, value)
        return undo

    def _restore_namespace(
        self, current, base, label, owner=None, new_keys=False, routines_only=True, skip=()
    ):
        """Restore changed or deleted entries of a namespace; `owner` (a class) is set via setattr.

        With `new_keys`, routines added since the baseline are removed as well (for modules they
        are left alone: a package gains submodule attributes as they are imported).
        """
        undo = []
        # Most entries never change: find the few that did at C speed (by identity), then look
        # closer only at those. This runs over every protected module before every test.
        get = current.get
        keys = [key for key, value in base.items() if get(key, _MISSING) is not value]
        if new_keys:
            keys.extend(current.keys() - base.keys())
        for key in keys:
            if key in _VOLATILE_BUILTINS or key in skip:
                continue
            old, new = base.get(key, _MISSING), current.get(key, _MISSING)
            if old is new or (routines_only and not (_is_routine(old) or _is_routine(new))):
                continue
            if owner is not None:
                loc = _attr_location(owner, key, f"{label}.{key}")
            else:
                loc = _item_location(current, key, f"{label}.{key}")
            undo.append(lambda loc=loc, v=new: loc.set(v))
            self.restored.append(loc.label)
            self._guarded(loc.set, old)
        return undo

    def _substitute(self, names, keep_rng):
        ns = self.ip.user_ns
        self._subst = {name: ns.get(name, _MISSING) for name in names}
        for name in names:
            ns[name] = _WrongAnswer()
        if keep_rng:
            self._rng = self._save_rng()

    def _save_rng(self):
        state = {"random": _random.getstate()}
        np = _sys.modules.get("numpy")
        if np is not None:
            with contextlib.suppress(BaseException):
                state["numpy"] = np.random.get_state()
        return state

    def _restore_rng(self, state):
        self._guarded(_random.setstate, state["random"])
        np = _sys.modules.get("numpy")
        if np is not None and "numpy" in state:
            self._guarded(np.random.set_state, state["numpy"])


def _install(registry_name, preimports, protected_modules, nonce, checks=None):
    checker_name = "_grader_checks_" + registry_name.rsplit("_", 1)[-1]
    support = GraderSupport(preimports, protected_modules, checks, checker_name)
    _sys.modules[registry_name] = support
    return support._report(nonce)
