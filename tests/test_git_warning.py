"""TO's commit comes from git: when git cannot read a checkout of its own, the run says so
instead of quietly tagging :latest."""
import os
import shutil
import subprocess
from pathlib import Path

from structlog.testing import capture_logs

from lwcontainer.config.sources import git_defaults


def test_a_checkout_git_cannot_read_is_warned_about(tmp_path):
    (tmp_path / ".git").write_text("gitdir: /nonexistent/worktree\n")  # a broken .git
    with capture_logs() as logs:
        assert git_defaults(tmp_path, dict(os.environ)) == {}
    warned = [e for e in logs if e["event"] == "git_unreadable"]
    assert len(warned) == 1 and ":latest" in warned[0]["consequence"]
    assert warned[0]["path"] == str(tmp_path.resolve())


def test_no_git_program_is_warned_about_for_a_checkout(tmp_path):
    (tmp_path / ".git").mkdir()
    with capture_logs() as logs:
        assert git_defaults(tmp_path, {"PATH": str(tmp_path / "nothing")}) == {}
    assert [e["reason"] for e in logs if e["event"] == "git_unreadable"] == [
        "git is not installed"]


def test_a_directory_that_is_no_checkout_is_quiet(tmp_path):
    with capture_logs() as logs:
        assert git_defaults(tmp_path, dict(os.environ)) == {}
    assert not [e for e in logs if e["event"] == "git_unreadable"]


def test_a_checkout_owned_by_someone_else_still_gives_its_commit(tmp_path):
    """git's dubious-ownership refusal does not apply to lwcontainer's own reads."""
    project = tmp_path / "p"
    project.mkdir()
    git = shutil.which("git")
    subprocess.run([git, "init", "-q", str(project)], check=True)
    subprocess.run([git, "-C", str(project), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    if os.geteuid() == 0:
        for path in [project, *project.rglob("*")]:
            os.lchown(path, 4321, 4321)
    with capture_logs() as logs:
        found = git_defaults(Path(project), dict(os.environ))
    assert len(found.get("CI_COMMIT_SHORT_SHA", "")) == 8
    assert not [e for e in logs if e["event"] == "git_unreadable"]


def test_a_ci_job_that_names_its_commit_never_asks_git(tmp_path):
    """GitLab gives CI_COMMIT_SHA: a job image without git is no reason for a warning."""
    from lwcontainer.config.sources import gather
    (tmp_path / ".git").mkdir()
    with capture_logs() as logs:
        merged = gather({"PATH": str(tmp_path / "nothing"), "CI_COMMIT_SHA": "ab" * 20,
                         "CI_COMMIT_SHORT_SHA": "abababab"}, {}, cwd=tmp_path)
    assert merged["CI_COMMIT_SHORT_SHA"] == "abababab"
    assert not [e for e in logs if e["event"] == "git_unreadable"]
