"""Audit and reports: `diff`, `audit`, `openness` and `contamination`.

Parses and prints only; the work is the library's, imported inside each command so that
`--help` starts fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.cli.common import JsonFlag, _refuse_existing, app
from verifier.cli.output import _emit_json, _guard, _say
from verifier.cli.verify import _show_report


@app.command("diff")
def diff_command(
    a: Annotated[Path, typer.Argument(metavar="A",
        help="First file or directory (the one being checked).")],
    b: Annotated[Path, typer.Argument(metavar="B",
        help="Second file or directory (the reference).")],
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance for tensors.")] = None,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance for tensors.")] = None,
    limit: Annotated[int, typer.Option(help="Rows of the tensor table.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Explain how two files or directories differ, tensor by tensor for safetensors
    and GGUF, structurally for JSON (numbers by value, the first differing path).

    A is the side being checked (a rebuilt or downloaded copy), B the reference: in two
    directories a file only in A is ADDED, a file only in B is MISSING (from A).

    Exit 0 when IDENTICAL or CANONICALLY-IDENTICAL (or WITHIN-TOLERANCE with a tolerance given),
    1 otherwise. GGUF: quantized tensors are compared byte by byte, metadata key by key (a
    metadata difference is DIVERGED).

    Example: model-verifier diff rebuilt/model.safetensors build/model/model.safetensors

    Example: model-verifier diff model-q8_0.gguf rebuilt/model-q8_0.gguf
    """
    def action() -> int:
        from verifier.diff.tensordiff import Verdict, diff_paths, render_text

        tolerant = rtol is not None or atol is not None
        result = diff_paths(a, b, rtol=(rtol or 0.0) if tolerant else None,
                            atol=(atol or 0.0) if tolerant else None)
        if as_json:
            _emit_json(result.to_dict())
        else:
            print(render_text(result, limit=limit), end="")
        accepted = {Verdict.IDENTICAL, Verdict.CANONICALLY_IDENTICAL}
        if tolerant:
            accepted.add(Verdict.WITHIN_TOLERANCE)
        return 0 if result.verdict in accepted else 1

    _guard(as_json, action)


