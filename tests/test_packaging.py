"""The built wheel: it holds every module of jaxrej/ and every config of configs/ (as
jaxrej.configs), and from the unpacked wheel alone -- outside the repository, with the repository
off the path -- `jaxrej --help` and `jaxrej demo --help` run and the demo finds its configs and
turns them into the options it runs with (`jaxrej.commands.demo.options`)."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],  # fmt: skip
        capture_output=True, text=True, cwd=str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("jaxrej-*.whl")
    return path


def test_wheel_holds_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
            for d, _, files in os.walk(ROOT / "jaxrej") for f in files if f.endswith(".py")}  # fmt: skip
    assert want and not want - names, sorted(want - names)
    configs = {f"jaxrej/configs/{p.name}" for p in (ROOT / "configs").glob("*.py")}
    assert "jaxrej/configs/digits_sbgc.py" in configs and not configs - names


def test_unpacked_wheel_runs_help_and_loads_the_demo_configs(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, os\n"
        f"sys.path[:0] = [{str(site)!r}]\n"
        f"sys.path = [p for p in sys.path if os.path.realpath(p or '.') != {str(ROOT)!r}]\n"
        "import jaxrej, jaxrej.cli\n"
        f"assert jaxrej.__file__.startswith({str(site)!r}), jaxrej.__file__\n"
        "import argparse\n"
        "from jaxrej.commands import demo\n"
        "d = demo.configs_dir(None)\n"
        "assert d.startswith(sys.path[0]), d\n"
        "p = argparse.ArgumentParser()\n"
        "demo.add_arguments(p)\n"
        "kw = demo.options(p.parse_args([]), d)  # what `jaxrej demo` hands jaxrej.demo.run_demo\n"
        "assert kw['sbgc'].data.dataset == 'digits', kw['sbgc']\n"
        "assert kw['heads']['data']['dataset'] == 'digits', kw['heads']\n"
        "import jaxrej.demo\n"
        "assert jaxrej.demo.__file__.startswith(sys.path[0]), jaxrej.demo.__file__\n"
        "for argv in (['--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        jaxrej.cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: jaxrej" in proc.stdout and "usage: jaxrej demo" in proc.stdout
