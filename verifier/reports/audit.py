"""audit: every attestation in a set of directories as one graph, with every gap and conflict.

Nodes are step attestations, the artifacts they consume and produce (identified by digest, so a
renamed file is the same artifact), sources (materials no step produced) and rebuild
attestations, attached to the step attestation they name by the sha256 of its DSSE payload.
Everything is indexed by digest in dictionaries, so building the graph is linear in the number
of attestations and descriptors.

Findings carry a severity: `error` (the chain cannot be trusted as it stands), `warning` (a
reviewer should look) and `info`. With a policy, signatures are checked against its signers and
its rules applied; without one, each signer is shown by the key hint or certificate identity the
bundle claims (unverified) and the chain is reported as unchecked.

Final artifacts are the products of the policy's final steps; without a policy, the products of
every step none of whose products another step consumes. A product that is neither final nor
consumed by any step (nor inside, or around, a directory that is) is dangling.

Attestations are hostile input: nothing they name is opened, fetched or run, and every string
taken from them is cleaned (`clean`) before it reaches a report.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle, read_bundles
from verifier.formats.statement import (
    PROVENANCE_TYPE,
    REBUILD_PREDICATE_TYPE,
    STEP_BUILD_TYPE,
    StepRecord,
    as_step,
    parse_statement,
)
from verifier.judgement.evaluation import CONSEQUENCES, Evaluation, evaluate, unsafe_name
from verifier.judgement.evaluation import RebuildNode as JudgedRebuild
from verifier.judgement.evaluation import StepNode as JudgedStep
from verifier.judgement.trust import Attribution
from verifier.judgement.verify import attestation_files
from verifier.reports import openness
from verifier.reports.audit_model import (
    FILES_KEPT,
    SEVERITIES,
    ArtifactNode,
    AuditReport,
    Finding,
    RebuildNode,
    Signer,
    StepNode,
    clean,
    digest_key,
    node_id,
    scalar,
    short_text,
)

if TYPE_CHECKING:
    from verifier.judgement.policy import Policy
    from verifier.judgement.quorum import RebuildClaim
    from verifier.judgement.trust import KeylessCheck, TrustedSigners
    from verifier.neighbours.intoto_links import ClassicLink

__all__ = ["AuditReport", "Finding", "audit", "clean", "environment_risks"]
VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def environment_risks(record: StepRecord) -> list[tuple[str, str]]:
    """(severity, sentence) for each recorded condition known to break bitwise reproducibility."""
    environment = record.environment
    variables = environment.get("variables")
    variables = variables if isinstance(variables, dict) else {}
    variables = {**variables, **record.declared_env}
    torch = environment.get("torch")
    torch = torch if isinstance(torch, dict) else {}
    gpus = environment.get("gpus")
    risks: list[tuple[str, str]] = []
    if (isinstance(gpus, list) and gpus) or torch.get("cuda_available") is True:
        unsafe = []
        if torch and "deterministic_algorithms" not in torch:
            # Since the step reports its own settings (MODEL_VERIFIER_REPORT), absent is
            # unknown, not off.
            unsafe.append("torch deterministic algorithms not reported")
        elif torch and torch.get("deterministic_algorithms") is not True:
            unsafe.append("torch deterministic algorithms off")
        if "CUBLAS_WORKSPACE_CONFIG" not in variables:
            unsafe.append("CUBLAS_WORKSPACE_CONFIG unset")
        if torch.get("cudnn_benchmark") is True:
            unsafe.append("cuDNN benchmark mode on")
        if torch.get("tf32_matmul") is True:
            unsafe.append("TF32 matmul on")
        if unsafe:
            risks.append(("warning", "ran on a GPU without deterministic settings ("
                          + ", ".join(unsafe) + "); a rebuild is unlikely to match bit for bit."))
    definition = record.statement.predicate.get("buildDefinition")
    internal = definition.get("internalParameters") if isinstance(definition, dict) else None
    threaded = internal.get("threadedLibraries") if isinstance(internal, dict) else None
    # Traced, a step that loaded no threaded runtime (a packaging step copying files) has no
    # thread count to pin; untraced, nobody knows, so it is warned about as before.
    if not any(name in variables for name in THREAD_VARIABLES) and (
            not isinstance(threaded, list) or threaded):
        loaded = (f"loaded {', '.join(map(str, threaded[:10]))} but " if isinstance(threaded, list)
                  else "")
        risks.append(("warning", loaded + "pinned no thread count (no "
                      + " or ".join(THREAD_VARIABLES)
                      + "); its results can change with the number of threads."))
    git = environment.get("git")
    if isinstance(git, dict) and git.get("dirty") is True:
        risks.append(("warning", f"ran from a dirty git tree (commit "
                      f"{short_text(git.get('commit'), 12)} plus uncommitted changes)."))
    elif not isinstance(git, dict):
        risks.append(("info", "recorded no git commit, so its code is pinned by digest only."))
    packages = environment.get("packages")
    if not isinstance(packages, dict) or not packages:
        risks.append(("warning", "recorded no installed package versions; a rebuilder cannot "
                      "reproduce its dependencies."))
    if isinstance(torch.get("error"), str):
        risks.append(("info", "torch was installed but its settings could not be recorded."))
    return risks


def _kind_of(predicate_type: str, predicate: dict[str, Any]) -> str:
    """"step" or "rebuild" for this project's attestations, else what the statement is."""
    if predicate_type == REBUILD_PREDICATE_TYPE:
        return "rebuild"
    if predicate_type == VSA_PREDICATE_TYPE:
        return "a verification summary (VSA)"
    if predicate_type != PROVENANCE_TYPE:
        return f"an attestation of predicate type {short_text(predicate_type, 120)!r}"
    definition = predicate.get("buildDefinition")
    build_type = definition.get("buildType") if isinstance(definition, dict) else None
    if build_type == STEP_BUILD_TYPE:
        return "step"
    return f"SLSA provenance of build type {short_text(build_type, 120)!r}"


