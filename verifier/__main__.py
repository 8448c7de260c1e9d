"""`python -m verifier` runs the model-verifier command line."""

from verifier.cli import main

main()
