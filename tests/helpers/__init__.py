"""Helpers shared by the test modules, not tests themselves (pytest collects only test_*.py):

* ``cbuild``: the repository's paths and the host C compiler under -Werror + ASan/UBSan.
* ``e2e_support``: trained models and firmware builds from the shared build cache.
* ``bp_harness``: net files and driver of tests/c/bp_driver.c (backward pass, training
  schemes), random power-of-two models, numpy references of the backward kernels.
* ``lowrank_harness``: driver of tests/c/lowrank_driver.c (the LRT accumulator) and gradient
  streams.
* ``proto_dummy_model``: the replies of the dummy request server (tests/c/proto_dummy.h).

Test modules import them as ``from helpers.<module> import ...`` (tests/ is on sys.path:
pytest puts the directory of the top-level conftest.py there).
"""
