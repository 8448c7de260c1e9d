"""Was a benchmark in the training data? A view of the evaluation, with signed record digests.

The record-digest files a check may use are the ones a step of the artifact's valid derivation
(`ArtifactVerdict.chain`) signed as byproducts (verifier.judgement.declarations): each is
found by its
sha256 among the files given (`--digests-from`), never by name, and must have been computed
from the data file whose digest the same step attests. A chain that does not pass has no
derivation to vouch for its digests, so nothing is checked against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats import recorddigests
from verifier.judgement import declarations
from verifier.judgement.evaluation import ArtifactVerdict

MAX_CANDIDATES = 100_000  # files considered under --digests-from


@dataclass(frozen=True)
class DigestSource:
    """One signed record-digest file: which step, which data file, and its digests."""

    step: str
    attestation: str
    data: str  # the data file's name in the step
    data_sha256: str
    file: str  # where its bytes were found
    digests: recorddigests.DigestSet


@dataclass
class SourceOverlap:
    step: str
    data: str
    exact: int
    ngram: int
    items: list[int]  # 1-based item numbers that overlap, first few

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "data": self.data, "exact_items": self.exact,
                "ngram_items": self.ngram, "first_items": self.items}


@dataclass
class BenchmarkOverlap:
    benchmark: str
    items: int  # items with at least one record long enough to check
    overlapping: int  # items found by exact record or 13-gram, in any source
    exact: int
    ngram: int
    by_source: list[SourceOverlap] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.overlapping / self.items if self.items else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "items": self.items,
                "overlapping_items": self.overlapping, "exact_items": self.exact,
                "ngram_items": self.ngram, "overlap": round(self.fraction, 6),
                "sources": [s.to_dict() for s in self.by_source]}


@dataclass
class ContaminationReport:
    threshold: float
    sources: list[DigestSource]
    benchmarks: list[BenchmarkOverlap]

    @property
    def passed(self) -> bool:
        return all(b.fraction <= self.threshold for b in self.benchmarks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "PASS" if self.passed else "FAIL",
            "max_benchmark_overlap": self.threshold,
            "record_digests": [{"step": s.step, "attestation": s.attestation, "data": s.data,
                                "data_sha256": s.data_sha256, "file": s.file,
                                "records": len(s.digests.records),
                                "ngrams": len(s.digests.grams), "unit": s.digests.unit,
                                "format_version": s.digests.version} for s in self.sources],
            "benchmarks": [b.to_dict() for b in self.benchmarks],
            "notes": self.notes,
        }

    @property
    def notes(self) -> list[str]:
        """What a PASS cannot vouch for: text whose 13-grams stopped at every line end."""
        return [f"the record digests of {s.data} (step {s.step!r}) take each line as a record, "
                "so their 13-grams stop at line ends: a benchmark passage wrapped across lines "
                "of it is not found (record --record-unit paragraph runs them across lines)."
                for s in self.sources
                if s.digests.unit == "line" and recorddigests.kind_of(Path(s.data)) == "text"]


def signed_digest_files(verdict: ArtifactVerdict) -> list[tuple[str, str, str, str, str]]:
    """(step, attestation, data name, data sha256, digest-file sha256) for every record-digest
    file a step of the artifact's derivation signed."""
    found = []
    for node in verdict.chain:
        record = node.record
        by_name = {d["name"]: d["digest"] for d in (*record.materials, *record.products)}
        for declared in declarations.read(record).record_digests:
            data_sha256 = by_name[declared.name].get("sha256", "")
            found.append((record.step, record.source, declared.name, data_sha256,
                          declared.value))
    return sorted(set(found))


def _index(directories: Iterable[Path]) -> dict[str, Path]:
    """Candidate digest files by sha256 (regular files only; symlinks are not followed)."""
    index: dict[str, Path] = {}
    count = 0
    for directory in directories:
        if not directory.exists():
            raise InputError(f"{directory}: no such --digests-from directory.")
        candidates = [directory] if directory.is_file() else sorted(
            p for p in directory.rglob("*.mvrd") if p.is_file() and not p.is_symlink())
        for path in candidates:
            count += 1
            if count > MAX_CANDIDATES:
                raise InputError(f"{directory}: holds more than {MAX_CANDIDATES} digest files.")
            index.setdefault(recorddigests.file_sha256(path), path)
    return index


def load_sources(verdict: ArtifactVerdict, directories: list[Path]) -> list[DigestSource]:
    """The verified digest sets of the artifact's derivation (InputError when one is missing,
    or when the chain signed none)."""
    signed = signed_digest_files(verdict)
    if not signed:
        raise InputError("no step in the artifact's chain signed record digests (record "
                         "--record-digests), so there is nothing to check a benchmark against.")
    index = _index(directories)
    sources = []
    for step, attestation, data, data_sha256, file_sha256 in signed:
        path = index.get(file_sha256)
        if path is None:
            raise InputError(
                f"the record digests of {data} signed by step {step!r} ({attestation}) are not "
                f"under {', '.join(map(str, directories))} (no file there has sha256 "
                f"{file_sha256[:16]}…).")
        data_bytes = recorddigests.read_file(path)
        if hashlib.sha256(data_bytes).hexdigest() != file_sha256:  # changed since indexed
            raise InputError(f"{path}: changed while it was being read.")
        digests = recorddigests.parse(data_bytes, str(path))
        if digests.source_sha256 != data_sha256:
            raise InputError(f"{path}: was computed from data with sha256 "
                             f"{digests.source_sha256[:16]}…, but step {step!r} attests {data} "
                             f"as {data_sha256[:16]}….")
        sources.append(DigestSource(step, attestation, data, data_sha256, str(path), digests))
    return sources


def check(sources: list[DigestSource], benchmarks: list[Path], threshold: float,
          first: int = 10) -> ContaminationReport:
    """Look every benchmark's items up in every digest set."""
    results = []
    for benchmark in benchmarks:
        items = list(recorddigests.items(benchmark))
        overlapping: set[int] = set()
        exact: set[int] = set()
        ngram: set[int] = set()
        usable = 0
        by_source = []
        for source in sources:
            usable, matches = recorddigests.match(source.digests, items)
            exact_here = {m.number for m in matches if m.exact}
            ngram_here = {m.number for m in matches if m.grams}
            exact |= exact_here
            ngram |= ngram_here
            overlapping |= exact_here | ngram_here
            by_source.append(SourceOverlap(source.step, source.data, len(exact_here),
                                           len(ngram_here),
                                           sorted(exact_here | ngram_here)[:first]))
        results.append(BenchmarkOverlap(str(benchmark), usable, len(overlapping), len(exact),
                                        len(ngram), by_source))
    return ContaminationReport(threshold, sources, results)
