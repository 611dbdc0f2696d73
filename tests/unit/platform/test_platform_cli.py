"""Every command answers --help without touching services."""

import subprocess
import sys

from click.testing import CliRunner

from sightline.cli import main


def test_root_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "stack" in result.output


def test_every_registered_command_has_help():
    runner = CliRunner()
    listed = main.list_commands(None)  # type: ignore[arg-type]
    assert "stack" in listed
    for name in listed:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"'sightline {name} --help' failed: {result.output}"
        assert "Usage:" in result.output


def test_bad_settings_are_reported_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "sightline", "stack", "status"], capture_output=True, text=True,
                          env={"SIGHTLINE_SERVING_PORT": "not-a-port", "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "serving.port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_test_module_basenames_are_unique():
    """pytest's default (prepend) import mode needs unique module names across tests/."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in Path(__file__).resolve().parents[2].rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
