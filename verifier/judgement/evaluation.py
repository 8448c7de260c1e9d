"""The one judgement: every attestation, as a graph, evaluated against a policy.

`evaluate()` admits each bundle by who signed it, parses it once, links each material to the
trusted step attestations that produced its digest (or to a source rule), and judges every step
attestation on its own: signer, policy step, names, source rules, order, rebuild quorum.
`Evaluation.artifact()` then answers for one artifact. `verify-model` renders that answer,
`audit` renders every node and every final artifact, the VSA the answer's verdict; none of them
applies a rule of its own.

An artifact passes when some derivation of it holds: a trusted attestation of a final step that
has it as a subject, every material of every step in the derivation accounted for by a trusted
attestation that is itself valid (or by a source rule), every step in the policy present, and
every `after` satisfied by the steps its inputs derive from. Adding an attestation signed by no
policy signer changes nothing (it is not admitted); removing a signature, a source or a matching
rebuild only removes derivations, so it never turns FAIL into PASS.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats.digest import dir_hash, usable_digests
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle
from verifier.formats.statement import (
    REBUILD_PREDICATE_TYPE,
    Statement,
    StepRecord,
    as_step,
    parse_statement,
)
from verifier.judgement import declarations, spdx
from verifier.judgement.graph import (  # re-exported: the reports read them from here
    CAUSES as CAUSES,
)
from verifier.judgement.graph import (
    CONSEQUENCES as CONSEQUENCES,
)
from verifier.judgement.graph import (
    ArtifactVerdict as ArtifactVerdict,
)
from verifier.judgement.graph import (
    MaterialLink as MaterialLink,
)
from verifier.judgement.graph import (
    Problem as Problem,
)
from verifier.judgement.graph import (
    RebuildNode as RebuildNode,
)
from verifier.judgement.graph import (
    SourceUse as SourceUse,
)
from verifier.judgement.graph import (
    StepNode as StepNode,
)
from verifier.judgement.graph import (
    order_by_cause as order_by_cause,
)
from verifier.judgement.hermetic import step_findings
from verifier.judgement.policy import Policy, SourceRule
from verifier.judgement.quorum import RebuildClaim, StepQuorum, as_rebuild, judge_rebuilds
from verifier.judgement.trust import Attribution, TrustedSigners, merged

if TYPE_CHECKING:
    from verifier.neighbours.intoto_links import ClassicLink

# The ancestor-name sets kept per step attestation. Each is a set of policy step names that one
# derivation of the attestation goes through; only maximal ones are kept. A policy of k steps
# has at most C(k, k/2) of them, and honest graphs have one; past this bound the rest are
# dropped, which can only turn a PASS into a FAIL.
MAX_DERIVATIONS = 64
# Rebuilds of other attestations of a step, reported beside it (bounded: they count for nothing).
QUORUM_NOTES = 50
@dataclass
class Evaluation:
    policy: Policy
    steps: list[StepNode]  # every step attestation, in dependency order (cycles last)
    rebuilds: list[RebuildNode]
    notes: list[str]
    expired: Problem | None
    unverified_claims: dict[tuple[str, str], list[str]]
    _producers: dict[tuple[str, str], list[StepNode]]
    _subjects: dict[tuple[str, str], list[StepNode]]
    # Steps that passed an input through unchanged, by the product's digest: they did not
    # make it, so they are no producers of it; see `copiers`.
    _copiers: dict[tuple[str, str], list[StepNode]] = dataclasses.field(default_factory=dict)

    def producers(self, digest: dict[str, str]) -> list[StepNode]:
        """Trusted step attestations with a subject matching this digest set, on a digest the
        policy accepts and agreeing on every accepted one they share."""
        return _producers(self._producers, self.policy, digest)

    def copiers(self, digest: dict[str, str], name: str) -> list[StepNode]:
        """Trusted steps that copied an input of theirs, unchanged, to a product of this name
        and digest set. The name is what orders copies of one content: a step copying
        raw.csv to data.csv is no source of another step's raw.csv."""
        return [step for step in _producers(self._copiers, self.policy, digest)
                if any(p["name"] == name and _agrees(p["digest"], digest, self.policy)
                       for p in step.record.products)]

    def unverified_producers(self, digest: dict[str, str]) -> list[str]:
        """Files of unadmitted bundles claiming this digest as a subject (for messages)."""
        found: list[str] = []
        for pair in sorted(digest.items()):
            found.extend(s for s in self.unverified_claims.get(pair, []) if s not in found)
        return found

    @property
    def missing_steps(self) -> list[str]:
        """Policy steps with no trusted attestation signed as the policy requires."""
        present = {s.record.step for s in self.steps if s.trusted and _signed_as_required(
            self.policy, s)}
        return [r.name for r in self.policy.steps if r.name not in present]

    def final_steps(self, digest: dict[str, str]) -> list[StepNode]:
        final_names = {s.name for s in self.policy.final_steps()}
        attesting = _producers(self._subjects, self.policy, digest)
        return sorted((s for s in attesting if s.record.step in final_names),
                      key=lambda s: (not s.valid, s.source))

    def _rank(self, step: StepNode) -> tuple[int, str]:
        names = [r.name for r in self.policy.steps]
        name = step.record.step
        return (names.index(name) if name in names else len(names), step.source)

    def _quorums(self, chain: list[StepNode]) -> list[StepQuorum]:
        return [q for s in sorted(chain, key=self._rank) for q in (s.quorum, s.replay)
                if q is not None]

    def artifact(self, digest: dict[str, str], label: str) -> ArtifactVerdict:
        """The verdict for the artifact with this digest (`label` names it in sentences)."""
        finals = self.final_steps(digest)
        problems: list[Problem] = [self.expired] if self.expired else []
        considered = _closure(finals)
        wanted = frozenset(r.name for r in self.policy.steps)
        for final in finals:
            for names, choices in final.derivations.items():
                if names >= wanted:
                    chain = _unfold(final, names, choices)
                    return ArtifactVerdict(
                        digest, finals, chain, _sources_of(chain), self._quorums(chain),
                        problems, considered)
        found = [p for node in sorted(considered, key=self._rank) for p in node.problems]
        # A step that fails only because what it consumes failed is a consequence: the
        # causes are enough, unless there is nothing else to say.
        causes = [p for p in found if p.kind not in CONSEQUENCES]
        problems.extend(causes or found)
        # The steps the best derivation goes through; with none, every step on the way.
        best = max((names for f in finals for names in f.derivations), key=len,
                   default=frozenset(s.record.step for s in considered))
        for name in sorted(wanted - best, key=[r.name for r in self.policy.steps].index):
            problems.append(Problem(label, (
                f"{label}: required step {name!r} is missing from its chain (no "
                "attestation of it, signed as the policy requires, produced these inputs)."
            ), "missing-step"))
        if not problems:  # no derivation, and every node on the way says nothing: say why
            problems.append(Problem(label, f"{label}: no chain of valid attestations leads to "
                                           "it.", "no-derivation"))
        chain = considered
        return ArtifactVerdict(digest, finals, chain, _sources_of(chain),
                               self._quorums(chain), order_by_cause(problems), considered)


