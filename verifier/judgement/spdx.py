"""SPDX licence expressions (SPDX specification v2.3, annex D): parsing and the allow/deny rule.

A small bounded parser of our own rather than the `license-expression` package: the grammar is
six productions, the rule needs only the expression's alternatives (which licences one may choose
to comply with), and a signed predicate is hostile input, so length, nesting and the number of
alternatives are capped here where we can see them. Identifiers are checked for SPDX's character
set, not against the SPDX licence list: a policy names the licences it allows or denies, and an
identifier it does not name is simply not allowed.

Grammar (operators are case-sensitive upper-case in SPDX; `+` means "or later"):

    expression := and-term ("OR" and-term)*
    and-term   := with-term ("AND" with-term)*
    with-term  := primary ("WITH" exception-id)?
    primary    := licence-id ["+"] | "LicenseRef-…" | "DocumentRef-…:LicenseRef-…"
                  | "(" expression ")"
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from verifier.errors import InputError

MAX_LENGTH = 1000  # characters of one expression
MAX_DEPTH = 32  # nested parentheses
MAX_ALTERNATIVES = 256  # choices an expression offers once its ORs are distributed

_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9.\-:]+\+?))")
_IDENTIFIER = re.compile(r"(?:DocumentRef-[A-Za-z0-9.\-]+:)?[A-Za-z0-9][A-Za-z0-9.\-]*\+?")
_OPERATORS = {"AND", "OR", "WITH"}


@dataclass(frozen=True)
class Expression:
    """A parsed expression: `alternatives` are the sets of terms one may comply with (any one
    set suffices; every term of the set applies). A term is a licence id, or
    "ID WITH EXCEPTION"."""

    text: str
    alternatives: tuple[frozenset[str], ...]

    def terms(self) -> frozenset[str]:
        return frozenset(t for a in self.alternatives for t in a)


def parse(text: str) -> Expression:
    """Parse an SPDX licence expression; InputError with one sentence when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("an SPDX licence expression is empty.")
    if len(text) > MAX_LENGTH:
        raise InputError(f"an SPDX licence expression is longer than {MAX_LENGTH} characters.")
    tokens = _tokenize(text)
    parser = _Parser(tokens, text)
    alternatives = parser.expression(0)
    if parser.position != len(tokens):
        raise InputError(f"{text!r}: unexpected {tokens[parser.position]!r} in the SPDX "
                         "licence expression.")
    return Expression(text, tuple(sorted(alternatives, key=sorted)))


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise InputError(f"{text!r}: character {text[position:].lstrip()[:1]!r} cannot "
                             "appear in an SPDX licence expression.")
        tokens.append(match.group(match.lastindex or 0))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _fail(self, what: str) -> InputError:
        return InputError(f"{self.text!r}: {what} in the SPDX licence expression.")

    def expression(self, depth: int) -> set[frozenset[str]]:
        if depth > MAX_DEPTH:
            raise self._fail(f"parentheses nested deeper than {MAX_DEPTH}")
        result = self._and_term(depth)
        while self._peek() == "OR":
            self.position += 1
            result = result | self._and_term(depth)
            _bound(result, self)
        return result

    def _and_term(self, depth: int) -> set[frozenset[str]]:
        result = self._with_term(depth)
        while self._peek() == "AND":
            self.position += 1
            right = self._with_term(depth)
            result = {a | b for a, b in itertools.product(result, right)}
            _bound(result, self)
        return result

    def _with_term(self, depth: int) -> set[frozenset[str]]:
        token = self._peek()
        if token is None:
            raise self._fail("a licence is missing at the end")
        if token == "(":
            self.position += 1
            inner = self.expression(depth + 1)
            if self._peek() != ")":
                raise self._fail("a parenthesis is not closed")
            self.position += 1
            if self._peek() == "WITH":
                raise self._fail("WITH follows a parenthesis instead of a licence")
            return inner
        if token in _OPERATORS or token == ")":
            raise self._fail(f"{token!r} stands where a licence should")
        if not _IDENTIFIER.fullmatch(token):
            raise self._fail(f"{token!r} is not a licence identifier")
        self.position += 1
        if self._peek() == "WITH":
            self.position += 1
            exception = self._peek()
            if exception is None or exception in _OPERATORS or exception in "()" or (
                    not _IDENTIFIER.fullmatch(exception) or exception.endswith("+")):
                raise self._fail("WITH is not followed by an exception identifier")
            self.position += 1
            return {frozenset({f"{token} WITH {exception}"})}
        return {frozenset({token})}


def _bound(alternatives: set[frozenset[str]], parser: _Parser) -> None:
    if len(alternatives) > MAX_ALTERNATIVES:
        raise parser._fail(f"more than {MAX_ALTERNATIVES} alternatives")


def _normal(term: str) -> str:
    # SPDX identifiers match case-insensitively; operators do not (handled by the parser).
    return term.casefold()


def _licence_of(term: str) -> str:
    return term.split(" WITH ", 1)[0]


def term_matches(term: str, names: Iterable[str]) -> bool:
    """Whether a term is named by a policy list: by the whole term ("GPL-2.0-only WITH
    Classpath-exception-2.0") or by its licence alone (an exception only adds permissions)."""
    wanted = {_normal(n) for n in names}
    return _normal(term) in wanted or _normal(_licence_of(term)) in wanted


def judge(expression: Expression, allow: Iterable[str], deny: Iterable[str]
          ) -> tuple[bool, str]:
    """Whether some alternative of the expression is acceptable: none of its terms denied and,
    when the policy has an allow list, every term allowed. Returns (acceptable, reason)."""
    allow, deny = tuple(allow), tuple(deny)
    reasons: list[str] = []
    for alternative in expression.alternatives:
        denied = sorted(t for t in alternative if term_matches(t, deny))
        if denied:
            reasons.append(f"{' AND '.join(denied)} is denied")
            continue
        unlisted = sorted(t for t in alternative if allow and not term_matches(t, allow))
        if unlisted:
            reasons.append(f"{' AND '.join(unlisted)} is not in the allow list")
            continue
        return True, "allowed"
    return False, "; ".join(dict.fromkeys(reasons)) or "no alternative is allowed"
