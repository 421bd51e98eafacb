"""Build step for the one compiled part: the decode matrix-vector kernels
(``astrai_core/generation/_decode.c``). Everything else is in pyproject.toml.

The extension is optional: where no C compiler is available the install still succeeds and the
engine uses PyTorch's kernels (slower decode, same results within rounding).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    args, link = ["/O2", "/openmp"], []
elif sys.platform == "darwin":
    args, link = ["-O3"], []  # Apple clang has no OpenMP: one thread
else:
    args, link = ["-O3", "-fopenmp"], ["-fopenmp"]

setup(ext_modules=[Extension("astrai_core.generation._decode", ["astrai_core/generation/_decode.c"],
                             extra_compile_args=args, extra_link_args=link, optional=True)])