@app.command("audit")
def audit_command(
    directories: Annotated[list[Path], typer.Argument(metavar="DIRECTORIES",
        help="Directories (or files) of attestations: steps, rebuilds, JSON lines.")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML to check signers and rules against; without it the chain is "
             "reported as unchecked.")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="text, json, dot (Graphviz) or html (one self-contained file).")
    ] = "text",
    output: Annotated[Path | None, typer.Option(
        help="Write the report to this file instead of standard output.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show every attestation as one graph, with every gap and conflict named.

    Exit 0 when no finding is an error, 1 when one is, 2 when the input cannot be used.

    Example: model-verifier audit attestations rebuilds --policy model-policy.yaml
    --format html --output audit.html
    """
    def action() -> int:
        from verifier.errors import InputError
        from verifier.formats.envelope import write_atomic
        from verifier.judgement.policy import load_policy
        from verifier.reports.audit import audit
        from verifier.reports.audit_render import summary_line
        from verifier.reports.audit_views import FORMATS, render

        if output_format not in FORMATS:
            raise InputError(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}.")
        chosen = "json" if as_json else output_format
        if output is not None:
            _refuse_existing(output, force)
        report = audit(directories, load_policy(policy) if policy is not None else None)
        data = report.to_dict()
        if output is None and chosen == "json":
            _emit_json(data)
        elif output is None:
            sys.stdout.write(render(data, chosen))
        else:
            write_atomic(output, render(data, chosen), overwrite=force)
            if as_json:
                _emit_json({"report": str(output), "verdict": data["verdict"],
                            "summary": data["summary"]})
            else:
                _say(f"wrote {chosen} report {output}  ({summary_line(data)})")
        return report.exit_code

    _guard(as_json, action)


def _evaluated(artifact: Path, policy: Path | None, attestations: list[Path] | None) -> Any:
    """verify-model's report for the artifact, which carries the evaluation's verdict."""
    from verifier.judgement.policy import DEFAULT_POLICY, load_policy
    from verifier.judgement.verify import verify_artifact

    loaded = load_policy(policy or DEFAULT_POLICY)
    return loaded, verify_artifact(artifact, loaded, attestations or [Path("attestations")])


@app.command("openness")
def openness_command(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT",
        help="The model file or directory.")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: model-policy.yaml).")] = None,
    attestations: Annotated[list[Path] | None, typer.Option(
        help="Directory (or file) of attestations; repeatable (default: attestations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Which openness components the artifact's signed chain attests, pinned and rebuilt,
    under which licences, and the Model Openness Framework class that supports.

    Exit 0 when the chain passes the policy, 1 when it does not, 2 on unusable input.

    Example: model-verifier openness build/model/model.safetensors
    --policy policies/tiny-model-rebuilt.yaml --attestations attestations
    --attestations rebuilds
    """
    def action() -> int:
        from verifier.reports import openness

        loaded, verified = _evaluated(artifact, policy, attestations)
        assert verified.verdict is not None
        result = openness.report(verified.verdict, str(artifact), loaded)
        if not verified.passed and result.passed:  # e.g. the file no longer matches
            result.passed = False
            result.supported_class = None
        result.problems = [p.message for p in verified.problems]
        if as_json:
            _emit_json(result.to_dict())
        else:
            sys.stdout.write(openness.render_text(result))
        return 0 if result.passed else 1

    _guard(as_json, action)


@app.command("contamination")
def contamination_command(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT",
        help="The model file or directory.")],
    benchmark: Annotated[list[Path], typer.Option(
        help="A benchmark's test items: text lines, JSON Lines or CSV (repeatable).")],
    digests_from: Annotated[list[Path], typer.Option(
        help="Directory (or file) holding the record-digest files (*.mvrd) the chain signed; "
        "they are found by their signed sha256 (repeatable).")],
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: model-policy.yaml); data.max_benchmark_overlap is the "
        "threshold (0 when absent).")] = None,
    attestations: Annotated[list[Path] | None, typer.Option(
        help="Directory (or file) of attestations; repeatable (default: attestations).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whether a benchmark's items were in the training data, from the salted record digests
    the chain's data steps signed (record --record-digests): exact records and word 13-grams.

    Exit 0 when every benchmark's overlap is within the policy's threshold, 1 when one is over
    it or the chain does not pass, 2 on unusable input.

    Example: model-verifier contamination build/model/model.safetensors
    --benchmark eval/test.jsonl --digests-from attestations --policy model-policy.yaml
    """
    def action() -> int:
        from verifier.reports import contamination

        loaded, verified = _evaluated(artifact, policy, attestations)
        if not verified.passed or verified.verdict is None:
            _show_report(verified, as_json)
            if not as_json:
                print("contamination: not checked; the chain does not pass, so no record "
                      "digest in it is vouched for.")
            return 1
        sources = contamination.load_sources(verified.verdict, digests_from)
        threshold = loaded.max_benchmark_overlap or 0.0
        result = contamination.check(sources, benchmark, threshold)
        if as_json:
            _emit_json({"artifact": str(artifact), **result.to_dict()})
            return 0 if result.passed else 1
        print(f"contamination of {artifact}: {'PASS' if result.passed else 'FAIL'} "
              f"(max_benchmark_overlap {threshold:g})")
        for source in result.sources:
            print(f"  record digests of {source.data} from step {source.step!r} "
                  f"({len(source.digests.records)} records by {source.digests.unit}, "
                  f"{len(source.digests.grams)} 13-grams; {source.file})")
        for bench in result.benchmarks:
            print(f"  {bench.benchmark}: {bench.overlapping}/{bench.items} items overlap "
                  f"({bench.fraction:.2%}): {bench.exact} exact, {bench.ngram} by 13-gram")
            for where in bench.by_source:
                if where.exact or where.ngram:
                    items = ", ".join(map(str, where.items))
                    print(f"    in {where.data} (step {where.step!r}): {where.exact} exact, "
                          f"{where.ngram} by 13-gram; items {items}")
        for note in result.notes:
            print(f"  note: {note}")
        return 0 if result.passed else 1

    _guard(as_json, action)
