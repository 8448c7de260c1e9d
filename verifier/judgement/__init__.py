"""The judgement: policies, who signed what, the one evaluation of the attestation graph, quorum,
verify-model and the VSA.
"""
