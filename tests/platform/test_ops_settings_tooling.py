"""The set-up script asks for Python 3.11 before installing anything (on 3.10 the install succeeded,
then every start died on logging.getLevelNamesMapping), and a plain `make` lists the targets
instead of building a draft model."""
import shutil
import subprocess
import sys

import pytest

from tests.platform.test_settings_env import ROOT


def test_setup_refuses_a_python_older_than_3_11_before_installing_anything(tmp_path):
    """Run on a copy (no .venv there): a Python that says it is 3.10, for the questions setup.sh asks it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    old = tmp_path / "python3.10"
    old.write_text(f"""#!/bin/sh
[ "$1" = "-c" ] || exit 3  # -m venv, -m pip: nothing this one is meant to reach
exec {sys.executable} -c 'import sys; sys.version_info = (3, 10, 12, "final", 0); exec(sys.argv[1])' "$2"
""")
    old.chmod(0o755)
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": str(old)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "needs Python 3.11 or newer" in done.stderr and "Python 3.10" in done.stderr, done.stderr
    assert "PYTHON=" in done.stderr  # how to name another one
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_a_plain_make_lists_the_targets_and_builds_nothing():
    dry = subprocess.run(["make", "-n"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0 and "inference shrink" not in dry.stdout, dry.stdout
    listed = subprocess.run(["make"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0
    assert [line.split()[1] for line in listed.stdout.splitlines()] == ["help", "bench", "bench-quick"], listed.stdout