def _parents(name: str) -> list[str]:
    """The directories above a POSIX name, nearest first, as PurePosixPath.parents has them."""
    found: list[str] = []
    end = name.rfind("/")
    while end > 0:
        found.append(name[:end])
        end = name.rfind("/", 0, end)
    found.append(".")
    return found


def _claimed_signer(bundle: Bundle) -> str:
    """What the bundle says about its signer: never trusted, shown to the reviewer."""
    if bundle.is_keyless:
        return f"certificate of {_certificate_identity(bundle)}"
    hint = bundle.public_key_hint or next((s.keyid for s in bundle.signatures if s.keyid), "")
    return f"key {short_text(hint, 16)}" if hint else "no key hint"


def _certificate_identity(bundle: Bundle) -> str:
    """The subject alternative name of a keyless bundle's certificate, unverified."""
    material = bundle.raw.get("verificationMaterial")
    certificate = material.get("certificate") if isinstance(material, dict) else None
    raw = certificate.get("rawBytes") if isinstance(certificate, dict) else None
    if not isinstance(raw, str):
        return "unreadable"
    try:
        from cryptography import x509

        parsed = x509.load_der_x509_certificate(base64.b64decode(raw))
        names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [str(v) for v in names.get_values_for_type(x509.UniformResourceIdentifier)]
        found += [str(v) for v in names.get_values_for_type(x509.RFC822Name)]
        return short_text(found[0], 300) if found else "no identity"
    except Exception:  # any malformed certificate is just unreadable here
        return "unreadable"


