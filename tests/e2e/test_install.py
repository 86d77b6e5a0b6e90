"""The runtime image without a Docker engine: a fresh venv gets exactly what the
Dockerfile installs (its COPY sources, its one `pip install`, non-editable), and
opsbook is then used from an empty directory, as the image's user would.

Slow: a fresh venv, one to two minutes on an idle machine (5 on a loaded one), so
not part of `make test`: run it with `make check-install` after changing
pyproject.toml, requirements.lock or the Dockerfile (tests/test_packaging.py,
which is in `make test`, checks the same files statically). The Dockerfile's
--no-cache-dir is dropped (pip's cache serves the wheels) and --no-compile
added (no .pyc for the ~150 packages); the rest is its exact command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from opsbook.inventory import known_systems
from tests.test_packaging import ROOT, dockerfile_copies, dockerfile_pip_installs, lock_pins, runtime_packages

pytestmark = pytest.mark.skipif(os.environ.get("OPSBOOK_E2E_INSTALL") != "1",
                                reason="a fresh-venv install of the image's runtime: `make check-install` runs it")


def run(argv: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv} exited {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(bin dir, empty working dir, env) of a venv holding what the Dockerfile installs."""
    base = tmp_path_factory.mktemp("image")
    src, work, venv = base / "opt-opsbook", base / "empty", base / "venv"
    src.mkdir(), work.mkdir()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for s in dockerfile_copies(dockerfile):
        if (ROOT / s).is_dir():
            shutil.copytree(ROOT / s, src / s, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / s, src / s)
    env = {k: v for k, v in os.environ.items() if k not in ("OPSBOOK_SYSTEMS_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PREFECT_HOME"] = str(base / "prefect-home")
    run([sys.executable, "-m", "venv", str(venv)], base, env)
    [install] = dockerfile_pip_installs(dockerfile)
    run([str(venv / "bin" / "pip"), *[a for a in install[1:] if a != "--no-cache-dir"], "--no-compile"], src, env, timeout=1500)
    return venv / "bin", work, env


def py(image, code: str, extra_env: dict | None = None) -> str:
    bin_dir, work, env = image
    return run([str(bin_dir / "python"), "-c", code], work, {**env, **(extra_env or {})}).stdout


def test_the_image_holds_exactly_locked_versions(image):
    bin_dir, work, env = image
    run([str(bin_dir / "pip"), "check"], work, env)
    frozen = run([str(bin_dir / "pip"), "freeze", "--exclude", "opsbook"], work, env).stdout.split()
    installed = {canonicalize_name(n): v for n, _, v in (l.partition("==") for l in frozen)}
    pins = lock_pins()
    assert {n: (v, pins.get(n)) for n, v in installed.items() if pins.get(n) != v} == {}
    assert {"prefect-aws", "prefect-kubernetes", "aiobotocore", "boto3"} <= set(installed)


def test_the_image_has_no_moto_and_no_sandbox(image):
    found = json.loads(py(image, "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in "
                                 "('moto', 'sandbox', 'bench', 'tests', 'tasks', 'systems', 'prefect_aws', 'prefect_kubernetes')}))"))
    assert found == {"moto": False, "sandbox": False, "bench": False, "tests": False,
                     "tasks": True, "systems": True, "prefect_aws": True, "prefect_kubernetes": True}


def test_every_runtime_module_imports_without_moto_or_the_sandbox(image):
    code = ("import importlib, pkgutil, sys, json\n"
            f"names = [m.name for top in {runtime_packages()!r} if top != 'systems'\n"
            "         for m in pkgutil.walk_packages(importlib.import_module(top).__path__, top + '.')]\n"
            "for n in names: importlib.import_module(n)\n"
            "print(json.dumps([len(names), sorted(k for k in sys.modules if k.split('.')[0] in ('moto', 'sandbox', 'bench'))]))")
    count, loaded = json.loads(py(image, code))
    assert count > 40 and loaded == []


def test_opsbook_list_policy_and_deployments_work_installed(image):
    from deployments.schedules import deployment_specs

    bin_dir, work, env = image
    listing = run([str(bin_dir / "opsbook"), "list"], work, env).stdout.split("\nsystems:\n")[1]
    assert [line.split()[0] for line in listing.strip().splitlines()] == known_systems()
    policy = json.loads(run([str(bin_dir / "opsbook"), "policy", "daily-health"], work, env).stdout)
    assert policy["Statement"] and policy["Statement"][0]["Action"]
    count = py(image, "from deployments.schedules import deployment_specs; print(len(deployment_specs()))")
    assert int(count) == len(deployment_specs())


def test_the_inventory_rule_holds_installed(image, tmp_path):
    code = ("from tasks.inventory import SYSTEMS_DIR, InventoryError, known_systems, load_system\n"
            "try: load_system('no-such-system')\n"
            "except InventoryError as e: print(SYSTEMS_DIR); print(known_systems()); print(e)\n")
    where, names, error = py(image, code).splitlines()
    assert "site-packages" in where and Path(where).name == "systems", where
    assert f"looked in {where} (next to the opsbook package; OPSBOOK_SYSTEMS_DIR is not set)" in error
    assert names == repr(known_systems())
    (tmp_path / "todo-app.yaml").write_text((ROOT / "systems" / "todo-app.yaml").read_text())
    where, names, error = py(image, code, {"OPSBOOK_SYSTEMS_DIR": str(tmp_path)}).splitlines()
    assert (where, names) == (str(tmp_path), "['todo-app']")
    assert f"looked in {tmp_path} (set by OPSBOOK_SYSTEMS_DIR)" in error


def test_prefect_yaml_job_variables_are_ones_the_locked_workers_accept(image):
    code = ("import json\n"
            "from prefect_aws.workers.ecs_worker import ECSVariables\n"
            "from prefect_kubernetes.worker import KubernetesWorkerVariables\n"
            "from deployments.production import ECS_VARIABLES, KUBERNETES_VARIABLES\n"
            "print(json.dumps([sorted(ECS_VARIABLES - set(ECSVariables.model_fields)),\n"
            "                  sorted(KUBERNETES_VARIABLES - set(KubernetesWorkerVariables.model_fields))]))")
    assert json.loads(py(image, code)) == [[], []]
