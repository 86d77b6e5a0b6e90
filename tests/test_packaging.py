"""The runtime package, the lock and the Dockerfile, checked statically.

No Docker engine runs here: this reads the Dockerfile; tests/e2e/test_install.py
installs exactly what it installs into a fresh venv (and imports the parsers below).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_EXTRA = "production"
DEV_EXTRAS = ("test", "sandbox")
DEV_ONLY = {"sandbox", "bench", "tests", ".venv", "."}  # never in the image ("." would copy all of them)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_packages() -> list[str]:
    return pyproject()["tool"]["setuptools"]["packages"]


def lock_pins(text: str | None = None) -> dict[str, str]:
    """requirements.lock as {canonical name: version}; a line that is not NAME==VERSION is an error."""
    text = (ROOT / "requirements.lock").read_text() if text is None else text
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line.strip())
        assert m, f"requirements.lock: {line!r} is not an exact pin NAME==VERSION"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = m.group(2)
    return pins


# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_copies(text: str) -> list[str]:
    """The sources of every COPY (the last argument is the destination)."""
    return [src for word, args in dockerfile_instructions(text) if word == "COPY" for src in shlex.split(args)[:-1]]


def dockerfile_pip_installs(text: str) -> list[list[str]]:
    """Each `pip install ...` command of the RUN lines, as argv (split at && and ;)."""
    cmds = []
    for word, args in dockerfile_instructions(text):
        if word == "RUN":
            for part in re.split(r"&&|;", args):
                argv = shlex.split(part)
                if argv[:2] == ["pip", "install"] or argv[1:4] == ["-m", "pip", "install"]:
                    cmds.append(argv)
    return cmds


def _install_problems(cmds: list[list[str]], extras: set[str]) -> list[str]:
    if len(cmds) != 1:
        return [f"expected one `pip install`, found {len(cmds)}"]
    argv = cmds[0]
    problems = []
    if "requirements.lock" not in [b for a, b in zip(argv, argv[1:]) if a in ("-c", "--constraint")]:
        problems.append("pip install without `-c requirements.lock` (unpinned versions)")
    if {"-e", "--editable"} & set(argv):
        problems.append("an editable install (the image must hold a built package)")
    targets = [a for a, prev in zip(argv[2:], argv[1:]) if not a.startswith("-") and prev not in ("-c", "--constraint")]
    if targets != [f".[{RUNTIME_EXTRA}]"]:
        problems.append(f"installs {targets}, not exactly the project's runtime extra .[{RUNTIME_EXTRA}]")
    if RUNTIME_EXTRA not in extras:
        problems.append(f"pyproject.toml has no {RUNTIME_EXTRA!r} extra")
    return problems


def dockerfile_problems(text: str, packages: list[str], extras: set[str]) -> list[str]:
    """What makes a Dockerfile not the runtime image: [] when it is."""
    problems = []
    copies = set(dockerfile_copies(text))
    missing = (set(packages) | {"pyproject.toml", "requirements.lock"}) - copies
    if missing:
        problems.append(f"does not COPY {sorted(missing)}")
    if copies & DEV_ONLY:
        problems.append(f"COPYs development-only {sorted(copies & DEV_ONLY)}")
    problems += _install_problems(dockerfile_pip_installs(text), extras)
    inst = dockerfile_instructions(text)
    for word, args in inst:
        names = [kv.split("=")[0] for kv in shlex.split(args)] if word in ("ENV", "ARG") else []
        problems += [f"{word} {n}: credentials do not go into the image" for n in names if SECRET_NAME.search(n)]
    users = [i for i, (word, _) in enumerate(inst) if word == "USER"]
    if not users or inst[users[-1]][1].split(":")[0] in ("root", "0"):
        problems.append("runs as root (set a non-root USER)")
    elif users[-1] < max((i for i, (w, a) in enumerate(inst) if w == "RUN"), default=-1):
        problems.append("a RUN after the last USER runs as that user; the install must come first")
    return problems


def test_the_dockerfile_installs_the_runtime_only():
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert dockerfile_problems((ROOT / "Dockerfile").read_text(), runtime_packages(), extras) == []


BEFORE = """FROM python:3.11-slim
WORKDIR /opt/opsbook
COPY pyproject.toml requirements.lock ./
COPY opsbook ./opsbook
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY sandbox ./sandbox
COPY systems ./systems
RUN pip install --no-cache-dir -c requirements.lock . prefect-aws prefect-kubernetes
USER 65534
"""


@pytest.mark.parametrize("edit,problem", [
    (lambda t: t, "COPYs development-only ['sandbox']"),  # the image before issue 13
    (lambda t: t, "installs ['.', 'prefect-aws', 'prefect-kubernetes'], not exactly"),
    (lambda t: t.replace("COPY sandbox ./sandbox\n", "").replace(". prefect-aws prefect-kubernetes", "-e '.[production]'"),
     "an editable install"),
    (lambda t: t.replace("-c requirements.lock ", ""), "without `-c requirements.lock`"),
    (lambda t: t.replace("COPY tasks ./tasks\n", ""), "does not COPY ['tasks']"),
    (lambda t: t.replace("COPY flows ./flows\n", "COPY . .\n"), "COPYs development-only ['.'"),
    (lambda t: t.replace("USER 65534", "USER root"), "runs as root"),
    (lambda t: t.replace("USER 65534\n", ""), "runs as root"),
    (lambda t: t + "RUN pip install boto3\n", "expected one `pip install`, found 2"),
    (lambda t: t.replace("WORKDIR", "ENV AWS_SECRET_ACCESS_KEY=x\nWORKDIR"), "ENV AWS_SECRET_ACCESS_KEY: credentials"),
])
def test_the_dockerfile_check_catches(edit, problem):
    extras = set(pyproject()["project"]["optional-dependencies"])
    problems = dockerfile_problems(edit(BEFORE), runtime_packages(), extras)
    assert any(problem in p for p in problems), problems


# --- pyproject: runtime vs development ----------------------------------------------------


def test_the_runtime_packages_exclude_the_sandbox_bench_and_tests():
    cfg = pyproject()
    packages = runtime_packages()
    assert not set(packages) & DEV_ONLY, packages
    assert all((ROOT / p).is_dir() for p in packages), packages
    assert "systems" in packages and cfg["tool"]["setuptools"]["package-data"]["systems"] == ["*.yaml"]
    # package-dir "" = "." makes the editable install put the checkout root on sys.path (sandbox/, bench/ import from it)
    assert cfg["tool"]["setuptools"]["package-dir"] == {"": "."}


def test_moto_is_in_the_sandbox_extra_only():
    project = pyproject()["project"]
    names = lambda reqs: {canonicalize_name(Requirement(r).name) for r in reqs}  # noqa: E731
    assert "moto" not in names(project["dependencies"])
    assert "moto" in names(project["optional-dependencies"]["sandbox"])
    assert "moto" not in names(project["optional-dependencies"][RUNTIME_EXTRA])
    assert {"prefect-aws", "prefect-kubernetes"} <= names(project["optional-dependencies"][RUNTIME_EXTRA])


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at import time: not inside a function (lazy imports in functions are allowed)."""
    found = set()
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(n, ast.Import):
            found |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            found.add(n.module.split(".")[0])
        todo.extend(ast.iter_child_nodes(n))
    return found