class _Auditor:
    """Builds one AuditReport; each method adds one kind of node or finding."""

    def __init__(self, directories: list[Path], policy: Policy | None,
                 keyless_check: KeylessCheck | None, today: dt.date | None) -> None:
        from verifier.judgement.trust import TrustedSigners

        self.policy = policy
        self.today = today
        if keyless_check is None and policy is not None:
            from verifier.formats.keyless import check_keyless as keyless_check
        self.signers: TrustedSigners | None = (
            TrustedSigners(policy, keyless_check) if policy is not None else None
        )
        self.policy_identities: set[str] = set()
        if policy is not None and self.signers is not None:
            self.policy_identities = {self.signers.identity_of(n) for n in policy.signers}
        self.report = AuditReport([str(d) for d in directories],
                                  str(policy.path) if policy is not None else None)
        self.step_by_payload: dict[str, StepNode] = {}
        self.rebuild_by_payload: dict[str, RebuildNode] = {}
        self.producers: dict[tuple[str, str], list[StepNode]] = {}
        self.dangling: set[str] = set()
        self.evaluation: Evaluation | None = None
        self.judged: dict[str, JudgedStep | JudgedRebuild] = {}

    def add(self, severity: str, kind: str, message: str, files: Iterable[str] = (),
            node: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.report.findings.append(
            Finding(severity, kind, message, tuple(files), node, details)
        )

    # -- loading ---------------------------------------------------------------------------

    def load(self, directories: list[Path]) -> None:
        from verifier.neighbours.intoto_links import link_files

        files = attestation_files(directories)
        links = link_files(directories)  # in-toto's own links count too (issue #13)
        if not files and not links:
            raise InputError(f"{', '.join(map(str, directories))}: no attestation files "
                             "(*.json, *.jsonl, *.link) to audit.")
        self.report.files = len(files) + len(links)
        bundles: list[Bundle] = []
        for path in files:
            bad_lines: list[InputError] = []
            try:
                bundles.extend(read_bundles(path, bad_lines))
            except (InputError, ValueError, RecursionError) as error:
                # ValueError: e.g. an integer literal too long to convert; still just bad input.
                self.add("error", "unreadable-bundle", _unreadable(path, error), [str(path)])
            for error in bad_lines:
                self.add("error", "unreadable-bundle", str(error), [str(path)])
        read_links = self.read_links(links)
        if self.policy is not None and self.signers is not None:
            # The verdicts are the evaluation's, the same one verify-model renders.
            self.evaluation = evaluate(self.policy, bundles, self.signers, self.today,
                                       read_links)
            self.judged = {n.payload_sha256: n for n in self.evaluation.steps}
            self.judged.update({n.claim.statement.payload_sha256: n
                                for n in self.evaluation.rebuilds})
        self.report.bundles = len(bundles)
        for bundle in self._without_replays(bundles):
            self.admit(bundle)
        for link in read_links:
            self.admit_link(link)

    def _without_replays(self, bundles: list[Bundle]) -> list[Bundle]:
        """Each envelope once (the evaluation judges each once too); the copies are one
        finding per envelope, not one per copy."""
        from verifier.formats.evidence import envelope_key

        kept: dict[bytes, Bundle] = {}
        copies: dict[bytes, list[str]] = {}
        for bundle in bundles:
            key = envelope_key(bundle)
            if key in kept:
                copies.setdefault(key, []).append(bundle.source)
            else:
                kept[key] = bundle
        for key, sources in copies.items():
            first = kept[key].source
            self.add("info", "duplicate", f"{len(sources)} cop{'y' if len(sources) == 1 else 'ies'}"
                     f" of {first} (the same envelope: payload and signatures); counted once.",
                     [first, *sources[:FILES_KEPT - 1]])
        return list(kept.values())

    def read_links(self, paths: list[Path]) -> list[ClassicLink]:
        """in-toto's own links (Metablock or DSSE); an unreadable one is a finding."""
        from verifier.neighbours.intoto_links import read_link

        found = []
        for path in paths:
            try:
                found.append(read_link(path))
            except InputError as error:
                self.add("error", "unreadable-bundle", str(error), [str(path)])
        return found

    def admit_link(self, link: ClassicLink) -> None:
        """A link as a step node, signed as the evaluation attributed it."""
        from verifier.neighbours.intoto_links import link_as_step

        try:
            record = link_as_step(link)
        except InputError as error:
            self.add("error", "malformed-statement", str(error), [link.source])
            return
        claimed = f"in-toto key {short_text(link.signatures[0][0], 16)}"
        judged = self.judged.get(record.statement.payload_sha256)
        if self.signers is None:
            signer = Signer((), (), claimed, "unchecked")
        elif judged is not None:
            signer = Signer(judged.attribution.names, judged.attribution.identities, claimed,
                            judged.status)
        else:
            signer = Signer((), (), claimed, "unknown-signer")
        self.admit_step(record, signer)

    def sign_status(self, bundle: Bundle) -> Signer:
        claimed = _claimed_signer(bundle)
        if self.signers is None:
            return Signer((), (), claimed, "unchecked")
        judged = self.judged.get(hashlib.sha256(bundle.payload).hexdigest())
        if judged is not None:
            return Signer(judged.attribution.names, judged.attribution.identities, claimed,
                          judged.status)
        attribution = self.signers.attribute(bundle)
        if attribution.names:
            return Signer(attribution.names, attribution.identities, claimed, "verified")
        if bundle.is_keyless:
            return Signer((), (), claimed, "unverifiable")
        hints = {f"key:{s.keyid}" for s in bundle.signatures}
        hints.add(f"key:{bundle.public_key_hint}")
        status = "invalid-signature" if hints & self.policy_identities else "unknown-signer"
        return Signer((), (), claimed, status)

    def admit(self, bundle: Bundle) -> None:
        source = bundle.source
        if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
            self.add("warning", "not-in-toto", f"{source}: payload type "
                     f"{short_text(bundle.payload_type, 100)!r} is not in-toto; not part of the "
                     "graph.", [source])
            return
        try:
            statement = parse_statement(bundle.payload, source)
        except (InputError, ValueError, RecursionError) as error:
            self.add("error", "malformed-statement", _unreadable(Path(source), error), [source])
            return
        kind = _kind_of(statement.predicate_type, statement.predicate)
        if kind not in ("step", "rebuild"):
            self.add("info", "other-attestation", f"{source}: {kind}, signed by "
                     f"{_claimed_signer(bundle)} (not checked); not part of the build graph.",
                     [source])
            return
        signer = self.sign_status(bundle)
        try:
            if kind == "rebuild":
                from verifier.judgement.quorum import as_rebuild

                self.admit_rebuild(as_rebuild(statement, Attribution(signer.names,
                                                                     signer.identities)), signer)
            else:
                self.admit_step(as_step(statement), signer)
        except InputError as error:
            self.add("error", "malformed-statement", str(error), [source])

    def admit_step(self, record: StepRecord, signer: Signer) -> None:
        payload = record.statement.payload_sha256
        existing = self.step_by_payload.get(payload)
        if existing is not None:
            self._merge_duplicate(existing, record.source, signer, "step attestation")
            return
        node = StepNode(f"s-{payload[:24]}", record, signer, [record.source])
        self.step_by_payload[payload] = node
        self.report.steps.append(node)
        if self.evaluation is None:  # with a policy, the evaluation judges names too
            self._check_names(node, record)
        for product in record.products:
            for pair in product["digest"].items():
                self.producers.setdefault(pair, []).append(node)

    def _check_names(self, node: StepNode, record: StepRecord) -> None:
        for descriptor in (*record.materials, *record.products):
            if unsafe_name(descriptor["name"]):
                self.add("error", "unsafe-name", f"{record.source}: step {record.step!r} names "
                         f"{descriptor['name']!r}, a path that leaves the workspace; a rebuild "
                         "refuses it.", [record.source], node.id)

    def admit_rebuild(self, claim: RebuildClaim, signer: Signer) -> None:
        payload = claim.statement.payload_sha256
        existing = self.rebuild_by_payload.get(payload)
        if existing is not None:
            self._merge_duplicate(existing, claim.source, signer, "rebuild attestation")
            return
        node = RebuildNode(f"r-{payload[:24]}", claim, signer, [claim.source])
        self.rebuild_by_payload[payload] = node
        self.report.rebuilds.append(node)

    def _merge_duplicate(self, existing: StepNode | RebuildNode, source: str, signer: Signer,
                         what: str) -> None:
        existing.files.append(source)
        self.add("info", "duplicate", f"{source}: the same {what} as {existing.files[0]} "
                 "(identical signed payload); counted once.", existing.files[:FILES_KEPT],
                 existing.id)
        if signer.status == "verified" and existing.signer.status != "verified":
            existing.signer = signer  # one copy carries a valid signature: the payload is trusted
        elif signer.status == "verified":
            existing.signer = Signer(
                tuple(sorted(set(existing.signer.names) | set(signer.names))),
                tuple(sorted(set(existing.signer.identities) | set(signer.identities))),
                existing.signer.claimed, "verified")

    def _check_signature(self, node: str, source: str, what: str, signer: Signer) -> None:
        messages = {
            "invalid-signature": (f"{source}: the signature of {what!r} does not verify under "
                                  "the policy key it names: altered after signing, or forged."),
            "unknown-signer": (f"{source}: {what!r} is signed by a key the policy does not name "
                               f"({signer.claimed})."),
            "unverifiable": (f"{source}: {what!r} is a keyless bundle ({signer.claimed}) that "
                             "no keyless identity in the policy verifies."),
        }
        if signer.status in messages:
            kind = "signer-not-in-policy" if signer.status == "unknown-signer" else signer.status
            self.add("error", kind, messages[signer.status], [source], node)

    # -- the graph ---------------------------------------------------------------------------

    def artifact(self, digest: dict[str, str], name: str) -> ArtifactNode:
        key = digest_key(digest)
        node = self.report.artifacts.get(key)
        if node is None:
            node = ArtifactNode(node_id("a", f"{key[0]}:{key[1]}"), dict(digest))
            self.report.artifacts[key] = node
        node.names.add(name)
        return node

    def link(self) -> dict[str, list[StepNode]]:
        """Products and materials to artifact nodes; returns each step's producing parents."""
        parents: dict[str, list[StepNode]] = {}
        for step in self.report.steps:
            consumed = {pair for m in step.record.materials for pair in m["digest"].items()}
            for product in step.record.products:
                node = self.artifact(product["digest"], product["name"])
                passed_through = any(pair in consumed for pair in product["digest"].items())
                if not passed_through:  # a copy of an input was not made here
                    node.producers[step.id] = None
        for step in self.report.steps:
            found: dict[str, StepNode] = {}
            for material in step.record.materials:
                node = self.artifact(material["digest"], material["name"])
                node.consumers[step.id] = None
                for producer in self._producers_of(material["digest"]):
                    if producer is not step:
                        found[producer.id] = producer
            parents[step.id] = list(found.values())
        return parents

    def _producers_of(self, digest: dict[str, str]) -> list[StepNode]:
        found: dict[str, StepNode] = {}
        for pair in digest.items():
            for producer in self.producers.get(pair, ()):
                found[producer.id] = producer
        return list(found.values())

    def order(self, parents: dict[str, list[StepNode]]) -> list[StepNode]:
        """Steps in dependency order (Kahn), with each step's layer set to its longest path
        from a source; steps on a cycle are reported and put last."""
        children: dict[str, list[StepNode]] = {s.id: [] for s in self.report.steps}
        waiting = {s.id: len(parents[s.id]) for s in self.report.steps}
        for step in self.report.steps:
            for parent in parents[step.id]:
                children[parent.id].append(step)
        ready = deque(s for s in self.report.steps if waiting[s.id] == 0)
        ordered: list[StepNode] = []
        while ready:
            step = ready.popleft()
            ordered.append(step)
            for child in children[step.id]:
                child.layer = max(child.layer, step.layer + 1)
                waiting[child.id] -= 1
                if waiting[child.id] == 0:
                    ready.append(child)
        if len(ordered) < len(self.report.steps):
            placed = {s.id for s in ordered}
            cycle = [s for s in self.report.steps if s.id not in placed]
            self.add("error", "cycle", "steps " + ", ".join(repr(s.record.step) for s in cycle[:10])
                     + " consume each other's products in a cycle, so they have no build order.",
                     [s.record.source for s in cycle[:10]], cycle[0].id)
            ordered.extend(cycle)
        return ordered

    # -- findings ------------------------------------------------------------------------------

    def check_policy(self, ordered: list[StepNode], parents: dict[str, list[StepNode]]) -> None:
        policy = self.policy
        if policy is None:
            self.add("warning", "chain-unchecked", "no policy given: signatures were not checked "
                     "against known signers and every input without a producing step is "
                     "unpinned; pass --policy FILE to check the chain.")
            return
        if self.evaluation is not None:
            self._render_judgement(self.evaluation)
            return
        present: set[str] = set()
        wanted = {name for rule in policy.steps for name in rule.after}
        ancestors: dict[str, set[str]] = {}
        for step in ordered:
            inherited: set[str] = set()
            for parent in parents[step.id]:
                inherited |= ancestors.get(parent.id, set())
                if parent.record.step in wanted:
                    inherited.add(parent.record.step)
            ancestors[step.id] = inherited
            self._check_step_rule(step, inherited, present)
        for rule in policy.steps:
            if rule.name not in present:
                self.add("error", "missing-step", f"{policy.path}: required step {rule.name!r} "
                         "has no attestation signed as the policy requires.", [str(policy.path)])

    def _render_judgement(self, evaluation: Evaluation) -> None:
        """Every problem the evaluation found, as a finding on its node."""
        if evaluation.expired is not None:
            self.add("error", "expired-policy", evaluation.expired.message,
                     [evaluation.expired.file])
        node_of = {s.record.statement.payload_sha256: s.id for s in self.report.steps}
        node_of.update({r.claim.statement.payload_sha256: r.id for r in self.report.rebuilds})
        judged: list[JudgedStep | JudgedRebuild] = [*evaluation.steps, *evaluation.rebuilds]
        for node in judged:
            payload = (node.payload_sha256 if isinstance(node, JudgedStep)
                       else node.claim.statement.payload_sha256)
            for problem in node.problems:
                if problem.kind in CONSEQUENCES:
                    continue  # shown on the step that caused it
                severity = "warning" if problem.kind == "step-not-in-policy" else "error"
                self.add(severity, problem.kind, problem.message, [problem.file],
                         node_of.get(payload))
        for name in evaluation.missing_steps:
            self.add("error", "missing-step", f"{evaluation.policy.path}: required step "
                     f"{name!r} has no attestation signed as the policy requires.",
                     [str(evaluation.policy.path)])

    def _check_step_rule(self, step: StepNode, ancestors: set[str], present: set[str]) -> None:
        assert self.policy is not None
        record = step.record
        rule = self.policy.step(record.step)
        if rule is None:
            self.add("warning", "step-not-in-policy", f"{record.source}: step {record.step!r} is "
                     "not in the policy.", [record.source], step.id)
            return
        if not step.signer.names:
            return  # its signature finding says why
        if not set(rule.signed_by) & set(step.signer.names):
            self.add("error", "wrong-signer", f"{record.source}: step {record.step!r} is "
                     f"signed by {', '.join(step.signer.names)}, but the policy requires "
                     f"{' or '.join(rule.signed_by)}.", [record.source], step.id)
            return
        present.add(record.step)
        for earlier in rule.after:
            if earlier not in ancestors:
                self.add("error", "order", f"{record.source}: step {record.step!r} must come "
                         f"after {earlier!r}, but none of its materials derives from an attested "
                         f"{earlier!r} step.", [record.source], step.id)

    def check_materials(self) -> None:
        """Every material nobody produced is a source. With a policy, the evaluation says which
        are pinned, allowed unpinned or unaccounted; without one, every such file is unpinned."""
        unpinned: dict[str, list[StepNode]] = {}
        if self.evaluation is not None:
            self._sources_from_judgement(self.evaluation, unpinned)
        else:
            for step in self.report.steps:
                covered: set[str] = set()
                materials = sorted(step.record.materials,
                                   key=lambda m: ("dirHash" not in m["digest"], m["name"]))
                for material in materials:
                    name, digest = material["name"], material["digest"]
                    if any(parent in covered for parent in _parents(name)):
                        continue
                    producers = [p for p in self._producers_of(digest) if p is not step]
                    if any(p.trusted for p in producers):
                        if "dirHash" in digest:
                            covered.add(name)
                        continue
                    if "dirHash" not in digest:
                        node = self.report.artifacts[digest_key(digest)]
                        node.source = "unpinned"
                        unpinned.setdefault(node.id, []).append(step)
        self._report_unpinned(unpinned)

    def _sources_from_judgement(self, evaluation: Evaluation,
                                unpinned: dict[str, list[StepNode]]) -> None:
        """Mark source artifacts as the evaluation accounted for them."""
        by_payload = {s.record.statement.payload_sha256: s for s in self.report.steps}
        for judged in evaluation.steps:
            step = by_payload.get(judged.payload_sha256)
            if step is None:
                continue
            for link in judged.links:
                if link.source is None or not link.via_source:
                    continue
                node = self.report.artifacts[digest_key(link.digest)]
                node.source = "unpinned" if link.source.rule.unpinned else "pinned"
                if link.source.rule.unpinned:
                    unpinned.setdefault(node.id, []).append(step)
            for link in judged.links:
                if link.unaccounted is not None:
                    node = self.report.artifacts.get(digest_key(link.digest))
                    if node is not None:
                        node.source = "unaccounted"

    def _report_unpinned(self, unpinned: dict[str, list[StepNode]]) -> None:
        by_id = {a.id: a for a in self.report.artifacts.values()}
        for artifact_id, consumers in unpinned.items():
            artifact = by_id[artifact_id]
            users = sorted({s.record.step for s in consumers})
            allowed = "allowed by the policy" if self.policy else "no policy pins it"
            files = sorted({s.record.source for s in consumers})
            self.add("info", "unpinned-source", f"{', '.join(sorted(artifact.names))}: unpinned "
                     f"source ({allowed}), used by {len(files)} attestation(s) of step"
                     f"{'s' if len(users) > 1 else ''} {', '.join(users)}.", files[:FILES_KEPT],
                     artifact_id)

    def check_conflicts(self) -> None:
        claims: dict[tuple[str, str], dict[tuple[str, str], list[StepNode]]] = {}
        for step in self.report.steps:
            for product in step.record.products:
                by_digest = claims.setdefault((step.record.step, product["name"]), {})
                by_digest.setdefault(digest_key(product["digest"]), []).append(step)
        for (step_name, product), by_digest in claims.items():
            if len(by_digest) < 2:
                continue
            versions = [f"{alg} {value[:16]}… ({', '.join(s.record.source for s in steps[:3])})"
                        for (alg, value), steps in sorted(by_digest.items())[:5]]
            involved = [s for steps in by_digest.values() for s in steps]
            for step in involved:
                step.status = "error"
            self.add("error", "conflict", f"step {step_name!r} is attested with different "
                     f"digests for {product}: " + "; ".join(versions) + ".",
                     [s.record.source for s in involved][:FILES_KEPT], involved[0].id,
                     {"step": step_name, "product": product})

    def mark_final_and_dangling(self) -> None:
        if self.policy is not None:
            final_names = {s.name for s in self.policy.final_steps()}
            finals = [s for s in self.report.steps if s.record.step in final_names]
        else:
            feeds_another: set[str] = set()
            for artifact in self.report.artifacts.values():
                if any(c not in artifact.producers for c in artifact.consumers):
                    feeds_another.update(artifact.producers)
            finals = [s for s in self.report.steps if s.id not in feeds_another]
        for step in finals:
            step.final = True
            for product in step.record.products:
                node = self.report.artifacts[digest_key(product["digest"])]
                node.final = True
                if self.evaluation is not None and node.verdict is None:
                    verdict = self.evaluation.artifact(node.digest, product["name"])
                    node.verdict = "PASS" if verdict.passed else "FAIL"
                    node.problems = [p.message for p in verdict.problems]
                    node.openness = openness.report(verdict, product["name"],
                                                    self.policy).to_dict()
        for step in self.report.steps:
            self._dangling_products(step)

    def _dangling_products(self, step: StepNode) -> None:
        products = [(p["name"], self.report.artifacts[digest_key(p["digest"])])
                    for p in step.record.products]
        live = {name for name, node in products
                if node.final or any(c != step.id for c in node.consumers)}
        live_ancestors = {parent for name in live for parent in _parents(name)}
        product_dirs = {name for name, node in products if "dirHash" in node.digest}
        live_dirs = live & product_dirs
        for name, node in products:
            if name in live or name in live_ancestors:
                continue
            if any(parent in live_dirs for parent in _parents(name)):
                continue
            self.dangling.add(node.id)
            self.add("warning", "dangling-product", f"{step.record.source}: product {name} of "
                     f"step {step.record.step!r} is consumed by no attested step and is not a "
                     "final artifact.", [step.record.source], step.id, {"artifact": node.id})

    def check_rebuilds(self) -> None:
        from verifier.judgement.quorum import check_claim

        rule = self.policy.rebuild if self.policy is not None else None
        for rebuild in self.report.rebuilds:
            claim = rebuild.claim
            step = self.step_by_payload.get(claim.rebuilt_payload_sha256)
            if step is None:
                self.add("warning", "orphan-rebuild", f"{claim.source}: rebuilds an attestation "
                         f"of step {claim.step!r} (payload sha256 "
                         f"{claim.rebuilt_payload_sha256[:16]}…) that is not among the audited "
                         "ones.", [claim.source], rebuild.id)
                continue
            rebuild.step_node = step.id
            step.rebuilds.append(rebuild.id)
            if "replay" in claim.statement.predicate:
                self._check_replay(rebuild, step)
                continue
            tolerance = rule.match.get(step.record.step) if rule is not None else None
            rebuild.mismatches = [_cleaned_mismatch(m)
                                  for m in check_claim(step.record, claim, tolerance)]
            rebuild.verdict = "mismatched" if rebuild.mismatches else "matched"
            if claim.is_probe:
                rebuild.verdict = "probe"
                who = ", ".join(rebuild.signer.names) or rebuild.signer.claimed
                overrides = " ".join(f"{k}={v}" for k, v in claim.env_overrides)
                outcome = ("; ".join(_mismatch_summary(m) for m in rebuild.mismatches[:5])
                           or "every product reproduced")
                self.add("info", "rebuild-probe", f"{claim.source}: a probe of step "
                         f"{claim.step!r} by {who} with {overrides}, never counted as a match "
                         f"or as dissent: {outcome}.", [claim.source, step.record.source],
                         rebuild.id)
            elif rebuild.mismatches:
                who = ", ".join(rebuild.signer.names) or rebuild.signer.claimed
                self.add("warning", "rebuild-mismatch", f"{claim.source}: the rebuild of step "
                         f"{claim.step!r} by {who} did not reproduce it: "
                         + "; ".join(_mismatch_summary(m) for m in rebuild.mismatches[:5]) + ".",
                         [claim.source, step.record.source], rebuild.id,
                         {"files": rebuild.mismatches[:20],
                          "drift": [{k: scalar(d.get(k)) for k in ("field", "recorded",
                                                                    "current")}
                                    for d in claim.drift[:8]]})
        if self.evaluation is None:
            return
        quorum_of = {n.payload_sha256: n.quorum or n.replay for n in self.evaluation.steps
                     if (n.quorum or n.replay) is not None}
        for step in self.report.steps:
            quorum = quorum_of.get(step.record.statement.payload_sha256)
            if quorum is not None:
                step.quorum = quorum.to_dict()

    def _check_replay(self, rebuild: Any, step: Any) -> None:
        """A segment replay, read against the step's signed log as the judgement reads it
        (verifier.judgement.replay): matched, dissent naming the segments, or nothing."""
        from verifier.formats.checkpoint_log import log_from_predicate
        from verifier.judgement.policy import ReplayRule
        from verifier.judgement.replay import judge_replay_claim

        claim = rebuild.claim
        rule = self.policy.rebuild if self.policy is not None else None
        replay_rule = (rule.replay.get(step.record.step) if rule is not None else None) \
            or ReplayRule(segments=1)
        try:
            log = log_from_predicate(step.record.statement.predicate, step.record.source)
        except InputError:
            log = None
        judged = (judge_replay_claim(claim, log, replay_rule) if log is not None
                  else "the step signs no usable checkpoint log")
        who = ", ".join(rebuild.signer.names) or rebuild.signer.claimed
        if isinstance(judged, str):
            rebuild.verdict = "ignored"
            self.add("warning", "replay-ignored", f"{claim.source}: the segment replay of step "
                     f"{claim.step!r} by {who} counts for nothing: {judged}.",
                     [claim.source, step.record.source], rebuild.id)
            return
        rebuild.mismatches = [{"name": d["name"], "verdict": d["verdict"]}
                              for d in judged.dissent]
        rebuild.verdict = "mismatched" if judged.dissent else "matched"
        if judged.dissent:
            self.add("warning", "replay-dissent", f"{claim.source}: the segment replay of step "
                     f"{claim.step!r} by {who} did not reproduce "
                     + "; ".join(f"{d['name']} ({d['verdict']})" for d in judged.dissent[:5])
                     + ".", [claim.source, step.record.source], rebuild.id)

    def check_environments(self) -> None:
        from verifier.judgement.hermetic import step_findings

        for step in self.report.steps:
            for severity, sentence in environment_risks(step.record):
                self.add(severity, "environment-risk", f"{step.record.source}: step "
                         f"{step.record.step!r} {sentence}", [step.record.source], step.id)
            if self.evaluation is None:  # no policy: what the step recorded, reported
                for severity, sentence in step_findings(None, step.record):
                    self.add(severity, "hermetic", sentence, [step.record.source], step.id)
        if self.evaluation is not None:
            node_of = {s.record.statement.payload_sha256: s.id for s in self.report.steps}
            for judged in self.evaluation.steps:
                for warning in judged.warnings:
                    self.add("warning", warning.kind, warning.message, [warning.file],
                             node_of.get(judged.payload_sha256))

    def statuses(self) -> None:
        """Each node takes the colour of its worst finding; unchecked steps stay grey."""
        rank = {"ok": 0, "info": 0, "unchecked": 1, "warning": 2, "error": 3}
        worst: dict[str, str] = {}
        for finding in self.report.findings:
            if finding.node is not None and rank[finding.severity] > rank.get(
                    worst.get(finding.node, "ok"), 0):
                worst[finding.node] = finding.severity
        base = "ok" if self.policy is not None else "unchecked"
        for step in self.report.steps:
            status = worst.get(step.id, base)
            step.status = "error" if step.status == "error" else (
                status if status != "info" else base)
        for artifact in self.report.artifacts.values():
            status = worst.get(artifact.id, "ok")
            artifact.status = status if status != "info" else "ok"
            if artifact.id in self.dangling and artifact.status == "ok":
                artifact.status = "warning"
            if artifact.source == "unaccounted":
                artifact.status = "error"
        for rebuild in self.report.rebuilds:
            status = worst.get(rebuild.id, base)
            rebuild.status = status if status != "info" else base

    def layers(self) -> None:
        by_id = {s.id: s for s in self.report.steps}
        for artifact in self.report.artifacts.values():
            if artifact.producers:
                artifact.layer = 2 * max(by_id[p].layer for p in artifact.producers) + 2
        for step in self.report.steps:
            step.layer = 2 * step.layer + 1

    def run(self, directories: list[Path]) -> AuditReport:
        self.load(directories)
        parents = self.link()
        ordered = self.order(parents)
        self.check_policy(ordered, parents)
        self.check_materials()
        self.check_conflicts()
        self.mark_final_and_dangling()
        self.check_rebuilds()
        self.check_environments()
        self.layers()
        self.report.steps = ordered
        self.statuses()
        order = {s: i for i, s in enumerate(SEVERITIES)}
        self.report.findings.sort(key=lambda f: order[f.severity])
        return self.report


def _unreadable(path: Path, error: BaseException) -> str:
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, RecursionError):
        return f"{path}: JSON is nested too deeply to be an attestation."
    return f"{path}: is not a usable attestation ({short_text(str(error), 200)})."


