"""The twistd fixture of the end-to-end tests, for the HTTP tests too."""

from ..e2e.conftest import run_twistd  # noqa: F401
