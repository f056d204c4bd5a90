"""Loaded by every Python process the tests start (it is on their PYTHONPATH): only loopback is reachable.

A blocked attempt raises in that process and is written to BATON_TEST_NETGUARD_LOG, which the test suite
reads after each test, so a subprocess (or code that catches the error) cannot hide it.
"""

import os

if os.environ.get("BATON_TEST_NETGUARD_LOG"):
    from netguard import install

    install(os.environ["BATON_TEST_NETGUARD_LOG"])
