#!/usr/bin/env python3
"""Fails when the tests or scripts read outside the clone.

A user's clone has nothing beside it, so every file a test reads must be in the repository.
This checks every file under Tests/, tests/, scripts/ and .ci/ for:

- relative paths with `..` components that leave the repository, resolved against the file's
  own directory when the line derives it (`$(dirname "$0")`, `os.path.dirname(__file__)`,
  `#filePath`) and against the repository root otherwise (the scripts `cd` there first);
- Swift paths built by going up from the package root (`root.deletingLastPathComponent()`),
  or from `#filePath` by more levels than the file is deep;
- absolute paths into home or work directories (`/work/`, `/home/`, `/Users/`, `/root/`);
- fixtures named in Swift tests (`PackagePaths.fixture("...")`,
  `root.appendingPathComponent("...")`) that the repository does not carry (not tracked by git).

usage: scripts/check-self-contained.py [ROOT]
Prints one line per finding (file:line: what) and exits 1 if there is any.
"""
import os
import re
import subprocess
import sys

CHECKED = ("Tests", "tests", "scripts", ".ci")
SKIPPED_DIRECTORIES = {"Fixtures", "__pycache__", ".build"}
SELF = {os.path.join("scripts", "check-self-contained.py"), os.path.join("tests", "deploy", "test_self_contained.py")}
TEXT_SUFFIXES = (".swift", ".py", ".sh", ".yml", ".yaml", ".json", ".sql", "")

# A `..` path component: after a separator, quote, space, `=`, `(` or `:` and before one (not
# Swift's `..<` / `...` range operators).
PATH_TOKEN = re.compile(r"""[\w./-]*(?:^|(?<=[/"'\s=(:]))\.\.(?=[/"'\s)]|$)[\w./-]*""")
ABSOLUTE_HOME = re.compile(r"""(?<![\w.$}])/(?:work|home|Users|root)/[\w.-]""")
UP_FROM_ROOT = re.compile(r"\broot\s*\.deletingLastPathComponent\(\)")
FILE_PATH_CHAIN = re.compile(r"#filePath\)((?:\s*\.deletingLastPathComponent\(\))+)")
FIXTURE = re.compile(r"""(?:PackagePaths\.fixture\(\s*"([^"]+)"|root\.appendingPathComponent\(\s*"([^"]+)")""")
DIRNAME_OF_FILE = ("dirname", "__file__", "#filePath", "BASH_SOURCE")


def escapes(root, base, relative):
    """Whether `relative`, taken from directory `base` (inside `root`), leaves `root`."""
    target = os.path.normpath(os.path.join(base, relative))
    return not (target == root or target.startswith(root + os.sep))


def findings_in_line(root, path, line):
    """What is wrong with one line of the file at `path` (absolute, inside `root`)."""
    found = []
    directory = os.path.dirname(path)
    stripped = line.strip()
    for match in PATH_TOKEN.finditer(line):
        token = match.group(0)
        prefix = line[: match.start()]
        base = directory if any(marker in prefix for marker in DIRNAME_OF_FILE) else root
        relative = token.lstrip("/") if token.startswith("/") and base == directory else token
        if token.startswith("/") and base == root:
            continue  # an absolute path such as /.. is not a relative reference
        if escapes(root, base, relative):
            found.append(f"path {token!r} leaves the repository")
    if ABSOLUTE_HOME.search(line) and not stripped.startswith(("#", "//")):
        found.append(f"absolute path into a home or work directory: {stripped[:120]}")
    if UP_FROM_ROOT.search(line):
        found.append("goes up from the package root (root.deletingLastPathComponent())")
    for chain in FILE_PATH_CHAIN.finditer(line):
        levels = chain.group(1).count("deletingLastPathComponent")
        depth = os.path.relpath(path, root).count(os.sep) + 1
        if levels > depth:
            found.append(f"#filePath goes up {levels} levels from a file {depth} deep")
    return found


def tracked_files(root):
    try:
        output = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(output.decode().split("\0")) - {""}


def fixtures_missing(root, line, tracked):
    missing = []
    for match in FIXTURE.finditer(line):
        name = match.group(1)
        relative = f"Tests/Fixtures/{name}" if name else match.group(2)
        if "\\(" in relative or relative.startswith(".build"):
            continue  # interpolated, or a build product
        if tracked is not None:
            present = relative in tracked or any(f.startswith(relative.rstrip("/") + "/") for f in tracked)
        else:
            present = os.path.exists(os.path.join(root, relative))
        if not present:
            missing.append(f"reads {relative}, which the repository does not carry")
    return missing


def check(root):
    root = os.path.realpath(root)
    tracked = tracked_files(root)
    problems = []
    for top in CHECKED:
        for directory, subdirectories, files in os.walk(os.path.join(root, top)):
            subdirectories[:] = [d for d in subdirectories if d not in SKIPPED_DIRECTORIES]
            for name in sorted(files):
                path = os.path.join(directory, name)
                if os.path.splitext(name)[1] not in TEXT_SUFFIXES:
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        lines = f.readlines()
                except (UnicodeDecodeError, OSError):
                    continue
                relative = os.path.relpath(path, root)
                if relative in SELF:
                    continue  # its own patterns, and its test's examples
                for number, line in enumerate(lines, 1):
                    for problem in findings_in_line(root, path, line):
                        problems.append(f"{relative}:{number}: {problem}")
                    if name.endswith(".swift"):
                        for problem in fixtures_missing(root, line, tracked):
                            problems.append(f"{relative}:{number}: {problem}")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"error: {len(problems)} reference(s) outside the clone or to files it does not carry", file=sys.stderr)
        return 1
    print("self-contained: nothing under Tests/, tests/, scripts/ or .ci/ reads outside the clone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
