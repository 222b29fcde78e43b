"""mail.text is pure: importing every module of it loads no Twisted (the import-linter contract
says the same of direct imports; this also catches one made through another module)."""

from __future__ import annotations

import subprocess
import sys


def test_mail_text_imports_no_twisted():
    code = ("import pkgutil, importlib, sys, mailsocketd.mail.text as p\n"
            "for m in pkgutil.iter_modules(p.__path__):\n"
            "    importlib.import_module(f'{p.__name__}.{m.name}')\n"
            "t = sorted(m for m in sys.modules if m.split('.')[0] == 'twisted')\n"
            "print(t)\n"
            "sys.exit(1 if t else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
