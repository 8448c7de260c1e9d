"""Error types that carry the one sentence a user sees.

Library code raises these; only the CLI turns them into output and exit codes.
"""

from __future__ import annotations


class VerifierError(Exception):
    """Base class: the message is a complete sentence naming the file and the problem."""

    exit_code = 2


class InputError(VerifierError):
    """The input could not be used (missing file, malformed JSON/YAML, bad flag): exit 2."""

    exit_code = 2


class SignatureError(VerifierError):
    """A signature did not verify or the signer is not the expected one: exit 1."""

    exit_code = 1


class VerificationFailure(VerifierError):
    """A verdict against (an artifact, a chain, a rebuild): exit 1."""

    exit_code = 1


class StepFailed(VerifierError):
    """A recorded or rebuilt command failed; carries its exit code."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.exit_code = returncode if 0 < returncode < 256 else 1
