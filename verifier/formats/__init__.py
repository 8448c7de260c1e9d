"""Formats and cryptography: digests, DSSE and Sigstore bundles, in-toto statements, keys and
signers, bounded readers.
"""
