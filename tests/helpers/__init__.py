"""Helpers shared by the test modules, not tests themselves (pytest collects only test_*.py):

* ``e2e_support``: trained models and firmware builds from the shared build cache.
* ``proto_dummy_model``: the replies of the dummy request server (tests/c/proto_dummy.h).

Test modules import them as ``from helpers.<module> import ...`` (tests/ is on sys.path:
pytest puts the directory of the top-level conftest.py there). The C drivers shared with the
bench and their Python sides live in the top-level ``harness`` package.
"""
