"""Recording and rebuilding steps: the sandbox, tracing, workspaces, the trust plan, environment
capture and drift.
"""
