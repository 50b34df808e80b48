"""C programs that drive the firmware library outside the firmware, and their Python sides,
shared by the tests (tests/) and the benchmarks (bench/); neither is shipped in the wheel.

* ``cbuild``: the repository's paths and the host C compiler under -Werror + ASan/UBSan.
* ``backprop``: net files and driver of c/bp_driver.c (backward pass, training schemes),
  random power-of-two models, numpy references of the backward kernels.
* ``lowrank``: driver of c/lowrank_driver.c (the LRT accumulator) and gradient streams.
* ``buildcache``: trained models and firmware builds, built once and reused while their
  sources are unchanged.

Importable as ``harness.<module>`` from the repository's top directory (pytest's
``pythonpath`` setting; the bench scripts put the top directory on sys.path).
"""
