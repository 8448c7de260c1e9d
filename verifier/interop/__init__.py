"""Speaking the neighbours' formats and stores: in-toto links and layouts, OpenSSF Model Signing,
OCI registries.
"""
