"""Helpers shared by the test modules, not tests themselves (pytest collects only test_*.py):

* ``e2e_support``: trained models and firmware builds from the shared build cache.
* ``proto_dummy_model``: the replies of the dummy request server (tests/c/proto_dummy.h).
* ``own_data``: a user's own dataset (16 x 20 RGB colour patterns, 4 classes), not MNIST.

Test modules import them as ``from helpers.<module> import ...`` (tests/ is on sys.path:
pytest puts the directory of the top-level conftest.py there). The C drivers shared with the
bench and their Python sides live in the top-level ``harness`` package.
"""
