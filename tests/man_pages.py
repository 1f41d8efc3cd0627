#!/usr/bin/python3
"""The man pages in docs/man/ build with scdoc, render with `man -l` without warnings, and
name every option the programs' --help texts show (refex, refex-broker, refex-agent) and
every configuration key the daemons accept (refex.conf(5)).

usage: tests/man_pages.py SOURCE_DIR BUILD_DIR"""
import os
import re
import subprocess
import sys
import tempfile

src, build = sys.argv[1], sys.argv[2]
failures = []


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


pages = {}
with tempfile.TemporaryDirectory() as tmp:
    for name in sorted(os.listdir(os.path.join(src, "docs/man"))):
        if not name.endswith(".scd"):
            continue
        text = open(os.path.join(src, "docs/man", name)).read()
        page = os.path.join(tmp, name[:-4])
        r = run(["scdoc"], input=text)
        if r.returncode != 0:
            failures.append(f"{name}: scdoc: {r.stderr.strip()}")
            continue
        open(page, "w").write(r.stdout)
        r = run(["man", "--warnings", "-l", page], env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
        if r.returncode != 0 or r.stderr.strip():
            failures.append(f"{name}: man -l: {r.stderr.strip() or r.returncode}")
        pages[name[:-4]] = text

OPT = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def options(args):
    r = run([os.path.join(build, args[0])] + args[1:] + ["--help"])
    return set(OPT.findall(r.stdout + r.stderr))


def check(page, opts, what):
    text = pages.get(page, "")
    for o in sorted(opts):
        if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", text):
            failures.append(f"{page}: {o} (from {what} --help) is not in the page")


for prog, page in (("refex-broker", "refex-broker.8"), ("refex-agent", "refex-agent.8")):
    check(page, options([prog]), prog)
commands = ["keys new", "directory", "send", "inbox", "outbox", "audit", "audit query",
            "audit export", "audit proof", "audit reconcile", "audit witnessed", "status",
            "referrals", "case", "requests"]
check("refex.1", options(["refex"]), "refex")
for c in commands:
    opts = options(["refex"] + c.split())
    check("refex.1", opts, "refex " + c)
    if not re.search(r"\*" + re.escape(c.split()[0]), pages.get("refex.1", "")):
        failures.append(f"refex.1: command {c} is not described")

# configuration keys: the CONFIG_KEYS tables and REFEX_DAEMON_BASE_KEYS
keys = set()
for f in ("broker/broker.c", "agents/agent.c", "lib/daemon.h"):
    text = open(os.path.join(src, f)).read()
    for block in re.findall(r"CONFIG_KEYS\[\] = \{(.*?)\};|#define REFEX_DAEMON_BASE_KEYS(.*?)\n\n", text, re.S):
        for part in block:
            keys.update(re.findall(r'"([a-z_]+)"', part))
if len(keys) < 20:
    failures.append(f"only {len(keys)} configuration keys found in the sources")
for k in sorted(keys):
    if not re.search(r"^\*" + re.escape(k) + r"\*$", pages.get("refex.conf.5", ""), re.M):
        failures.append(f"refex.conf.5: key {k} is not described")

for f in failures:
    print("man_pages:", f, file=sys.stderr)
print(f"man_pages: {len(pages)} pages, {len(keys)} configuration keys, "
      f"{'FAILED' if failures else 'OK'}")
sys.exit(1 if failures else 0)