def test_no_runtime_module_imports_moto_or_the_sandbox_at_import_time():
    offenders = {str(p.relative_to(ROOT)): bad for pkg in runtime_packages() for p in (ROOT / pkg).rglob("*.py")
                 if (bad := _top_level_imports(p) & {"moto", "sandbox", "bench"})}
    assert offenders == {}


def test_the_import_scan_sees_module_level_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import os\nfrom moto import mock_aws\nif True:\n    import sandbox.cli\ndef f():\n    import bench\n"
                 "class C:\n    import json\n    def m(self):\n        import flask\n")
    assert _top_level_imports(p) == {"os", "moto", "sandbox", "json"}


# --- the lock -------------------------------------------------------------------------------


def lock_problems(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """Each requirement pinned in the lock, at a version inside its range."""
    problems = []
    for r in map(Requirement, requirements):
        name = canonicalize_name(r.name)
        if name not in pins:
            problems.append(f"{name} is not pinned in requirements.lock")
        elif not r.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside pyproject's {r.specifier}")
    return problems


def test_the_lock_pins_every_declared_requirement_inside_its_range():
    project = pyproject()["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert lock_problems(reqs, lock_pins()) == []


def test_the_lock_check_catches_a_missing_or_out_of_range_pin():
    pins = lock_pins("# header\nboto3==1.44.5\nprefect==3.8.8\n")
    assert lock_problems(["prefect==3.8.8", "boto3>=1.40,<2"], pins) == []
    assert lock_problems(["prefect-aws>=0.7.12,<0.8"], pins) == ["prefect-aws is not pinned in requirements.lock"]
    assert lock_problems(["boto3<1.44"], pins) == ["boto3==1.44.5 is outside pyproject's <1.44"]
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins("prefect-aws\n")


def installed_closure(dist: str, extras: tuple[str, ...]) -> dict[str, str]:
    """{canonical name: installed version} of everything `dist[extras]` needs, in this venv, transitively."""
    out: dict[str, str] = {}
    todo = [(dist, frozenset(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, ex = todo.pop()
        if (canonicalize_name(name), ex) in seen:
            continue
        seen.add((canonicalize_name(name), ex))
        d = md.distribution(name)
        out[canonicalize_name(d.metadata["Name"])] = d.version
        for r in map(Requirement, d.requires or []):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ex | {""}):
                todo.append((r.name, frozenset(r.extras)))
    return out


def test_the_lock_holds_exactly_what_the_dev_venv_installed():
    pins = lock_pins()
    closure = installed_closure("opsbook", DEV_EXTRAS)
    closure.pop("opsbook")
    differ = {n: (v, pins.get(n)) for n, v in closure.items() if pins.get(n) != v}
    assert differ == {}, "installed vs locked; re-create the venv (make setup) or re-lock"
    assert {"moto", "flask", "pytest"} <= set(closure)  # the closure followed the extras
