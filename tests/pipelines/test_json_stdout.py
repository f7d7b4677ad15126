"""``stdout_to_stderr``: what libraries print, from Python or C, leaves standard output to the
JSON a ``--json`` command prints after."""

from __future__ import annotations

import os
import sys

from microturn.cli.json_stdout import stdout_to_stderr


def test_python_and_file_descriptor_writes_go_to_stderr_inside_and_stdout_comes_back(capfd):
    with stdout_to_stderr():
        print("from print")
        sys.stdout.write("from sys.stdout\n")
        os.write(1, b"from fd 1\n")  # as a C extension writes
    print('{"ok": 1}')
    out, err = capfd.readouterr()
    assert out == '{"ok": 1}\n'
    assert "from print" in err and "from sys.stdout" in err and "from fd 1" in err


def test_disabled_it_changes_nothing(capfd):
    with stdout_to_stderr(False):
        print("table")
    assert capfd.readouterr().out == "table\n"


def test_stdout_comes_back_after_an_error(capfd):
    try:
        with stdout_to_stderr():
            raise ValueError("bad")
    except ValueError:
        pass
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "after\n"
