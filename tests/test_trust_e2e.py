"""Issue 17 on the real test bed: what a build (or a killed run) leaves cannot steer the next."""
from __future__ import annotations

import subprocess

from test_trust import git_repository


def quick_build(job, script: str) -> None:
    """A build script of a few shell lines (no CVMFS, no push: the finding is the engine's)."""
    (job.project / ".gitlab" / "build.sh").write_text(script)


QUICK = dict(LWC_CVMFS="none", CI_REGISTRY=None, LWC_PUSH="never")


def test_m7_the_build_cannot_write_the_checkouts_git(job):
    git_repository(job.project)
    config = job.project / ".git" / "config"
    config.write_text(config.read_text().replace("\tfsmonitor", "\t#fsmonitor"))
    subprocess.run(["chmod", "-R", "a+rwX", str(job.project / ".git")], check=True)  # umask 0
    before = config.read_text()
    marker = job.root / "monitor-ran"
    quick_build(job, f"""printf '[core]\\n\\tfsmonitor = touch {marker} #\\n' >> .git/config \\
  && echo GIT-WRITTEN || echo GIT-READ-ONLY
touch .git/hooks/planted 2>/dev/null && echo HOOK-WRITTEN || echo HOOK-READ-ONLY
echo built > artifact.txt
""")
    result = job.run(**QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GIT-READ-ONLY" in result.stdout and "HOOK-READ-ONLY" in result.stdout
    assert (job.project / "artifact.txt").read_text() == "built\n"  # the rest stays writable
    assert config.read_text() == before
    # The user's own git afterwards runs nothing the build planted.
    subprocess.run(["git", "-c", "safe.directory=*", "-C", str(job.project), "status"],
                   capture_output=True, check=True)
    assert not marker.exists()
