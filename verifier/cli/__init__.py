"""Command line: parses arguments, calls the library, prints. Nothing else lives here.

One module per group of commands: keys and policy (keys), record and rebuild (build),
verify-bundle, verify-vsa and verify-model (verify), export and sign-model (exports), diff,
audit, openness and contamination (reports), push, attach and pull (registry); the
applications and shared options are in common, the shared printing in output.

Heavy modules (cryptography, numpy, sigstore, yaml) are imported inside the commands that need
them so that `--help` and `digest` start fast.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import sys

import typer

# Importing a group registers its commands; `--help` lists them in this order.
# isort: off
from verifier.cli import keys, build, verify, exports, reports, registry  # noqa: F401
# isort: on
from verifier.cli.common import app as app
from verifier.cli.verify import _print_report as _print_report  # tests call it
from verifier.cli.verify import verify_app as verify_app
from verifier.cli.verify import verify_model

# `model-verifier verify` and `verify-model` are one command with one set of options.
app.command("verify")(verify_model)


def _entry(application: typer.Typer) -> None:
    try:
        application()
    except SystemExit:
        raise
    except Exception as error:  # a bug: still one sentence, never a traceback
        from verifier.formats.terminal import clean

        sys.stderr.write(f"error: internal error ({type(error).__name__}: "
                         f"{clean(str(error))[:300]}); please report it.\n")
        sys.exit(3)


def main() -> None:
    _entry(app)


def verify_model_main() -> None:
    _entry(verify_app)