def evaluate(policy: Policy, bundles: Iterable[Bundle], signers: TrustedSigners,
             today: dt.date | None = None, links: Iterable[ClassicLink] = ()) -> Evaluation:
    """Judge every attestation among the bundles (and in-toto's own links) against the
    policy."""
    admitted = _Admission(signers)
    for bundle in bundles:
        admitted.admit(bundle)
    for link in links:
        admitted.admit_link(link)
    steps = list(admitted.steps.values())
    rebuilds = list(admitted.rebuilds.values())
    producers: dict[tuple[str, str], list[StepNode]] = {}
    subjects: dict[tuple[str, str], list[StepNode]] = {}
    copiers: dict[tuple[str, str], list[StepNode]] = {}
    for step in steps:
        if not step.trusted:
            continue
        consumed = {pair for m in step.record.materials for pair in m["digest"].items()}
        for product in step.record.products:
            # A copy of an input was not made here: the step is its copier, not its producer.
            copied = any(pair in consumed for pair in product["digest"].items())
            for pair in product["digest"].items():
                subjects.setdefault(pair, []).append(step)
                (copiers if copied else producers).setdefault(pair, []).append(step)
    expired = None
    if policy.is_expired(today):
        expired = Problem(str(policy.path), f"{policy.path}: the policy expired on "
                                            f"{policy.expires}.", "expired-policy")
    evaluation = Evaluation(policy, steps, rebuilds, admitted.notes, expired,
                            admitted.unverified_claims, producers, subjects,
                            copiers)
    claims: dict[str, list[RebuildClaim]] = {}
    by_step: dict[str, list[RebuildClaim]] = {}  # for telling who rebuilt another attestation
    for rebuild in rebuilds:
        # Every copy's verified signers, not just the first file's.
        rebuild.claim = dataclasses.replace(rebuild.claim, attribution=rebuild.attribution)
        if rebuild.trusted:
            claims.setdefault(rebuild.claim.rebuilt_payload_sha256, []).append(rebuild.claim)
            by_step.setdefault(rebuild.claim.step, []).append(rebuild.claim)
    uses = _Uses([s for s in steps if s.trusted])
    for step in steps:
        if step.trusted:
            others = [c for c in by_step.get(step.record.step, [])[:QUORUM_NOTES]
                      if c.rebuilt_payload_sha256 != step.payload_sha256]
            _judge_locally(evaluation, step, claims.get(step.payload_sha256, []) + others,
                           uses.consumed(step))
        else:
            step.problems.append(_signature_problem(step.source, repr(step.record.step),
                                                    step.status, step.files))
    for rebuild in rebuilds:
        if not rebuild.trusted:
            rebuild.problems.append(_signature_problem(
                rebuild.claim.source, repr(f"rebuild of {rebuild.claim.step}"), rebuild.status,
                rebuild.files))
    evaluation.steps = _derive(evaluation)
    return evaluation


