"""Directory artifacts as a download returns them: the policy's `ignore` list and
`verify-model --ignore` leave named files out of the digest, visibly, and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import Chain, assert_error, assert_no_traceback, run, write_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.formats.digest import Hasher, dir_hash
from verifier.judgement.policy import ignore_pattern_for

HUB_ADDS = {
    ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": "---\nlicense: mit\n---\n# test model\n",
    ".cache/huggingface/download/model.bin.metadata": "abc123\netag\n1700000000.0\n",
    ".cache/huggingface/.gitignore": "*\n",
}


def download(chain: Chain) -> Path:
    """dist/ as a Hub download would leave it: the attested files plus the Hub's own."""
    dist = chain.work / "dist"
    for name, text in HUB_ADDS.items():
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_text(text, encoding="utf-8")
    return dist


def with_ignore(chain: Chain, patterns: list[str]) -> None:
    data = chain.policy_data()
    data["ignore"] = patterns
    write_policy(chain.policy, data)


def verify_dist(chain: Chain, *extra: str):
    result = run(["verify", "dist", *extra], cwd=chain.work)
    assert_no_traceback(result)
    return result


def test_a_download_fails_without_an_ignore_list(chain: Chain) -> None:
    assert verify_dist(chain).code == 0
    download(chain)
    result = verify_dist(chain, "--json")
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ignored"] == []
    assert ".gitattributes" in report["problems"][0]["message"]


def test_the_policy_ignore_list_leaves_the_hub_files_out_and_lists_each(chain: Chain) -> None:
    download(chain)
    with_ignore(chain, [".gitattributes", "README.md", ".cache/huggingface/**"])
    result = verify_dist(chain, "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ignored"] == [
        {"file": ".cache/huggingface/.gitignore", "pattern": ".cache/huggingface/**",
         "by": "policy"},
        {"file": ".cache/huggingface/download/model.bin.metadata",
         "pattern": ".cache/huggingface/**", "by": "policy"},
        {"file": ".gitattributes", "pattern": ".gitattributes", "by": "policy"},
        {"file": "README.md", "pattern": "README.md", "by": "policy"},
    ]
    # The digest is the attested directory's: the files left out are not in it.
    kept = {p.relative_to(chain.work / "dist").as_posix(): hashlib.sha256(p.read_bytes())
            .hexdigest() for p in (chain.work / "dist").rglob("*") if p.is_file()}
    kept = {n: d for n, d in kept.items() if n in ("model.bin", "config.json")}
    assert report["digest"] == {"dirHash": dir_hash(kept)}
    text = verify_dist(chain)
    assert text.code == 0
    assert "ignored (left out of the digest): 4 file(s)" in text.stdout
    assert "    README.md  (pattern 'README.md', policy)" in text.stdout


def test_command_line_ignores_add_to_the_policy_and_say_so(chain: Chain) -> None:
    download(chain)
    with_ignore(chain, [".gitattributes"])
    assert verify_dist(chain).code == 1  # README.md and .cache are still there
    # A folder is named with a trailing '/'; `.cache` alone names a file, and none is there.
    assert verify_dist(chain, "--ignore", "README.md", "--ignore", ".cache").code == 1
    result = verify_dist(chain, "--json", "--ignore", "README.md", "--ignore", ".cache/")
    assert result.code == 0, result.output
    by = {i["file"]: (i["pattern"], i["by"]) for i in json.loads(result.stdout)["ignored"]}
    assert by == {".gitattributes": (".gitattributes", "policy"),
                  "README.md": ("README.md", "--ignore"),
                  ".cache/huggingface/.gitignore": (".cache/", "--ignore"),
                  ".cache/huggingface/download/model.bin.metadata": (".cache/", "--ignore")}


@pytest.mark.parametrize("kind", ["directory", "link", "fifo"])
def test_a_file_pattern_hides_no_folder_link_or_fifo_of_that_name(chain: Chain,
                                                                   kind: str) -> None:
    """The attack: the Hub's `README.md` ignore, and in the download a `README.md/` folder
    holding a pickle (or a link or FIFO named README.md). The pattern names a file: only a
    regular file of that name is left out, so the pickle is in the digest and fails it, and
    the link or FIFO is refused as anywhere else."""
    dist = chain.work / "dist"
    readme = dist / "README.md"
    if kind == "directory":
        readme.mkdir()
        (readme / "payload.pkl").write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    elif kind == "link":
        os.symlink("/etc/hostname", readme)
    else:
        os.mkfifo(readme)
    with_ignore(chain, ["README.md"])
    result = verify_dist(chain, "--json")
    assert result.code == (1 if kind == "directory" else 2), result.output
    if kind == "directory":
        report = json.loads(result.stdout)
        assert report["ignored"] == []
        assert "README.md/payload.pkl" in report["problems"][0]["message"]
    # Named as a folder, it is left out, visibly.
    if kind == "directory":
        result = verify_dist(chain, "--json", "--ignore", "README.md/")
        assert result.code == 0, result.output
        assert json.loads(result.stdout)["ignored"] == [
            {"file": "README.md/payload.pkl", "pattern": "README.md/", "by": "--ignore"}]


