"""Builds the engine's native kernel (sparse_engine/native/forward.cpp) at install time.

Everything else is declared in pyproject.toml. The kernel is compiled once per x86-64
level (x86-64, x86-64-v2, -v3, -v4; once for the compiler's default target on other
architectures), each build its own module, and sparse_engine/native.py loads the best one
the host's CPU runs: one wheel or image runs on any host at that host's speed. The kernel
is optional: a failed compile prints a warning (pip shows it with -v) and the install goes
on; the engine then warns at run time and runs its torch fallback. Needs GCC 12 or later.

setuptools rather than scikit-build-core or meson-python: the kernel is one C++ file with
no dependencies, so the whole build is one Extension per level; an optional build is one
try/except here (CMake stops at the first failed target); an editable install builds in
place, with no import hook or build tool needed at run time (meson-python's editable
installs rebuild on import and need --no-build-isolation); and the build needs nothing
beyond setuptools, which installs from any offline index.
"""

import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

# module -> its -march flags (named as sparse_engine.native.module_name names them)
if platform.machine().lower() in ("x86_64", "amd64"):
    LEVELS = {
        f"_native_{isa.replace('-', '_')}": [f"-march={isa}"]
        for isa in ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")
    }
else:
    LEVELS = {"_native_generic": []}
# -ffp-contract=fast: the kernel's products and sums fuse as they did when stored tasks
# were served, so their logits keep their bits
FLAGS = ["-std=c++17", "-O3", "-fno-math-errno", "-ffp-contract=fast", "-Wno-psabi"]


class OptionalBuildExt(build_ext):
    """Builds each level's module, warning loudly (not failing) when one does not compile."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (BaseError, CCompilerError) as error:
            print(
                f"\n{'!' * 78}\nWARNING: the engine's native kernel {ext.name} did not "
                f"compile ({error}).\nsparsecl installs without it; inference falls back to "
                f"a slower kernel level or to torch.sparse.\n{'!' * 78}\n",
                file=sys.stderr,
            )


setup(
    ext_modules=[
        Extension(
            f"sparse_engine.{name}",
            sources=["sparse_engine/native/forward.cpp"],
            language="c++",
            extra_compile_args=[*FLAGS, *march],
            optional=True,  # a missing module is not copied into an editable install
        )
        for name, march in LEVELS.items()
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
