"""Builds the optional C accelerator; the project's metadata is in pyproject.toml.

``nginx_canary.logs._fieldcount`` is optional: without a C compiler or the
Python headers the install still succeeds and the analyzer runs on its
pure-Python path (``make test`` fails then, so CI never misses it).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# gcc and clang: every warning the C source is kept clean of.
_UNIX_FLAGS = ["-Wall", "-Wextra", "-O2"]


class BuildExt(build_ext):
    """build_ext that adds the warning flags where the compiler understands them."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = [*ext.extra_compile_args, *_UNIX_FLAGS]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "nginx_canary.logs._fieldcount",
            sources=["nginx_canary/logs/_fieldcount.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
