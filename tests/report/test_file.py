"""Writing the report file: a default name is never taken through a planted symlink, ``--output`` replaces a
regular file atomically and refuses anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginx_canary.errors import BadInputError, CanaryError
from nginx_canary.report.file import MAX_TRIES, write_report_file


def test_default_name_taken_by_a_planted_symlink_gets_the_next_free_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / "nginx-canary-report-app-20260101-000000.html"
    planted.symlink_to(victim)
    (tmp_path / "nginx-canary-report-app-20260101-000000-2.html").symlink_to(tmp_path / "dangling")
    written = write_report_file("<p>page</p>", str(planted), chosen_by_user=False)
    assert written == str(tmp_path / "nginx-canary-report-app-20260101-000000-3.html")
    assert Path(written).read_text() == "<p>page</p>" and not Path(written).is_symlink()
    assert victim.read_text() == "precious\n" and not (tmp_path / "dangling").exists()


def test_no_free_default_name_is_a_one_line_error(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("old")
    for n in range(2, MAX_TRIES + 1):
        (tmp_path / f"r-{n}.html").write_text("old")
    with pytest.raises(CanaryError, match="exist \\(give --output\\)$"):
        write_report_file("new", str(path), chosen_by_user=False)
    assert path.read_text() == "old"


def test_output_replaces_a_regular_file_keeping_its_mode_and_refuses_a_symlink(tmp_path):
    existing = tmp_path / "report.html"
    existing.write_text("old")
    existing.chmod(0o640)
    assert write_report_file("new", str(existing), chosen_by_user=True) == str(existing)
    assert existing.read_text() == "new" and existing.stat().st_mode & 0o777 == 0o640
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    with pytest.raises(BadInputError, match="is a symbolic link"):
        write_report_file("new", str(link), chosen_by_user=True)
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "report.html", "victim"]  # no temp left