# -- admission --------------------------------------------------------------------------------


class _Admission:
    """Bundles to nodes, one per signed payload; a replayed copy costs one hash, not a parse."""

    def __init__(self, signers: TrustedSigners) -> None:
        self.signers = signers
        self.steps: dict[str, StepNode] = {}
        self.rebuilds: dict[str, RebuildNode] = {}
        self.notes: list[str] = []
        self.unverified_claims: dict[tuple[str, str], list[str]] = {}
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...]], StepNode | RebuildNode | None]
        self._seen = {}

    def admit(self, bundle: Bundle) -> None:
        if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
            self.notes.append(f"ignored {bundle.source}: payload type "
                              f"{bundle.payload_type!r} is not in-toto.")
            return
        payload = hashlib.sha256(bundle.payload).hexdigest()
        copy = (payload, tuple(sorted((s.keyid or "", s.sig.hex()) for s in bundle.signatures)))
        if copy in self._seen:  # the same payload and signatures: nothing new to check
            node = self._seen[copy]
            if node is not None and len(node.files) < 1000:
                node.files.append(bundle.source)
            return
        attribution = self.signers.attribute(bundle)
        try:
            statement = parse_statement(bundle.payload, bundle.source)
        except InputError as error:
            self.notes.append(f"ignored {error}")
            self._seen[copy] = None
            return
        if not attribution.names:
            claimed = claimed_signer(bundle)
            self.notes.append(f"ignored {bundle.source}: signed by no signer the policy names"
                              f"{f' ({claimed})' if claimed else ''}.")
            self._remember_unverified(
                statement, f"{bundle.source} ({claimed})" if claimed else bundle.source)
        try:
            node = self._node(statement, attribution, bundle)
        except InputError as error:
            self.notes.append(f"ignored {error}")
            node = None
        self._seen[copy] = node

    def admit_link(self, link: ClassicLink) -> None:
        """An in-toto link (Metablock or DSSE) is a step attestation signed over its own bytes;
        only key signers can have signed it."""
        from verifier.neighbours.intoto_links import link_as_step

        try:
            record = link_as_step(link)
        except InputError as error:
            self.notes.append(f"ignored {error}")
            return
        attribution = self.signers.attribute_message(link.message,
                                                     [sig for _, sig in link.signatures])
        if not attribution.names:
            self.notes.append(f"ignored {link.source}: signed by no signer the policy names.")
        key = record.statement.payload_sha256
        existing = self.steps.get(key)
        if existing is not None:
            existing.files.append(link.source)
            _merge(existing, attribution, "unknown-signer")
            return
        self.steps[key] = StepNode(record, attribution, [link.source],
                                   "verified" if attribution.names else "unknown-signer")

    def _node(self, statement: Statement, attribution: Attribution, bundle: Bundle
              ) -> StepNode | RebuildNode | None:
        key = statement.payload_sha256
        status = "verified" if attribution.names else _status(bundle, self.signers)
        if statement.predicate_type == REBUILD_PREDICATE_TYPE:
            existing_rebuild = self.rebuilds.get(key)
            if existing_rebuild is None:
                node = RebuildNode(as_rebuild(statement, attribution), attribution,
                                   [bundle.source], status)
                self.rebuilds[key] = node
                return node
            existing_rebuild.files.append(bundle.source)
            _merge(existing_rebuild, attribution, status)
            return existing_rebuild
        existing = self.steps.get(key)
        if existing is None:
            step = StepNode(as_step(statement), attribution, [bundle.source], status)
            self.steps[key] = step
            return step
        existing.files.append(bundle.source)
        _merge(existing, attribution, status)
        return existing

    def _remember_unverified(self, statement: Statement, source: str) -> None:
        for subject in statement.subjects:
            for pair in subject["digest"].items():
                claimed = self.unverified_claims.setdefault(pair, [])
                if source not in claimed and len(claimed) < 20:
                    claimed.append(source)


