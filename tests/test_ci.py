""".ci/run finds or installs a Chromium for the report's browser tests, and runs make test either way."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CI_RUN = Path(__file__).resolve().parents[1] / ".ci" / "run"

# Stand-ins for the system's tools only (apt-get, make), which a test may not run for real; each logs its call.
APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$LOG"
case "$*" in *"install -y -qq $PROVIDES"*) printf '#!/bin/sh\\n' > "$BIN/$PROVIDES"; chmod +x "$BIN/$PROVIDES";;
  *install*) exit 100;; esac
"""


@pytest.mark.parametrize("provides, installs", [("chromium", ["chromium"]),
                                                ("chromium-browser", ["chromium", "chromium-browser"]),
                                                ("nothing", ["chromium", "chromium-browser"])])
def test_ci_tries_chromium_then_chromium_browser_and_tests_anyway(tmp_path, provides, installs):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("apt-get", APT_GET), ("make", '#!/bin/sh\necho "make $*" >> "$LOG"\n'),
                       ("id", "#!/bin/sh\necho 0\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    for tool in ("sh", "dirname", "chmod"):  # the PATH holds these and the stand-ins only: no chromium of this machine
        os.symlink(shutil.which(tool), bin_ / tool)
    log = tmp_path / "log"
    env = {"PATH": str(bin_), "LOG": str(log), "BIN": str(bin_), "PROVIDES": provides}
    done = subprocess.run([shutil.which("bash"), str(CI_RUN)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[-1] for c in calls if "install" in c] == installs
    assert calls[-1] == "make test"
    assert ("will skip" in done.stderr) == (provides == "nothing")
