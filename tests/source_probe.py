"""A notebook answer that hunts for the instructor's source from inside the kernel, and what it hunts for.

`PROBE` is the code of an answer cell. It looks for the source's marker strings (which it spells
only at run time, so its own text holds none of them) wherever the kernel could reach:

- paths: the job directory where the service stages the source (`/job/source`, `/job`), its own
  working directory and the writable places (/tmp, /var/tmp, /dev/shm), listed and read;
- every other process in its pid namespace (the grader, the kernel launcher, a sandbox's init):
  command line, environment, open descriptors (read as files and listed as directories), memory
  (`/proc/<pid>/mem` along `maps`, and `process_vm_readv`), root and working directory, and
  `ptrace(PTRACE_ATTACH)`;
- its own open descriptors and `/proc/self/mountinfo`.

It prints one JSON line: where a marker was `found`, and controls proving each technique works
where it is allowed: the control marker is in a file of the submission (found by the file scan) and
in the probe's own memory (found by the memory scan of itself).
"""

from __future__ import annotations

import json
from typing import Any

# Spelled so that neither this file nor its bytecode holds a marker (a "+" of literals would be folded):
# the probe walks /tmp, where a checkout of this repository may live.
SOLUTION_MARK = "-".join(("solution", "mark", "8d1f"))
HIDDEN_MARK = "-".join(("hidden", "mark", "77a2"))
CONTROL_FILE = "control.txt"
CONTROL_MARK = "control-mark-5c3e"

PROBE = r"""
import ctypes, json, os
_marks = ['solution-' + 'mark-8d1f', 'hidden-' + 'mark-77a2']
_control = 'control-' + 'mark-5c3e'
_found, _controls, _seen = [], [], {}

def _check(where, data):
    if isinstance(data, str):
        data = data.encode(errors='ignore')
    for mark in _marks:
        if mark.encode() in data:
            _found.append(where)
    if _control.encode() in data:
        _controls.append(where)

def _read(path, limit=1 << 23):
    # Non-blocking: a descriptor may be a pipe with nothing in it.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b''
    chunks, size = [], 0
    try:
        while size < limit:
            try:
                chunk = os.read(fd, min(1 << 20, limit - size))
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b''.join(chunks)

def _listing(where, path):
    try:
        _check(where, ' '.join(os.listdir(path)))
    except OSError:
        pass

for path in ('/job/source/tiny.ipynb', '/job/source', '/job', '/job/output'):
    _check(path, _read(path))
    _listing('ls ' + path, path)
for top in ('/job', '/tmp', '/var/tmp', '/dev/shm', os.getcwd()):
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                _check(path, _read(path))

def _scan_memory(pid, label, marks=True):
    try:
        maps = open(f'/proc/{pid}/maps').read().splitlines()
        mem = open(f'/proc/{pid}/mem', 'rb')
    except OSError as e:
        return type(e).__name__
    read = 0
    with mem:
        for line in maps:
            fields = line.split()
            if 'r' not in fields[1] or (len(fields) > 5 and fields[5].startswith('[v')):
                continue
            start, end = (int(x, 16) for x in fields[0].split('-'))
            try:
                mem.seek(start)
                chunk = mem.read(min(end - start, 1 << 26))
            except (OSError, ValueError, OverflowError):
                continue
            read += len(chunk)
            if marks:
                _check(label, chunk)
            elif _control.encode() in chunk:
                _controls.append(label)
    return f'read {read}'

class _IOVec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]

_libc = ctypes.CDLL(None, use_errno=True)
_me = os.getpid()
for entry in os.listdir('/proc'):
    if not entry.isdigit() or int(entry) == _me:
        continue
    pid = int(entry)
    base = f'/proc/{pid}'
    report = _seen.setdefault(pid, {})
    cmdline = _read(base + '/cmdline')
    report['cmdline'] = cmdline.replace(b'\0', b' ').decode(errors='replace')[:120]
    _check(f'{pid} cmdline', cmdline)
    _check(f'{pid} environ', _read(base + '/environ'))
    try:
        fds = os.listdir(base + '/fd')
        report['fds'] = len(fds)
    except OSError as e:
        fds, report['fds'] = [], type(e).__name__
    for fd in fds:
        _check(f'{pid} fd {fd}', _read(f'{base}/fd/{fd}'))
        _listing(f'{pid} ls fd {fd}', f'{base}/fd/{fd}')
    for sub in ('root/job/source', 'root/job', 'cwd', 'root/tmp'):
        _listing(f'{pid} ls {sub}', f'{base}/{sub}')
    report['mem'] = _scan_memory(pid, f'{pid} mem')
    buffer = ctypes.create_string_buffer(1 << 16)
    local, remote = _IOVec(ctypes.addressof(buffer), 1 << 16), _IOVec(0x400000, 1 << 16)
    got = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    report['process_vm_readv'] = got if got < 0 else 'read'
    if _libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
        report['ptrace'] = 'attached'
        os.waitpid(pid, 0)
        _libc.ptrace(17, pid, 0, 0)  # PTRACE_DETACH
    else:
        report['ptrace'] = os.strerror(ctypes.get_errno())
for fd in os.listdir('/proc/self/fd'):
    _check(f'own fd {fd}', _read(f'/proc/self/fd/{fd}'))
    _listing(f'own ls fd {fd}', f'/proc/self/fd/{fd}')
_mountinfo = _read('/proc/self/mountinfo').decode(errors='replace')
_check('mountinfo', _mountinfo)
# Its own memory holds the marks it looks for (it spelled them): only the control counts there.
_own_memory = _scan_memory('self', 'own mem', marks=False)
print('PROBE' + json.dumps({'found': sorted(set(_found)), 'controls': sorted(set(_controls)),
                            'own_memory': _own_memory, 'processes': _seen, 'mounts': _mountinfo[-3000:]}))
"""


def source_notebook(tiny_source: dict[str, Any]) -> dict[str, Any]:
    """The tiny assignment with the markers in its solution and in its hidden test."""
    nb = json.loads(json.dumps(tiny_source))
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if "### BEGIN SOLUTION" in text:
            text = text.replace("### BEGIN SOLUTION", f"### BEGIN SOLUTION\n    # {SOLUTION_MARK}")
        if "### BEGIN HIDDEN TESTS" in text:
            text = text.replace("### BEGIN HIDDEN TESTS", f"### BEGIN HIDDEN TESTS\n# {HIDDEN_MARK}")
        cell["source"] = text
    return nb


def probing_submission(tiny_submission: dict[str, Any]) -> dict[str, Any]:
    """A correct submission whose answer cell runs the probe first."""
    nb = json.loads(json.dumps(tiny_submission))
    nb["cells"][1]["source"] = PROBE + "\ndef double(x):\n    return x + x\n"
    return nb


def probe_report(graded_notebook: dict[str, Any]) -> dict[str, Any]:
    """The probe's JSON line from the graded notebook (the answer cell runs before any hidden test)."""
    for cell in graded_notebook["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) if output.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith("PROBE{"):
                    return json.loads(line[5:])
    raise AssertionError("the probe printed no report")