def claimed_signer(bundle: Bundle) -> str:
    """What a bundle no policy signer verifies says about who signed it, marked unverified: the
    key id it names (so a reader can find the key), never a reason to trust it."""
    if bundle.is_keyless:
        return ""
    hints = sorted({h for h in (bundle.public_key_hint, *(s.keyid for s in bundle.signatures))
                    if isinstance(h, str) and h})
    if not hints:
        return "it names no key id"
    return f"it names key id {', '.join(h[:64] for h in hints[:3])}, unverified"


def _merge(node: StepNode | RebuildNode, attribution: Attribution, status: str) -> None:
    """Another copy of a payload: its verified signers join the node's."""
    node.attribution = merged(node.attribution, attribution)
    if node.attribution.names:
        node.status = "verified"
    elif node.status == "unknown-signer":
        node.status = status


def _signature_problem(source: str, what: str, status: str, files: list[str]) -> Problem:
    sentences = {
        "invalid-signature": (f"{source}: the signature of {what} does not verify under the "
                              "policy key it names: altered after signing, or forged."),
        "unknown-signer": f"{source}: {what} is signed by no signer the policy names.",
        "unverifiable": (f"{source}: {what} is a keyless bundle that no keyless identity in "
                         "the policy verifies."),
    }
    kind = "signer-not-in-policy" if status == "unknown-signer" else status
    return Problem(source, sentences.get(status, sentences["unknown-signer"]), kind)


def _status(bundle: Bundle, signers: TrustedSigners) -> str:
    """Why no policy signer verifies the bundle, as far as the bundle itself can tell."""
    if bundle.is_keyless:
        return "unverifiable"
    hints = {s.keyid for s in bundle.signatures} | {bundle.public_key_hint}
    return "invalid-signature" if hints & signers.key_hints else "unknown-signer"


# -- judging one step attestation ------------------------------------------------------------


def _signed_as_required(policy: Policy, step: StepNode) -> bool:
    rule = policy.step(step.record.step)
    return rule is not None and bool(set(rule.signed_by) & set(step.attribution.names))


def unsafe_name(name: str) -> bool:
    """A descriptor name that would leave the workspace (or is not a plain relative path)."""
    return (name.startswith("/") or ".." in name.split("/") or "\\" in name or "\x00" in name
            or name == "")


