"""A stand-in for Slicer's ``PythonSlicer``, for tests: ``python launcher.py ARGS...``.

Like the real one (a CTK application launcher), it sets the environment and starts
the real interpreter as a CHILD process with ``ARGS``, waits, and exits with the
child's status. Killing this launcher alone leaves the child running, as killing
the real launcher does: a Cancel has to end the whole process tree.

The child sees ``slicer`` as PythonSlicer gives it: only the kits of Slicer's
``Base/Python`` (see ``site/slicer/__init__.py``), and the modules' own wrappings
(``vtkSlicer<Name>Module<Part>Python``) as separate top-level modules, as on the
launcher's ``qt-loadable-modules`` path. Every class is slicer-core's real one.
"""

import os
import subprocess
import sys
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"


def child_environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SITE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def main(argv: list[str]) -> int:
    child = subprocess.Popen([sys.executable] + argv, env=child_environment())
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
