"""Talking to the world: OCI registries (pull, push, referrers) and their caches. Reading the
neighbours' formats (in-toto links, OMS) lives a floor lower, in verifier.neighbours.
"""
