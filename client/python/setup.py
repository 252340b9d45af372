"""Builds the strata package, generating its gRPC stubs from the repository's .proto files.

The stubs (strata/v1/strata_pb2.py, strata_pb2_grpc.py) are not committed: build_py runs
grpcio-tools' protoc on proto/strata/v1/strata.proto (two directories up, or $STRATA_PROTO_DIR)
into the build tree, so an installed package always matches the proto it was built from.
"""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTOS = ["strata/v1/strata.proto"]


def proto_dir():
    candidates = [os.environ.get("STRATA_PROTO_DIR"), HERE.parent.parent / "proto"]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / PROTOS[0]).is_file():
            return pathlib.Path(candidate)
    raise RuntimeError(f"cannot find {PROTOS[0]}: set STRATA_PROTO_DIR to the repository's proto/")


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc  # a build requirement (pyproject.toml)

        out = pathlib.Path(self.build_lib)
        source = proto_dir()
        include = pathlib.Path(protoc.__file__).parent / "_proto"  # well-known types
        for proto in PROTOS:
            args = ["protoc", f"-I{source}", f"-I{include}", f"--python_out={out}",
                    f"--grpc_python_out={out}", f"--pyi_out={out}", str(source / proto)]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {proto}")
            package = out / pathlib.Path(proto).parent
            (package / "__init__.py").touch()


setup(cmdclass={"build_py": BuildPyWithStubs})
