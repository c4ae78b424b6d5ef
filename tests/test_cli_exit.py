"""The `regkit` command (cli.main.console_main) ends the process without the interpreter's
teardown (cli.main._end_process): exit codes, stdout/stderr and atexit handlers must survive that."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

ENTRY = """
import atexit, sys
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("atexit ran"))
sys.argv = ["regkit", *sys.argv[2:]]
from regkit.cli.main import console_main
console_main()
"""


def _regkit(tmp_path, *args: str) -> subprocess.CompletedProcess:
    marker = tmp_path / "marker.txt"
    p = subprocess.run([sys.executable, "-c", ENTRY, str(marker), *args], capture_output=True, text=True, timeout=120)
    p.marker = marker.read_text() if marker.exists() else None  # type: ignore[attr-defined]
    return p


def test_success_prints_flushes_and_runs_exit_handlers(tmp_path):
    p = _regkit(tmp_path, "--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("regkit ") and "torch" in p.stdout
    assert p.marker == "atexit ran"


def test_usage_error_is_one_line_exit_2(tmp_path):
    p = _regkit(tmp_path, "register", "--bogus")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "--bogus" in p.stderr
    assert p.marker == "atexit ran"


def test_input_error_exit_2_names_the_file(tmp_path):
    missing = tmp_path / "nothere.nii.gz"
    p = _regkit(tmp_path, "register", str(missing), str(missing), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "nothere.nii.gz" in p.stderr and "no such file" in p.stderr
    assert not (tmp_path / "o").exists() and p.marker == "atexit ran"


def test_waits_for_a_live_non_daemon_thread(monkeypatch):
    """With another non-daemon thread alive the exit is a plain sys.exit (the interpreter then
    waits for that thread) instead of ending the process under it."""
    from regkit.cli import main as cli_main

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=False)
    worker.start()
    try:
        with pytest.raises(SystemExit) as e:
            cli_main._end_process(3)
        assert e.value.code == 3
    finally:
        stop.set()
        worker.join()
