"""model-verifier: record, rebuild and verify machine-learning model builds.

The library API; the command line lives in verifier.cli. Modules import their heavy
dependencies lazily so that importing this package stays cheap.
"""

__version__ = "0.1.0"