class _Uses:
    """Which products of a step other trusted steps use as materials: by a digest they share,
    or by name when one is inside the other (a file of a directory material, or a directory
    product of which a file is a material). Such a product's bytes go on into what is built.
    Each question costs a few lookups, never a walk over other steps' materials."""

    def __init__(self, steps: list[StepNode]) -> None:
        self.by_digest: dict[tuple[str, str], set[str]] = {}
        by_name: dict[str, set[str]] = {}
        for step in steps:
            for material in step.record.materials:
                for pair in material["digest"].items():
                    self.by_digest.setdefault(pair, set()).add(step.payload_sha256)
                by_name.setdefault(material["name"], set()).add(step.payload_sha256)
        self.by_name = by_name
        self.names = sorted(by_name)
        # The one step using each name ("" when several do), and the next index whose user
        # differs: whether a range of names has a user other than a given step is O(1).
        self.user = [next(iter(by_name[n])) if len(by_name[n]) == 1 else "" for n in self.names]
        self.next_other = [len(self.names)] * len(self.names)
        for index in range(len(self.names) - 2, -1, -1):
            self.next_other[index] = (index + 1 if self.user[index + 1] != self.user[index]
                                      else self.next_other[index + 1])

    def consumed(self, step: StepNode) -> frozenset[str]:
        own = step.payload_sha256

        def other(users: set[str] | None) -> bool:
            return bool(users) and (len(users) > 1 or own not in users)

        found = set()
        for product in step.record.products:
            name = product["name"]
            if (any(other(self.by_digest.get(p)) for p in product["digest"].items())
                    or other(self.by_name.get(name))
                    or any(other(self.by_name.get(d)) for d in _parents_of(name))
                    or ("dirHash" in product["digest"] and self._inside(name, own))):
                found.add(name)
        return frozenset(found)

    def _inside(self, directory: str, own: str) -> bool:
        """Whether a step other than `own` uses a name inside `directory`."""
        start = bisect.bisect_left(self.names, f"{directory}/")
        end = bisect.bisect_left(self.names, f"{directory}0")  # '0' follows '/'
        if start >= end:
            return False
        if self.user[start] != own:
            return True
        return self.next_other[start] < end


def _judge_locally(evaluation: Evaluation, step: StepNode, claims: list[RebuildClaim],
                   consumed: frozenset[str] = frozenset()) -> None:
    """The rules one step attestation meets or not on its own: all but order, which depends
    on what its inputs derive from."""
    policy = evaluation.policy
    record = step.record
    rule = policy.step(record.step)
    if rule is None:
        step.problems.append(Problem(record.source, (
            f"{record.source}: step {record.step!r} is in the chain but not in the policy."
        ), "step-not-in-policy"))
    elif not _signed_as_required(policy, step):
        step.problems.append(Problem(record.source, (
            f"{record.source}: step {record.step!r} is signed by "
            f"{', '.join(step.attribution.names)}, but the policy requires "
            f"{' or '.join(rule.signed_by)}."
        ), "wrong-signer"))
    for descriptor in (*record.materials, *record.products):
        if unsafe_name(descriptor["name"]):
            step.problems.append(Problem(record.source, (
                f"{record.source}: step {record.step!r} names {descriptor['name']!r}, a path "
                "that leaves the workspace; it cannot be checked or rebuilt."
            ), "unsafe-name"))
    for severity, sentence in step_findings(rule, record):
        (step.problems if severity == "error" else step.warnings).append(
            Problem(record.source, sentence, "hermetic"))
    _judge_declarations(policy, step)
    _link_materials(evaluation, step)
    if policy.rebuild is not None and record.step in policy.rebuild.steps:
        step.quorum = judge_rebuilds(record, step.attribution, claims, policy, consumed)
        step.problems.extend(Problem(record.source, f, "quorum-shortfall")
                             for f in step.quorum.failures)
    if policy.rebuild is not None and record.step in policy.rebuild.replay:
        from verifier.judgement.replay import judge_replays

        step.replay = judge_replays(record, step.attribution, claims, policy,
                                    policy.rebuild.replay[record.step])
        step.problems.extend(Problem(record.source, f, "quorum-shortfall")
                             for f in step.replay.failures)


def _judge_declarations(policy: Policy, step: StepNode) -> None:
    """What the signer declared about the step's files (verifier.judgement.declarations):
    each must name a file of the step, and every licence expression must parse and, under a
    `licenses` rule,
    offer an alternative the policy accepts."""
    record = step.record
    found = declarations.read(record)
    step.problems.extend(Problem(record.source, p, "declaration") for p in found.problems)
    for declared in found.licenses:
        descriptor = next((d for d in (*record.materials, *record.products)
                           if d["name"] == declared.name), None)
        digest = tuple(sorted(descriptor["digest"].items())) if descriptor else ()
        try:
            expression = spdx.parse(declared.value)
        except InputError as error:
            step.problems.append(Problem(record.source, (
                f"{record.source}: step {record.step!r} declares a licence for {declared.name} "
                f"that is not an SPDX expression ({error})"), "license", digest))
            continue
        if policy.licenses is None:
            continue
        acceptable, reason = spdx.judge(expression, policy.licenses.allow, policy.licenses.deny)
        if not acceptable:
            step.problems.append(Problem(record.source, (
                f"{record.source}: step {record.step!r} declares {declared.name} "
                f"({declared.role}) under {declared.value!r}, which the policy does not accept: "
                f"{reason}."), "license", digest))


