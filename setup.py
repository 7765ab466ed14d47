"""Build of the native parts: the C core through cffi, the record decoder
through Cython.  Everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

records = Extension(
    "spa._records",
    ["spa/_records.pyx"],
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-fstack-protector-strong"],
)

setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    ext_modules=cythonize([records], language_level=3),
)
