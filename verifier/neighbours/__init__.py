"""Reading the neighbours' formats: in-toto's own links and layouts, and OpenSSF Model Signing
(OMS) signatures, read as formats below the judgement."""