def _parents_of(name: str) -> Iterable[str]:
    end = name.rfind("/")
    while end > 0:
        yield name[:end]
        end = name.rfind("/", 0, end)


def _link_materials(evaluation: Evaluation, step: StepNode) -> None:
    """Link each material to its trusted producers and to the source rule that accepts it;
    which of them holds is decided with the producers' own validity (`_derive`)."""
    policy = evaluation.policy
    record = step.record
    by_name = {m["name"]: m for m in record.materials}
    inside = _DirectoryIndex(record.materials)
    # Directories proven as a whole (produced, or accepted by a source rule) cover their files,
    # except a file a stricter rule names: one the policy pins, or one under a git-commit rule,
    # is always judged by that rule (a pattern on its directory never relaxes it). A directory
    # proven only by its files covers none of them: each is judged as a material of its own.
    covered: set[str] = set()
    pinned_names = {r.name for r in policy.sources
                    if r.name is not None and (r.sha256 is not None or r.dir_hash is not None)}
    commit_rules = [r for r in policy.sources if r.git_commit is not None]
    materials = sorted(record.materials, key=lambda m: ("dirHash" not in m["digest"], m["name"]))
    for material in materials:
        name, digest = material["name"], material["digest"]
        is_dir = "dirHash" in digest
        judged_alone = name in pinned_names or any(r.matches_name(name) for r in commit_rules)
        if not judged_alone and any(p in covered for p in _parents_of(name)):
            continue
        link = MaterialLink(name, digest)
        step.links.append(link)
        link.producers = [p for p in evaluation.producers(digest) if p is not step]
        rule, why_not = match_source(policy, record, material)
        if not link.producers and rule is None:
            # A copy nobody made is accounted for by the step that copied it under this name:
            # that step is then in the derivation, and its own input has to be accounted for.
            link.producers = [p for p in evaluation.copiers(digest, name) if p is not step]
        if rule is not None:
            link.source = SourceUse(name, digest, record.step, rule)
            if is_dir and rule.dir_hash is None:
                link.source_problems = _check_directory_files(step, name, digest, by_name,
                                                              inside, policy)
        elif is_dir and not link.producers:
            # Neither produced nor a source as a whole: its files are judged one by one, which
            # proves the directory only if they are all there.
            link.by_files = True
            link.source_problems = _check_directory_files(step, name, digest, by_name, inside,
                                                          policy)
        if is_dir and (link.producers or (link.accepted_as_source and not link.by_files)):
            covered.add(name)
        if link.producers or link.source is not None or link.by_files:
            continue
        unverified = evaluation.unverified_producers(digest)
        if why_not is None and unverified:
            why_not = (
                f"material {name} of step {record.step!r} ({record.source}) is a product only "
                f"of {', '.join(unverified)}, whose signature verifies under no key the policy "
                "names (an unknown signer, or altered after signing)."
            )
        link.unaccounted = Problem(record.source, why_not or (
            f"material {name} of step {record.step!r} ({record.source}) is neither a product "
            f"of an attested earlier step nor a source in the policy."
        ), "unaccounted-material", tuple(sorted(digest.items())),
            "signer-not-in-policy" if unverified else None)


class _DirectoryIndex:
    """The file materials under each directory, built once per step on first use, so that a
    step with many directory materials costs time linear in its materials, not quadratic."""

    def __init__(self, materials: Iterable[dict[str, Any]]) -> None:
        self._materials = materials
        self._files: dict[str, dict[str, Any]] | None = None

    def files(self, directory: str) -> dict[str, Any]:
        """{path relative to the directory: its sha256 (None when it has none)}."""
        if self._files is None:
            self._files = {}
            for material in self._materials:
                if "dirHash" in material["digest"]:
                    continue
                name = material["name"]
                for parent in _parents_of(name):
                    self._files.setdefault(parent, {})[name[len(parent) + 1:]] = (
                        material["digest"].get("sha256"))
        return self._files.get(directory, {})


