"""With Ray's own TLS on (RAY_USE_TLS), the channel's TCP connections use it too: a real Ray with
certificates made by openssl, in a child process since TLS must be set before Ray starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import run_scenario


@pytest.mark.skipif(not os.path.exists("/usr/bin/openssl"), reason="needs /usr/bin/openssl to make certificates")
def test_with_rays_tls_on_replicas_serve_tls_callers_and_refuse_clear_text():
    run_scenario(Path(__file__).with_name("tls_scenario.py"), timeout_s=120)
