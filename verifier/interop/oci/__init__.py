"""An OCI registry as the store that carries a model and its evidence.

The model is an OCI artifact (CNCF ModelPack layout, one raw layer per file); every attestation
is a referrer of the model's manifest (OCI 1.1 `subject`), found through the Referrers API or
the referrers tag schema. Modules: `reference` (oci:// names), `media` (media types, manifests),
`auth` (credentials and token challenges), `client` (the distribution API over requests),
`cache` (content-addressed blobs, re-checked on every use), `store` (push, attach, fetch).
Nothing here prints or exits.
"""
