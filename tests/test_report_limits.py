"""GitLab refuses a dotenv report of 5 KiB or more ("must be less than 5 kilobytes")."""
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lwcontainer.output.report import GITLAB_MAX_BYTES, check_gitlab_limits


@pytest.mark.parametrize("size, warned", [(GITLAB_MAX_BYTES - 1, False),
                                          (GITLAB_MAX_BYTES, True)])
def test_the_dotenv_size_limit_is_strict(size, warned):
    text = "A=" + "x" * (size - 3) + "\n"
    assert len(text.encode()) == size
    with capture_logs() as logs:
        check_gitlab_limits(Path("lwcontainer.env"), text)
    assert any(e["event"] == "report_over_gitlab_limits" for e in logs) is warned
