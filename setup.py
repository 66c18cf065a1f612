"""Builds the engine's native kernel (sparse_engine/native/forward.cpp) at install time.

Everything else is declared in pyproject.toml. The kernel is compiled for the machine
it is installed on (-march=native) and loaded with ctypes; it is optional: when no
compiler is found the install goes on and the engine runs its numba kernels instead.
Set SPARSECL_NATIVE_ARCH to build for another CPU (e.g. x86-64-v3).
"""

import os

from setuptools import Extension, setup

ARCH = os.environ.get("SPARSECL_NATIVE_ARCH", "native")

setup(
    ext_modules=[
        Extension(
            "sparse_engine._native",
            sources=["sparse_engine/native/forward.cpp"],
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O3",
                f"-march={ARCH}",
                "-fno-math-errno",
                "-ffp-contract=fast",
            ],
            optional=True,
        )
    ]
)
