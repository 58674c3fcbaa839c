"""The policy gate: every changeset is judged by the Rego axioms in ``policies/``.

The Rego modules are evaluated in-process with ``regopy`` (rego-cpp). They are
compiled once into a bundle (a plan) when the engine is made, so a decision is
one bundle query for the whole decision object (about 1-3 ms of CPU on the
examples; ``benchmarks/policy.py``), never a recompilation. The same files load
unchanged into an OPA server (``opa eval -d policies/ ...``): standard Rego v1
only.

The input document goes to rego-cpp as one JSON text (``set_input_term``), not
as a Python object: regopy's object path formats every float with six decimals
(``1e-07`` arrives as ``0``, ``0.0500001`` as ``0.05``), which would let a value
just outside a band pass it.

The engine never decides anything itself: the verdict, the axiom and rule
behind it, the numbers and the risk score all come from ``data.aegis.decision``.
Python only validates the answer into a :class:`~aegis.domain.Decision` and
writes the plain-language explanation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aegis.domain import AutonomousChangeSet, Axiom, Decision, Finding, Verdict
from aegis.policy.context import PolicyContext
from aegis.policy.rego_tests import DATA_FILE, TEST_SUFFIX, PolicyTestReport, run_policy_tests

ENV_POLICIES = "AEGIS_POLICIES"
DECISION_QUERY = "result = data.aegis.decision.result"
VERDICT_SEVERITY = {Verdict.DENY: 0, Verdict.SIMULATE: 1, Verdict.AUTO: 2}
VERSION_LENGTH = 16
JSON_SEPARATORS = (",", ":")
TINY_FLUSH = 1e-300  # smaller magnitudes reach rego-cpp as 0.0 (its std::stod throws near 2.2e-308)
TINY_EXPONENT = "e-3"  # every float below 1e-300 prints with it (as do 1e-30..1e-39: then nothing changes)


def input_json(policy_input: dict[str, Any]) -> str:
    """The input document as compact JSON, every number exact; a NaN or infinity is refused with its path.

    rego-cpp computes with ``std::stod``, which throws on numbers at the edge of
    the double range (2.2250738585072014e-308 already: it rounds up to DBL_MIN)
    and fails the whole query; numbers smaller in magnitude than ``TINY_FLUSH``
    (1e-300) are flushed to 0.0 (a relative change is measured against the 1e-9
    floor anyway). The text is only rebuilt when it holds such an exponent.
    """
    try:
        text = json.dumps(policy_input, allow_nan=False, separators=JSON_SEPARATORS)
    except ValueError:
        bad = ", ".join(_non_finite_paths(policy_input, "input")) or "a value"
        raise ValueError(f"the policy input holds a non-finite number (NaN or infinity) at {bad}") from None
    if TINY_EXPONENT in text:
        text = json.dumps(_flush_subnormals(policy_input), separators=JSON_SEPARATORS)
    return text


def _flush_subnormals(value: Any) -> Any:
    if isinstance(value, float):
        return 0.0 if abs(value) < TINY_FLUSH else value
    if isinstance(value, dict):
        return {k: _flush_subnormals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_flush_subnormals(v) for v in value]
    return value


def _non_finite_paths(value: Any, path: str) -> list[str]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite_paths(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _non_finite_paths(v, f"{path}[{i}]")]
    return []


class PolicyError(RuntimeError):
    """The policies cannot be loaded or did not answer: a fault of the policy files, never of the input."""


def default_policies_dir() -> Path:
    """``$AEGIS_POLICIES`` when set, else the repository's ``policies/`` beside the ``aegis`` package."""
    env = os.environ.get(ENV_POLICIES, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    from policies import POLICY_DIR  # the data package's own loader, installed beside aegis

    return POLICY_DIR


def policy_files(policies_dir: Path) -> tuple[list[Path], list[Path], Path]:
    """(decision modules, test modules, data file) of a policy directory, sorted; errors name what is missing."""
    if not policies_dir.is_dir():
        raise PolicyError(
            f"policy directory {policies_dir} does not exist (set {ENV_POLICIES} or pass policies_dir)"
        )
    data = policies_dir / DATA_FILE
    if not data.is_file():
        raise PolicyError(f"{data} is missing: every threshold of the axioms lives there")
    rego = sorted(p for p in policies_dir.glob("*.rego"))
    modules = [p for p in rego if not p.name.endswith(TEST_SUFFIX)]
    tests = [p for p in rego if p.name.endswith(TEST_SUFFIX)]
    if not modules:
        raise PolicyError(f"no .rego modules in {policies_dir}")
    return modules, tests, data


def load_data(path: Path) -> dict[str, Any]:
    """The policy data, read with the strict loader (a duplicate threshold must not silently win)."""
    from aegis.policy.strict_json import StrictJsonError, load_strict

    try:
        doc = load_strict(path)
    except StrictJsonError as exc:
        raise PolicyError(str(exc)) from exc
    if not isinstance(doc, dict):
        raise PolicyError(f"{path} must hold a JSON object, got {type(doc).__name__}")
    return doc


def content_version(files: list[Path], root: Path) -> str:
    """A hash over the names and bytes of ``files``: equal versions judge identically."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:VERSION_LENGTH]


class PolicyEngine:
    """Judges changesets against the axioms; thread-safe, one compiled bundle per engine.

    ``version`` is the content hash of the decision modules and ``data.json``
    (tests excluded: they do not change a verdict); every Decision carries it so
    the ledger says which policies decided.
    """

    def __init__(self, policies_dir: Path | None = None) -> None:
        from regopy import Interpreter, RegoError

        self.policies_dir = (policies_dir or default_policies_dir()).resolve()
        modules, _tests, data_file = policy_files(self.policies_dir)
        self.data: dict[str, Any] = load_data(data_file)
        self.version: str = content_version([*modules, data_file], self.policies_dir)
        self._lock = threading.Lock()
        self._rego = Interpreter()
        try:
            self._rego.add_data(self.data)
            for path in modules:
                self._rego.add_module(path.name, path.read_text())
            self._bundle = self._rego.build(DECISION_QUERY, [])
        except RegoError as exc:
            raise PolicyError(f"the policies in {self.policies_dir} do not compile:\n{exc}") from exc
        if not self._bundle.ok():
            raise PolicyError(f"the policies in {self.policies_dir} do not compile into a bundle")

    def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """The raw answer of ``data.aegis.decision.result`` for an input document (one bundle query).

        Raises ValueError for an input holding NaN or infinity (no JSON, no verdict),
        PolicyError when the policies fail to answer.
        """
        from regopy import RegoError

        text = input_json(policy_input)
        with self._lock:
            try:
                self._rego.set_input_term(text)
                output = self._rego.query_bundle(self._bundle)
            except (RegoError, ValueError) as exc:  # ValueError: rego-cpp emitted malformed JSON
                raise PolicyError(f"policy evaluation failed: {exc}") from exc
            if not output.ok() or not output.results:
                raise PolicyError(f"policy evaluation failed: {output}")
            bindings = output.results[0].bindings
        result = bindings.get("result")
        if not isinstance(result, dict):
            raise PolicyError(
                f"data.aegis.decision.result is undefined for this input (got {bindings!r:.200})"
            )
        return result

    @staticmethod
    def policy_input(changeset: AutonomousChangeSet, context: PolicyContext) -> dict[str, Any]:
        """The input document the Rego modules read: ``{"changeset": ..., "context": ...}``."""
        return {"changeset": changeset.model_dump(mode="json"), "context": context.policy_input()}

    def decide(self, changeset: AutonomousChangeSet, context: PolicyContext) -> Decision:
        """Judge one changeset: deny on any violated axiom, simulate when risky or structural, else auto.

        Raises ValueError when the changeset or context holds NaN or infinity, PolicyError
        when the policies cannot answer.
        """
        raw = self.evaluate(self.policy_input(changeset, context))
        try:
            findings = sorted(
                (Finding.model_validate(_finding_fields(f)) for f in raw.get("findings", [])),
                key=lambda f: (VERDICT_SEVERITY[f.verdict], f.axiom.rank, f.rule, f.message),
            )
            decision = Decision(
                changeset_id=changeset.id,
                verdict=Verdict(raw["verdict"]),
                axiom=Axiom(raw["axiom"]) if raw.get("axiom") else None,
                rule=raw.get("rule"),
                risk_score=float(raw["risk_score"]),
                findings=findings,
                policy_version=self.version,
            )
        except (KeyError, ValueError, ValidationError) as exc:
            raise PolicyError(
                f"the policies answered something that is not a decision: {exc}\n{raw!r:.500}"
            ) from exc
        decision.explanation = explain_decision(decision, raw.get("risk", {}))
        return decision

    def test(self) -> PolicyTestReport:
        """Run every ``test_*`` rule of the ``*_test.rego`` modules (in a child process, see rego_tests)."""
        return run_policy_tests(self.policies_dir)


def _finding_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw[k] for k in ("axiom", "rule", "verdict", "message", "numbers") if k in raw}


def explain_decision(decision: Decision, risk: dict[str, Any]) -> str:
    """One paragraph a person can read: the verdict, the axiom and rule that decided, the numbers."""
    score = f"risk {decision.risk_score:.2f}"
    if decision.verdict == Verdict.AUTO:
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(risk.items()) if k != "score")
        return (
            f"AUTO: no axiom is violated and the change is a low-risk parameter change within its bounded deltas "
            f"({score}; {detail}); it may proceed to the canary without the simulation gate."
        )
    top = [f for f in decision.findings if f.verdict == decision.verdict]
    head = top[0] if top else None
    lines = []
    if decision.verdict == Verdict.DENY:
        assert head is not None
        lines.append(
            f"DENY by axiom {head.axiom.rank} ({head.axiom.value}), rule {head.rule}: {head.message} ({score})."
        )
    else:
        assert head is not None
        lines.append(
            f"SIMULATE: the simulation gate must pass first; highest reason is axiom {head.axiom.rank} "
            f"({head.axiom.value}), rule {head.rule}: {head.message} ({score})."
        )
    others = [f for f in decision.findings if f is not head]
    if others:
        lines.append("Also: " + "; ".join(f"[{f.verdict.value}] {f.rule}: {f.message}" for f in others) + ".")
    return " ".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
