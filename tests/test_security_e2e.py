"""Security findings that need a real build: what the build script can plant in the checkout."""
from __future__ import annotations


def test_links_the_build_plants_at_the_report_are_never_written_through(job, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    build = job.project / ".gitlab" / "build.sh"
    build.write_text(build.read_text() + f"\nln -sf {victim} $MY_BUILD_DIR/lwcontainer.env\n"
                     f"ln -sf {victim} $MY_BUILD_DIR/.lwcontainer.env.tmp\n")
    result = job.run()
    assert result.returncode == 0, result.stderr[-3000:]
    assert victim.read_text() == "precious\n"
    report = job.project / "lwcontainer.env"
    assert report.is_file() and not report.is_symlink()
    assert "LWC_IMAGE_DIGEST=" in report.read_text()
    assert result.events("report_link_replaced")
