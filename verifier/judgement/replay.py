"""Replay quorum: how many independent rebuilders replayed enough segments of a step's log.

`rebuild.replay: {STEP: {segments: K, match?: {update_rtol: X}}}` asks, of every attestation of
STEP in an artifact's chain, for `rebuild.quorum` independent rebuilders from
`rebuild.rebuilders` (never a signer of the step), each with one rebuild attestation that
replayed at least K distinct segments of THAT attestation's signed checkpoint log, drawn at
random or all of them (segments a rebuilder named, `--segment`, sample nothing: they count
towards no quorum, their dissent does), all of them matching, and no more dissenting
rebuilders than `max_dissent`.

A replay claim is read as an attacker may have written it, even when a trusted rebuilder signed
it: it counts for nothing unless it names this attestation's payload, the root, size and
directory of this log, and for every segment it lists exactly log entries i and i+1; a
"random" choice must be the one the recorded seed gives (choose_segments), an "all" choice
every segment. A segment listed twice counts once. A segment that DIFFERS or FAILED (or is
within a tolerance the policy does not grant) is signed dissent, named by its steps: the claim
holding it never counts, and with `max_dissent: 0` one such rebuilder fails the step (as for
whole rebuilds, so that removing evidence never turns a FAIL into a PASS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.formats.checkpoint_log import CheckpointLog, choose_segments, log_from_predicate
from verifier.judgement.hermetic import rebuild_isolation_problem
from verifier.judgement.quorum import (
    RebuildClaim,
    StepQuorum,
    _assign,
    _ignore,
    _rebuilders,
    independent_rebuilders,
    is_replay,
)

if TYPE_CHECKING:
    from verifier.formats.statement import StepRecord
    from verifier.judgement.policy import Policy, ReplayRule
    from verifier.judgement.trust import Attribution

VERDICTS = ("MATCH", "WITHIN-TOLERANCE", "DIFFERS", "FAILED")
# The share of forged segments the rendered escape probability is given for.
FORGED_SHARE = 0.1


@dataclass
class JudgedReplay:
    """One replay claim read against the log: the segments it matched and the dissent."""

    matched: set[int] = field(default_factory=set)
    dissent: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "named"
    requested: int = 0
    seed: str = ""  # hex, for a random choice


def judge_replay_claim(claim: RebuildClaim, log: CheckpointLog, rule: ReplayRule
                       ) -> JudgedReplay | str:
    """The claim's matched segments and dissent, or the sentence saying why it counts for
    nothing."""
    section = claim.statement.predicate.get("replay")
    if not isinstance(section, dict):
        return "its replay section is not an object"
    claimed_log = section.get("log")
    if not isinstance(claimed_log, dict) or claimed_log.get("root") != log.root:
        return (f"it replayed another checkpoint log (root "
                f"{str((claimed_log or {}).get('root'))[:16]}…), not this attestation's "
                f"({log.root[:16]}…)")
    if (claimed_log.get("checkpoints") != len(log.entries)
            or claimed_log.get("directory") != log.directory):
        return "its log's size or directory is not this attestation's"
    segments = section.get("segments")
    if not isinstance(segments, list) or not segments:
        return "it lists no segments"
    judged = JudgedReplay()
    by_index: dict[int, list[dict[str, Any]]] = {}
    count = len(log.segments)
    for item in segments:
        if not isinstance(item, dict):
            return "a segment entry is not an object"
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            return f"it claims a segment {str(index)[:20]!r} the log does not hold"
        segment = log.segments[index]
        if item.get("start") != segment.start.to_json() or item.get("end") != segment.end.to_json():
            return (f"its segment {index} does not run from log entry {index} to "
                    f"{index + 1} ({segment.name})")
        if item.get("verdict") not in VERDICTS:
            return f"its segment {segment.name} has no verdict"
        by_index.setdefault(index, []).append(item)
    selection = section.get("selection")
    problem = _check_selection(selection, log, set(by_index))
    if problem is not None:
        return problem
    assert isinstance(selection, dict)
    judged.mode = selection["mode"]
    judged.requested = selection.get("requested") or 0
    judged.seed = str(selection.get("seed") or "").lower()
    for index, items in sorted(by_index.items()):
        segment = log.segments[index]
        verdicts = [_segment_verdict(item, segment.end.dir_hash, rule) for item in items]
        if all(v == "MATCH" or v == "WITHIN-TOLERANCE" for v in verdicts):
            judged.matched.add(index)
        else:
            worst = next(v for v in verdicts if v not in ("MATCH", "WITHIN-TOLERANCE"))
            judged.dissent.append({"name": f"segment {segment.name}", "verdict": worst,
                                   "index": index})
    return judged


def _check_selection(selection: Any, log: CheckpointLog, indices: set[int]) -> str | None:
    if not isinstance(selection, dict) or selection.get("mode") not in ("random", "all",
                                                                       "named"):
        return "its choice of segments is not random, all or named"
    mode = selection["mode"]
    if mode == "all" and indices != {s.index for s in log.segments}:
        return "it claims every segment but does not list every one"
    if mode == "random":
        seed, requested = selection.get("seed"), selection.get("requested")
        if (not isinstance(seed, str) or isinstance(requested, bool)
                or not isinstance(requested, int) or requested < 1):
            return "its random choice records no seed or count"
        try:
            raw = bytes.fromhex(seed)
        except ValueError:
            return "its random choice records a seed that is not hex"
        expected = {s.index for s in choose_segments(log, raw, requested)}
        if indices != expected:
            return ("its segments are not the ones its seed chooses (cherry-picked: the seed "
                    f"chooses {', '.join(log.segments[i].name for i in sorted(expected))})")
    return None


def _segment_verdict(item: dict[str, Any], logged: str, rule: ReplayRule) -> str:
    """MATCH or WITHIN-TOLERANCE when the signed figures bear it out under the policy's rule;
    the claimed verdict (or DIFFERS) otherwise."""
    verdict = item["verdict"]
    replayed = item.get("replayed")
    digest = replayed.get("dirHash") if isinstance(replayed, dict) else None
    if verdict == "MATCH":
        return "MATCH" if digest == logged else "DIFFERS"
    if verdict != "WITHIN-TOLERANCE" and verdict != "DIFFERS":
        return verdict
    rtol = rule.update_rtol
    update = item.get("update")
    tensors = item.get("tensors")
    refused = "WITHIN-TOLERANCE the policy does not grant" if verdict != "DIFFERS" else verdict
    if (rtol is None or not isinstance(digest, str) or item.get("files") != []
            or not isinstance(update, dict) or not isinstance(tensors, list)):
        return refused
    ratios = [update.get("ratio")] + [t.get("ratio") if isinstance(t, dict) else None
                                      for t in tensors]
    if all(isinstance(r, int | float) and not isinstance(r, bool) and 0 <= r <= rtol
           for r in ratios):
        return "WITHIN-TOLERANCE"
    return refused


def judge_replays(record: StepRecord, step_attribution: Attribution,
                  claims: list[RebuildClaim], policy: Policy, rule: ReplayRule) -> StepQuorum:
    """The replay quorum of one step attestation (see the module's docstring)."""
    rebuild = policy.rebuild
    assert rebuild is not None
    outcome = StepQuorum(record.step, record.source, record.statement.payload_sha256,
                         rebuild.quorum, kind="replay")
    try:
        log = log_from_predicate(record.statement.predicate, record.source)
    except InputError as error:
        outcome.failures.append(f"{error} No segment replay of it can count.")
        return outcome
    if log is None:
        outcome.failures.append(
            f"{record.source}: step {record.step!r} must be verified by segment replay, but "
            "it was recorded without a checkpoint log.")
        return outcome
    step_names = set(step_attribution.names)
    judged_claims: list[tuple[RebuildClaim, list[tuple[str, str]], JudgedReplay]] = []
    heard_from: set[str] = set()
    for claim in sorted(claims, key=lambda c: c.source):
        if not is_replay(claim):
            continue  # a whole rebuild, judged by rebuild.steps where the policy asks for one
        if claim.rebuilt_payload_sha256 != record.statement.payload_sha256 \
                or claim.step != record.step:
            _ignore(outcome, f"{claim.source}: replayed another attestation than "
                             f"{record.source}; it counts for nothing.")
            continue
        rebuilders, eligible = independent_rebuilders(claim, rebuild.rebuilders,
                                                      step_attribution)
        heard_from.update(n for n, _ in rebuilders)
        if not eligible:
            _ignore(outcome, f"{claim.source}: not signed by an independent rebuilder the "
                             "policy names; it counts for nothing.")
            continue
        if claim.is_probe:
            _ignore(outcome, f"{claim.source}: a probe with the rebuilder's own variables, "
                             "not a replay of the record; it counts for nothing.")
            continue
        isolation = rebuild.require_sandbox and rebuild_isolation_problem(claim)
        if isolation:
            _ignore(outcome, f"{claim.source}: {isolation}")
            continue
        judged = judge_replay_claim(claim, log, rule)
        if isinstance(judged, str):
            _ignore(outcome, f"{claim.source}: {judged}; it counts for nothing.")
            continue
        who = ", ".join(sorted({n for n, _ in eligible}))
        if judged.dissent:
            outcome.dissent.append({"rebuilder": who, "attestation": claim.source,
                                    "files": [{k: d[k] for k in ("name", "verdict")}
                                              for d in judged.dissent],
                                    "drift": []})
        judged_claims.append((claim, eligible, judged))
    rebuilder_of = _rebuilders([pairs for _, pairs, _ in judged_claims])
    dissenting = {rebuilder_of[n] for _, pairs, j in judged_claims if j.dissent
                  for n, _ in pairs}
    # Named segments were chosen by the rebuilder, perhaps as the trainer suggested: they sample
    # nothing, so they count towards no quorum (their dissent still counts, above).
    for claim, _, judged in judged_claims:
        if judged.mode == "named" and not judged.dissent:
            _ignore(outcome, f"{claim.source}: replayed segments it named (--segment), not "
                             "ones drawn at random or all of them; a named replay counts "
                             "towards no quorum.")
    drawn = [(c, p, j) for c, p, j in judged_claims if j.mode != "named" and not j.dissent]
    enough = [(claim, {rebuilder_of[n]: (n, i) for n, i in sorted(pairs)})
              for claim, pairs, judged in drawn if len(judged.matched) >= rule.segments]
    too_few = [(claim, judged) for claim, _, judged in drawn
               if len(judged.matched) < rule.segments]
    for claim, judged in too_few:
        _ignore(outcome, f"{claim.source}: replayed {len(judged.matched)} matching "
                         f"segment(s), fewer than the {rule.segments} the policy asks for.")
    counted_judgements: list[JudgedReplay] = []
    for claim, chosen in _assign(enough):
        name, identity = next(e[chosen] for c, e in enough if c is claim)
        judged = next(j for c, _, j in judged_claims if c is claim)
        counted_judgements.append(judged)
        outcome.counted.append({"rebuilder": name, "identity": identity,
                                "attestation": claim.source,
                                "segments": ", ".join(log.segments[i].name
                                                      for i in sorted(judged.matched))})
    outcome.counted.sort(key=lambda c: c["rebuilder"])
    outcome.missing = sorted(n for n in rebuild.rebuilders
                             if n not in heard_from and n not in step_names)
    named_dissent = "; ".join(
        f"{', '.join(d['name'] + ' ' + d['verdict'] for d in entry['files'])} "
        f"(replayed by {entry['rebuilder']})" for entry in outcome.dissent)
    if len(outcome.counted) < rebuild.quorum:
        outcome.failures.append(
            f"{record.source}: step {record.step!r} has {len(outcome.counted)} of "
            f"{rebuild.quorum} required independent replays of at least {rule.segments} "
            f"matching segment(s) ({', '.join(outcome.matched) or 'none'})"
            + (f"; signed dissent: {named_dissent}" if named_dissent else
               f"; missing: {', '.join(outcome.missing) or 'no other rebuilder'}") + ".")
    if rebuild.max_dissent is not None and len(dissenting) > rebuild.max_dissent:
        outcome.failures.append(
            f"{record.source}: step {record.step!r} has {len(dissenting)} dissenting "
            f"rebuilders, more than max_dissent {rebuild.max_dissent}: {named_dissent}.")
    outcome.summary = _summary(record.step, log, outcome, counted_judgements, rule)
    return outcome


def escape_probability(segments: int, judged: list[JudgedReplay],
                       share: float = FORGED_SHARE) -> float | None:
    """The chance that a run with `share` of its segments forged (at least one) escapes every
    independently seeded random sample counted; None when no sample was drawn at random."""
    forged = max(1, math.ceil(share * segments))
    # One sample counted once: rebuilders who used the same seed (and count) replayed the same
    # segments, so their samples are not independent and must not multiply.
    drawn = {(j.mode, j.seed, j.requested): j for j in judged if j.mode in ("random", "all")}
    if not drawn:
        return None
    chance = 1.0
    for j in drawn.values():
        k = segments if j.mode == "all" else min(j.requested, segments)
        chance *= math.comb(segments - forged, k) / math.comb(segments, k)
    return chance


def _summary(step: str, log: CheckpointLog, outcome: StepQuorum,
             judged: list[JudgedReplay], rule: ReplayRule) -> str:
    if not judged:
        return ""  # nothing counted: the failure says why
    total = len(log.segments)
    replayed = set().union(*(j.matched for j in judged))
    text = f"{step}: {len(replayed)} of {total} segments replayed by {', '.join(outcome.matched)}"
    text += ("; all reproduced bit for bit" if rule.update_rtol is None
             else f"; all within {rule.update_rtol:g} of their update")
    chance = escape_probability(total, judged)
    if chance is None:
        return text + "; the segments were named, not drawn at random"
    rounded = math.ceil(chance * 100) / 100
    return (text + f"; a run with {FORGED_SHARE:.0%} of its segments forged escapes this "
            f"sample with probability ≤ {rounded:.2f}")
