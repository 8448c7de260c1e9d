"""An in-toto layout as the policy: our step attestations verified against the layout, and the
artifact against them. The links themselves are read a floor lower (verifier.neighbours.
intoto_links); here they are judged into a Report, as `verify-model --layout` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats.digest import Hasher, PathDigest
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle
from verifier.formats.statement import REBUILD_PREDICATE_TYPE, StepRecord, as_step, parse_statement
from verifier.judgement.verify import Problem, Report, add_oms_evidence, load_bundles
from verifier.neighbours.intoto_links import (
    ClassicLink,
    _functionary_keys,
    _link_object,
    _verified_by,
    link_fields,
    link_files,
    load_layout,
    read_link,
)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


def verify_with_layout(artifact: Path, layout_path: Path, key_paths: list[Path],
                       attestation_dirs: list[Path], *, hasher: Hasher | None = None) -> Report:
    """Verify our step attestations against an in-toto layout, and the artifact against them."""
    from in_toto.exceptions import ThresholdVerificationError
    from in_toto.models.link import Link
    from in_toto.verifylib import reduce_chain_links, verify_threshold_constraints

    layout = load_layout(layout_path, key_paths)
    if not artifact.exists():
        raise InputError(f"{artifact}: no such file or directory to verify.")
    hasher = hasher or Hasher()
    digest = hasher.digest_paths([artifact])[0]
    report = Report(str(artifact), {digest.algorithm: digest.value}, str(layout_path))
    functionaries: dict[str, Any] = {}
    for step in layout.steps:
        functionaries.update(_functionary_keys(layout, step))
    digest = add_oms_evidence(
        artifact, digest,
        lambda bundle: tuple(f"key {k[:8]}" for k in _verified_by(bundle, functionaries)),
        report)
    by_step: dict[str, list[tuple[Bundle, StepRecord]]] = {}
    for bundle in load_bundles(attestation_dirs, report.notes):
        if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
            continue
        try:
            statement = parse_statement(bundle.payload, bundle.source)
            if statement.predicate_type == REBUILD_PREDICATE_TYPE:
                continue
            record = as_step(statement)
        except InputError as error:
            report.notes.append(f"ignored {error}")
            continue
        by_step.setdefault(record.step, []).append((bundle, record))

    classic: dict[str, list[ClassicLink]] = {}
    for path in link_files(attestation_dirs):
        try:
            link = read_link(path)
            _link_object(link.fields)  # in-toto's own shape check
        except InputError as error:
            report.notes.append(f"ignored {error}")
            continue
        except Exception:  # in-toto's FormatError and friends
            report.notes.append(f"ignored {path}: is not a well-formed in-toto link.")
            continue
        classic.setdefault(link.name, []).append(link)

    chain: dict[str, dict[str, Any]] = {}
    verified: list[StepRecord] = []
    verified_links: list[ClassicLink] = []
    for step in layout.steps:
        keys = _functionary_keys(layout, step)
        links: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for link in classic.get(step.name, []):
            for keyid in link.verified_by(keys):
                if keyid in links:
                    report.problems.append(Problem(link.source, (
                        f"{link.source}: step {step.name!r} is attested twice by key "
                        f"{keyid[:8]} (also {sources[keyid]}); keep one link per key."
                    )))
                    continue
                links[keyid] = _link_object(link.fields)
                sources[keyid] = link.source
                verified_links.append(link)
        for bundle, record in by_step.get(step.name, []):
            for keyid in _verified_by(bundle, keys):
                if keyid in links:
                    report.problems.append(Problem(bundle.source, (
                        f"{bundle.source}: step {step.name!r} is attested twice by key "
                        f"{keyid[:8]} (also {sources[keyid]}); keep one attestation per key."
                    )))
                    continue
                links[keyid] = Link(**link_fields(record))
                sources[keyid] = bundle.source
                verified.append(record)
        if len(links) < step.threshold:
            report.problems.append(Problem(str(layout_path), (
                f"{layout_path}: step {step.name!r} needs {step.threshold} attestation(s) signed "
                f"by its functionaries, found {len(links)} in "
                f"{', '.join(str(d) for d in attestation_dirs)}."
            )))
        chain[step.name] = links
        report.steps.append({
            "step": step.name,
            "attestation": ", ".join(sorted(set(sources.values()))) or "none",
            "signed_by": [f"key {keyid[:8]}" for keyid in sorted(links)],
        })
    if report.problems:
        return report
    try:
        verify_threshold_constraints(layout, chain)
    except ThresholdVerificationError as error:
        report.problems.append(Problem(str(layout_path), (
            f"{layout_path}: the functionaries of a step disagree: {_first_line(error)}."
        )))
        return report
    failure = _rule_failure(layout, reduce_chain_links(chain))
    if failure is not None:
        report.problems.append(Problem(str(layout_path), f"{layout_path}: {failure}."))
        return report
    if not _is_product(digest, verified) and not (
            digest.algorithm == "sha256"
            and any(digest.value in link.product_digests() for link in verified_links)) and not (
            digest.algorithm == "dirHash"
            and any(digest.value in link.directory_digests() for link in verified_links)):
        report.problems.append(Problem(str(artifact), (
            f"{artifact}: its {digest.algorithm} {digest.value[:16]}… is no product of any step "
            f"that passed the layout {layout_path}."
        )))
    return report


def _rule_failure(layout: Any, links: dict[str, Any]) -> str | None:
    """in-toto's artifact rules, step by step (as verify_all_item_rules runs them), so that the
    sentence can name the step and the side whose rule failed."""
    from in_toto.exceptions import RuleVerificationError
    from in_toto.verifylib import verify_item_rules

    for step in layout.steps:
        for side, rules in (("materials", step.expected_materials),
                            ("products", step.expected_products)):
            try:
                verify_item_rules(step.name, side, rules, links)
            except RuleVerificationError as error:
                return (f"the {side} of step {step.name!r} break the layout's rules "
                        f"({_first_line(error)})")
    return None


def _is_product(digest: PathDigest, records: list[StepRecord]) -> bool:
    return any(record.statement.has_subject_digest(digest.algorithm, digest.value)
               for record in records)