def test_ignoring_an_attested_file_never_passes_and_says_why(chain: Chain) -> None:
    """The attack: ignore the weights, replace them. The digest without them is not the
    attested directory's, and the message names the ignored attested file."""
    (chain.work / "dist" / "model.bin").write_bytes(b"replaced weights")
    result = verify_dist(chain, "--json", "--ignore", "*.bin")
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ignored"] == [{"file": "model.bin", "pattern": "*.bin", "by": "--ignore"}]
    message = report["problems"][0]["message"]
    assert "holds model.bin, which the ignore pattern" in message, message


def test_a_changed_file_outside_the_ignore_list_still_fails(chain: Chain) -> None:
    download(chain)
    with_ignore(chain, [".gitattributes", "README.md", ".cache/huggingface/**"])
    (chain.work / "dist" / "config.json").write_text('{"layers": 2}', encoding="utf-8")
    result = verify_dist(chain, "--json")
    assert result.code == 1
    assert "config.json differs" in json.loads(result.stdout)["problems"][0]["message"]


def test_an_ignored_symbolic_link_is_not_followed_nor_refused(chain: Chain) -> None:
    dist = chain.work / "dist"
    (dist / ".cache").mkdir()
    os.symlink("/etc/hostname", dist / ".cache" / "blob")
    assert "symbolic link" in verify_dist(chain).output  # refused without the ignore
    result = verify_dist(chain, "--ignore", ".cache/**")
    assert result.code == 0, result.output
    assert ".cache/blob" in result.stdout


def test_an_ignore_pattern_leaving_the_directory_is_refused(chain: Chain) -> None:
    assert_error(verify_dist(chain, "--ignore", "../x"), 2, "--ignore", "'../x'")
    with_ignore(chain, ["/abs"])
    assert_error(verify_dist(chain), 2, "model-policy.yaml", "ignore", "'/abs'")


def test_a_file_artifact_is_never_affected_by_ignore(chain: Chain) -> None:
    result = run(["verify", "dist/model.bin", "--ignore", "*.bin", "--json"], cwd=chain.work)
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["ignored"] == []


# ---------------------------------------------------------------- the rule, by property

NAMES = st.sampled_from(["a", "b.json", ".git", ".gitattributes", "README.md", "x.bin", ".cache"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
PATTERNS = st.sampled_from(["*.bin", ".git*", ".cache/**", "README.md", "**/*.json", "a",
                            "a/*", "**", "?", ".cache/", "a/", "*/"])


def _reference(name: str, pattern: str, regular: bool = True) -> bool:
    """Independent: translate the glob with fnmatch per path component. A pattern ending in
    '/' matches what a folder it names holds; one ending in `**` anything below; any other a
    regular file's own path."""
    from fnmatch import fnmatchcase

    def matches(path: list[str], pat: list[str]) -> bool:
        if not pat:
            return not path
        if pat[0] == "**":  # any number of folders; at the end, at least one name
            least = 1 if len(pat) == 1 else 0
            return any(matches(path[i:], pat[1:]) for i in range(least, len(path) + 1))
        return bool(path) and fnmatchcase(path[0], pat[0]) and matches(path[1:], pat[1:])

    parts = name.split("/")
    if pattern.endswith("/"):
        return any(matches(parts[:depth], pattern[:-1].split("/"))
                   for depth in range(1, len(parts)))
    if pattern.split("/")[-1] == "**":
        return matches(parts, pattern.split("/"))
    return regular and matches(parts, pattern.split("/"))


@given(PATHS, PATTERNS, st.booleans())
def test_ignore_matches_a_file_or_what_a_folder_pattern_holds(name: str, pattern: str,
                                                              regular: bool) -> None:
    assert (ignore_pattern_for(name, (pattern,), regular) is not None) == _reference(
        name, pattern, regular)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(PATHS, st.binary(max_size=8), min_size=1, max_size=6),
       st.lists(PATTERNS, max_size=3))
def test_the_digest_is_the_dirhash_of_exactly_the_files_not_ignored(
        tmp_path_factory: pytest.TempPathFactory, tree: dict[str, bytes],
        patterns: list[str]) -> None:
    root = tmp_path_factory.mktemp("tree")
    written: dict[str, bytes] = {}
    for name, data in tree.items():
        path = root / name
        # A name that is a file in one entry and a folder in another: keep the first.
        if any((root / p).is_file() for p in _prefixes(name)) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[name] = data
    rule = tuple(patterns)
    digest = Hasher(1).digest_paths(
        [root], ignore=lambda n, regular: ignore_pattern_for(n, rule, regular) is not None)[0]
    kept = {n: hashlib.sha256(d).hexdigest() for n, d in written.items()
            if not any(_reference(n, p) for p in rule)}
    assert digest.files == kept
    assert digest.dir_hash == dir_hash(kept)
    assert set(digest.ignored) == set(written) - set(kept)


def _prefixes(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