def _check_directory_files(step: StepNode, name: str, digest: dict[str, str],
                           by_name: dict[str, dict[str, Any]], inside: _DirectoryIndex,
                           policy: Policy) -> list[Problem]:
    """What a directory material accepted without a pin on the whole leaves unproven: it must
    list its files, and they must add up to its dirHash; every pinned source inside it is then
    judged by its own pin (as a material of its own), and a pinned file it does not list cannot
    be checked."""
    record = step.record
    prefix = f"{name}/"
    problems: list[Problem] = []
    files = inside.files(name)
    for rule in policy.sources:
        if rule.name is not None and rule.name.startswith(prefix) and rule.name not in by_name:
            problems.append(Problem(record.source, (
                f"material {name} of step {record.step!r} ({record.source}) is a directory "
                f"holding the pinned source {rule.name}, but the attestation carries no digest "
                "for that file, so its pin cannot be checked."
            ), "unproven-pin"))
    if (not all(isinstance(v, str) for v in files.values())
            or dir_hash({k: str(v) for k, v in files.items()}) != digest["dirHash"]):
        problems.append(Problem(record.source, (
            f"material {name} of step {record.step!r} ({record.source}) is a directory whose "
            "listed files do not add up to its dirHash, so its contents cannot be checked."
        ), "unproven-directory"))
    return problems


def match_source(policy: Policy, record: StepRecord, material: dict[str, Any]
                 ) -> tuple[SourceRule | None, str | None]:
    """The source rule that accounts for a material, or a sentence saying why none does.

    A name with a pin (sha256 or dirHash) is judged by its pins alone, and a name under a
    git-commit pattern by those patterns alone: an unpinned pattern never relaxes a pin."""
    name = material["name"]
    digest = material["digest"]
    matching = [r for r in policy.sources if r.matches_name(name)]
    pins = [r for r in matching if r.sha256 is not None or r.dir_hash is not None]
    if pins:
        for rule in pins:
            if (rule.sha256 is not None and digest.get("sha256") == rule.sha256) or (
                    rule.dir_hash is not None and digest.get("dirHash") == rule.dir_hash):
                return rule, None
        pinned = pins[0].sha256 or pins[0].dir_hash or ""
        algorithm = "sha256" if pins[0].sha256 is not None else "dirHash"
        return None, (
            f"material {name} of step {record.step!r} ({record.source}) has {algorithm} "
            f"{str(digest.get(algorithm))[:16]}…, but the policy pins {pinned[:16]}…."
        )
    commits = [r for r in matching if r.git_commit is not None]
    if commits:
        git = record.environment.get("git")
        git = git if isinstance(git, dict) else {}
        commit = git.get("commit") if isinstance(git.get("commit"), str) else ""
        for rule in commits:
            assert rule.git_commit is not None
            if commit and commit.startswith(rule.git_commit) and git.get("dirty") is False:
                return rule, None
        return None, (
            f"material {name} of step {record.step!r} ({record.source}) must come from git "
            f"commit {commits[0].git_commit} on a clean tree, but the step recorded "
            f"{commit or 'no commit'}{' (dirty)' if git.get('dirty') else ''}."
        )
    unpinned = next((r for r in matching if r.unpinned), None)
    return unpinned, None


# -- derivations ---------------------------------------------------------------------------


def _producers(index: dict[tuple[str, str], list[StepNode]], policy: Policy,
               digest: dict[str, str]) -> list[StepNode]:
    usable = usable_digests(digest, policy.accept_digests)
    found: dict[int, StepNode] = {}
    for pair in sorted(usable.items()):
        for candidate in index.get(pair, []):
            if id(candidate) not in found and any(
                    _agrees(subject["digest"], usable, policy)
                    for subject in candidate.record.products):
                found[id(candidate)] = candidate
    return sorted(found.values(), key=lambda s: s.source)


def _agrees(subject: dict[str, str], digest: dict[str, str], policy: Policy) -> bool:
    """Whether two digest sets agree on every usable algorithm they share (and share one)."""
    usable = usable_digests(digest, policy.accept_digests)
    shared = [a for a in usable if a in subject]
    return bool(shared) and all(subject[a] == usable[a] for a in shared)


