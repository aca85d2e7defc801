"""Generate the Python stubs of liferaft's wire contract, or check that they are up to date.

    python proto/generate.py           # regenerate liferaft_proto/v1/*_pb2*.py[i]
    python proto/generate.py --check   # exit 1 if the committed stubs differ from a fresh build

The include root is proto/, so `proto/liferaft_proto/v1/broker.proto` becomes the module
`liferaft_proto.v1.broker_pb2` at the repository root (never a top-level `proto` package: that
name belongs to proto-plus). Generated files are committed so that users of the client need no
protoc; CI runs --check so they cannot drift from the .proto files.

protoc's output depends on the grpcio-tools version (it embeds the protobuf and grpcio versions it
was built for), so generate with the version pinned in pyproject.toml.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import importlib.resources
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("liferaft_proto", "v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    """The .proto files, relative to the include root, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def is_generated(name: str) -> bool:
    return name.endswith(GENERATED_SUFFIXES)


def run_protoc(out_dir: Path) -> None:
    """Compile every .proto into out_dir (which then holds liferaft_proto/v1/...)."""
    from grpc_tools import protoc  # imported here so `--help` works without grpcio-tools

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    protos = proto_files()
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (its errors are above)")


def generated_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.iterdir() if p.is_file() and is_generated(p.name)}


def generate() -> int:
    target = REPO_ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory(prefix="liferaft-proto-") as tmp:
        fresh_dir = Path(tmp) / PACKAGE_DIR
        run_protoc(Path(tmp))
        fresh = generated_names(fresh_dir)
        target.mkdir(parents=True, exist_ok=True)
        # Stubs of a .proto that no longer exists must go too, or they would still import.
        for stale in generated_names(target) - fresh:
            (target / stale).unlink()
            print(f"removed {PACKAGE_DIR / stale}")
        for name in sorted(fresh):
            data = (fresh_dir / name).read_bytes()
            dest = target / name
            if not dest.exists() or dest.read_bytes() != data:
                dest.write_bytes(data)
                print(f"wrote {PACKAGE_DIR / name}")
    return 0


def check() -> int:
    target = REPO_ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory(prefix="liferaft-proto-") as tmp:
        fresh_dir = Path(tmp) / PACKAGE_DIR
        run_protoc(Path(tmp))
        fresh = generated_names(fresh_dir)
        committed = generated_names(target)
        problems = [f"missing: {PACKAGE_DIR / n}" for n in sorted(fresh - committed)]
        problems += [f"no .proto makes it: {PACKAGE_DIR / n}" for n in sorted(committed - fresh)]
        problems += [
            f"out of date: {PACKAGE_DIR / n}"
            for n in sorted(fresh & committed)
            if not filecmp.cmp(fresh_dir / n, target / n, shallow=False)
        ]
    if problems:
        version = importlib.metadata.version("grpcio-tools")
        print(
            "The generated stubs do not match the .proto files:\n  "
            + "\n  ".join(problems)
            + f"\nRun `python proto/generate.py` and commit the result (this check used "
            f"grpcio-tools {version}; if only version strings differ, install the grpcio-tools "
            "version pinned in pyproject.toml).",
            file=sys.stderr,
        )
        return 1
    print(f"generated stubs are up to date ({len(fresh)} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and exit 1 if the committed stubs differ",
    )
    args = parser.parse_args(argv)
    return check() if args.check else generate()


if __name__ == "__main__":
    sys.exit(main())