def _cleaned_mismatch(mismatch: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"name": short_text(mismatch.get("name")),
                             "verdict": short_text(mismatch.get("verdict"), 40)}
    for key in ("reason", "changed_tensors", "first_difference_offset"):
        if key in mismatch:
            found[key] = scalar(mismatch[key])
    tensors = mismatch.get("tensors")
    if isinstance(tensors, list):
        found["tensors"] = [{k: scalar(t.get(k)) for k in ("name", "status", "max_abs_diff",
                                                            "rel_l2")}
                            for t in tensors[:5] if isinstance(t, dict)]
    return found


def _mismatch_summary(mismatch: dict[str, Any]) -> str:
    text = f"{mismatch['name']} {mismatch['verdict']}"
    tensors = [t for t in mismatch.get("tensors", []) if isinstance(t.get("max_abs_diff"),
                                                                      int | float)]
    if tensors:
        worst = max(tensors, key=lambda t: t["max_abs_diff"])
        count = mismatch.get("changed_tensors", len(tensors))
        text += (f", {count} tensor{'s' if count != 1 else ''} changed, max abs diff "
                 f"{worst['max_abs_diff']:.3g} ({worst['name']})")
    elif mismatch.get("first_difference_offset") is not None:
        text += f", first difference at byte {mismatch['first_difference_offset']}"
    elif mismatch.get("reason"):
        text += f" ({mismatch['reason']})"
    return text


def audit(directories: list[Path], policy: Policy | None = None, *,
          keyless_check: KeylessCheck | None = None, today: dt.date | None = None
          ) -> AuditReport:
    """Audit every attestation under the directories (files and JSON-lines files too)."""
    return _Auditor(directories, policy, keyless_check, today).run(directories)
