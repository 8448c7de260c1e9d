"""Formats and cryptography: digests, DSSE and Sigstore bundles, in-toto statements, keys and
signers, bounded readers.
"""

import logging

# sigstore-python logs what it notices (e.g. "this bundle contains a root CA") as warnings;
# with no handler configured, Python prints them on stderr, a stray line beside --json. What
# decides a verdict reaches the user in the verifier's own sentence.
logging.getLogger("sigstore").addHandler(logging.NullHandler())
