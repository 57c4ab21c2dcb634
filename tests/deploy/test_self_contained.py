"""The check that tests and scripts read nothing outside the clone (scripts/check-self-contained.py)
finds the escapes it is meant to find, and passes on the repository itself."""
import importlib.util
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("check_self_contained", os.path.join(ROOT, "scripts", "check-self-contained.py"))
checker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checker)


def write(root, relative, text):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_the_repository_is_self_contained():
    assert checker.check(ROOT) == []


def test_escapes_are_found(tmp_path):
    root = str(tmp_path)
    subprocess.run(["git", "init", "-q", root], check=True)
    write(root, "Tests/EndToEndTests/A.swift",
          'let a = PackagePaths.root.deletingLastPathComponent().appendingPathComponent("elsewhere/data/x.csv")\n'
          'let b = "../elsewhere/data/sample.csv"\n'
          'let c = PackagePaths.fixture("absent.csv")\n'
          'let d = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()'
          '.deletingLastPathComponent().deletingLastPathComponent()\n')
    write(root, "scripts/a.sh", 'cd "$(dirname "$0")/../.."\ncat /work/elsewhere/data/x.csv\n')
    write(root, ".ci/run", 'cd "$(dirname "$0")/.."\nexec ./scripts/test.sh\n')
    write(root, "Tests/X/Ranges.swift", 'let a = buffered[..<newline]\nfor i in Int64(0)..<30 {}\nlet b = chunk[...end]\n')
    problems = "\n".join(checker.check(root))
    assert "A.swift:1: goes up from the package root" in problems
    assert "A.swift:2: path '../elsewhere/data/sample.csv' leaves the repository" in problems
    assert "A.swift:3: reads Tests/Fixtures/absent.csv" in problems
    assert "A.swift:4: #filePath goes up 4 levels from a file 3 deep" in problems
    assert "a.sh:1: path '/../..' leaves the repository" in problems
    assert "a.sh:2: absolute path into a home or work directory" in problems
    assert ".ci/run" not in problems, "going up from .ci to the root stays inside"
    assert "Ranges.swift" not in problems, "Swift range operators are not paths"
