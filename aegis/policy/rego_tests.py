"""A test runner for the ``test_*`` rules of ``policies/*_test.rego`` (what ``opa test`` does).

regopy has no test runner, so this module finds the test rules itself and
queries each: a test passes when its rule is ``true``. The same files run
unchanged under ``opa test policies/``.

The queries run in a child process: rego-cpp 1.5 can crash the whole process
on some constructs (``with input as`` over a computed rule segfaults), and a
crashing test must be reported as a failed test, not take the caller down. When
the child dies, the test it was running is marked crashed and the rest run in
a fresh child (bounded: at most one restart per test).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

TEST_SUFFIX = "_test.rego"
DATA_FILE = "data.json"
PACKAGE_RE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
TEST_RULE_RE = re.compile(r"^(test_\w+)\s+(?:if\b|:=|=|\{)", re.MULTILINE)
CHILD_TIMEOUT_S = 300.0


class PolicyTestResult(BaseModel):
    package: str
    name: str
    file: str
    passed: bool
    detail: str = ""
    duration_ms: float = 0.0

    @property
    def full_name(self) -> str:
        return f"data.{self.package}.{self.name}"


class PolicyTestReport(BaseModel):
    results: list[PolicyTestResult] = Field(default_factory=list)
    error: str | None = Field(
        None, description="Why the tests could not run at all (compile error, no tests)"
    )

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.results) and self.failed == 0


def discover(policies_dir: Path) -> list[tuple[str, str, str]]:
    """(file name, package, rule) of every test rule, in file order; a rule defined twice is listed once."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(policies_dir.glob(f"*{TEST_SUFFIX}")):
        text = path.read_text()
        match = PACKAGE_RE.search(text)
        if match is None:
            raise ValueError(f"{path} has no package declaration")
        seen: set[str] = set()
        for rule in TEST_RULE_RE.findall(text):
            if rule not in seen:
                seen.add(rule)
                found.append((path.name, match.group(1), rule))
    return found


def run_policy_tests(policies_dir: Path) -> PolicyTestReport:
    """Run every test rule of ``policies_dir``; never raises for a failing or crashing test."""
    try:
        tests = discover(policies_dir)
    except (OSError, ValueError) as exc:
        return PolicyTestReport(error=str(exc))
    if not tests:
        return PolicyTestReport(error=f"no test_* rules in {policies_dir}/*{TEST_SUFFIX}")
    results: list[PolicyTestResult] = []
    for file in dict.fromkeys(t[0] for t in tests):  # one test file per child: a crash stays in its file
        pending = [t for t in tests if t[0] == file]
        # Bounded: each round either reports at least one test or marks the first pending one crashed.
        for _ in range(2 * len(pending) + 1):
            if not pending:
                break
            done, error, crashed = _run_child(policies_dir, file, pending)
            if error is not None:
                return PolicyTestReport(results=results, error=error)
            results.extend(done)
            pending = pending[len(done) :]
            if crashed is not None and pending and not done:
                # A fresh interpreter crashed before finishing this test: it (or its module) is the culprit.
                # A crash after some progress may come from state an earlier test left, so the next test
                # is retried in a fresh child before being blamed.
                _, package, name = pending.pop(0)
                results.append(
                    PolicyTestResult(
                        package=package, name=name, file=file, passed=False, detail=f"interpreter {crashed}"
                    )
                )
    return PolicyTestReport(results=results)


def _run_child(
    policies_dir: Path, test_file: str, tests: list[tuple[str, str, str]]
) -> tuple[list[PolicyTestResult], str | None, str | None]:
    """Run ``tests`` of ``test_file`` in a child; (results reported, fatal error, crash description)."""
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.policy.rego_tests", str(policies_dir), test_file],
        input=json.dumps(tests),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    results: list[PolicyTestResult] = []
    for line in proc.stdout.splitlines():
        doc = json.loads(line)
        if "error" in doc:
            return results, str(doc["error"]), None
        results.append(PolicyTestResult.model_validate(doc))
    if proc.returncode == 0:
        return results, None, None
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return results, None, f"crashed ({name})"
    return results, f"policy test runner failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}", None


def _child(policies_dir: Path, test_file: str) -> int:
    """Child side: load the policies and one test file, query each test rule, print a JSON line per test."""
    from regopy import Interpreter, RegoError

    tests = json.loads(sys.stdin.read())
    rego = Interpreter()
    try:
        rego.add_data_json((policies_dir / DATA_FILE).read_text())
        for path in sorted(policies_dir.glob("*.rego")):
            if not path.name.endswith(TEST_SUFFIX) or path.name == test_file:
                rego.add_module(path.name, path.read_text())
    except (OSError, RegoError) as exc:
        print(json.dumps({"error": f"policies do not compile: {exc}"}), flush=True)
        return 1
    for file, package, name in tests:
        start = time.perf_counter()
        try:
            output = rego.query(f"data.{package}.{name}")
            ok = output.ok()
            value = (
                output.results[0].expressions[0]
                if ok and output.results and output.results[0].expressions
                else None
            )
            passed = value is True
            detail = "" if passed else (str(output) if not ok else f"expected true, got {json.dumps(value)}")
            if not passed and value is None and ok:
                detail = "undefined (a condition of the test did not hold)"
        except RegoError as exc:
            passed, detail = False, f"error: {exc}"
        ms = (time.perf_counter() - start) * 1000
        doc = {
            "package": package,
            "name": name,
            "file": file,
            "passed": passed,
            "detail": detail,
            "duration_ms": ms,
        }
        print(json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":  # the child process of run_policy_tests
    sys.exit(_child(Path(sys.argv[1]), sys.argv[2]))