def _order(steps: list[StepNode]) -> list[StepNode]:
    """Trusted steps in dependency order (Kahn), then the untrusted; steps on a cycle last."""
    trusted = [s for s in steps if s.trusted]
    waiting = {id(s): 0 for s in trusted}
    children: dict[int, list[StepNode]] = {id(s): [] for s in trusted}
    for step in trusted:
        parents = {id(p): p for link in step.links for p in link.producers}
        waiting[id(step)] = len(parents)
        for parent in parents.values():
            children[id(parent)].append(step)
    ready = deque(s for s in trusted if waiting[id(s)] == 0)
    ordered: list[StepNode] = []
    while ready:
        step = ready.popleft()
        ordered.append(step)
        for child in children[id(step)]:
            waiting[id(child)] -= 1
            if waiting[id(child)] == 0:
                ready.append(child)
    placed = {id(s) for s in ordered}
    cycle = [s for s in trusted if id(s) not in placed]
    for step in cycle:
        step.on_cycle = True
        step.problems.append(Problem(step.source, (
            f"{step.source}: step {step.record.step!r} consumes, through its inputs, its own "
            "products (a cycle), so it has no build order."
        ), "cycle"))
    return ordered + cycle + [s for s in steps if not s.trusted]


def _maximal(sets: dict[frozenset[str], Any]) -> dict[frozenset[str], Any]:
    kept: dict[frozenset[str], Any] = {}
    for names in sorted(sets, key=lambda s: (-len(s), sorted(s))):
        if not any(names <= other for other in kept):
            kept[names] = sets[names]
        if len(kept) >= MAX_DERIVATIONS:
            break
    return kept


def _derive(evaluation: Evaluation) -> list[StepNode]:
    """Each trusted step's maximal derivations, in dependency order; returns that order."""
    ordered = _order(evaluation.steps)
    policy = evaluation.policy
    for step in ordered:
        if not step.trusted or step.on_cycle:
            continue
        combos: dict[frozenset[str], tuple[tuple[int, StepNode, frozenset[str]], ...]] = {
            frozenset(): ()}
        unresolved: list[MaterialLink] = []
        for index, link in enumerate(step.links):
            options = [(names, producer) for producer in link.producers
                       for names in producer.derivations]
            if not options:
                if not link.accepted_as_source:
                    unresolved.append(link)
                continue  # a source adds no step to the derivation
            combos = _maximal({
                names | option: (*choices, (index, producer, option))
                for names, choices in combos.items() for option, producer in options
            })
        for link in unresolved:
            if link.unaccounted is not None:
                step.problems.append(link.unaccounted)
            step.problems.extend(link.source_problems)
            if link.producers:
                step.problems.append(Problem(step.source, (
                    f"material {link.name} of step {step.record.step!r} ({step.source}) is a "
                    "product only of " + ", ".join(p.source for p in link.producers[:5])
                    + ", which the policy does not accept (see "
                    + ("its" if len(link.producers) == 1 else "their") + " problems)."
                ), "unaccepted-producer"))
        rule = policy.step(step.record.step)
        after = frozenset(rule.after) if rule is not None else frozenset()
        satisfied = {n: c for n, c in combos.items() if after <= n}
        if rule is not None and not satisfied and not unresolved and not step.problems:
            for earlier in sorted(after - max(combos, key=len)):
                step.problems.append(Problem(step.source, (
                    f"{step.source}: step {step.record.step!r} must come after {earlier!r}, "
                    f"but none of its materials derives from an attested {earlier!r} step."
                ), "order"))
        if step.problems:
            continue
        step.derivations = {names | {step.record.step}: choices
                            for names, choices in satisfied.items()}
    return ordered


def _unfold(final: StepNode, names: frozenset[str],
            choices: tuple[tuple[int, StepNode, frozenset[str]], ...]) -> list[StepNode]:
    """The steps of one derivation, from the final step down, each once."""
    chain: dict[int, StepNode] = {id(final): final}
    pending = list(choices)
    while pending:
        _, producer, option = pending.pop()
        if id(producer) not in chain:
            chain[id(producer)] = producer
            pending.extend(producer.derivations.get(option, ()))
    return list(chain.values())


def _closure(finals: list[StepNode]) -> list[StepNode]:
    """Every trusted step attestation an artifact's finals reach through their materials."""
    seen: dict[int, StepNode] = {}
    pending = list(finals)
    while pending:
        step = pending.pop()
        if id(step) in seen:
            continue
        seen[id(step)] = step
        pending.extend(p for link in step.links for p in link.producers)
    return list(seen.values())


def _sources_of(chain: list[StepNode]) -> list[SourceUse]:
    return [link.source for step in chain for link in step.links
            if link.source is not None and link.via_source]
