"""The artifact manifest: one schema, one version, one reader that refuses a file changed since it was written.

``edgevit compile`` writes ``manifest.json`` next to the artifact (``model.pte``, ``model.tflite``, ...);
``profile``, ``eval`` and the serial/adb uploads read it back through :func:`read_artifact_folder`, which
checks the schema and the artifact's sha256 *before* anything is uploaded or run: a tampered or truncated
file never reaches a runtime. The schema types what other commands read; backend-specific blocks
(``backend``, ``quantization``, ``ops``) stay free-form, each backend documents its own.

This module imports nothing of edgevit but errors, so every layer can use it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import EdgevitError

__all__ = ["MANIFEST_VERSION", "ArtifactError", "ArtifactFolder", "CompileManifest", "read_artifact_folder",
           "validate_manifest", "sha256_bytes"]

MANIFEST_VERSION = 1  # every manifest edgevit writes (compile, qat); bump when a reader would misread


class ArtifactError(EdgevitError):
    """An artifact folder that is missing, unreadable, or whose files no longer match its manifest."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ModelInfo(_Open):
    name: str
    family: str
    params: int = Field(ge=0)
    num_classes: int | None = None


class DeviceInfo(_Open):
    name: str
    display_name: str
    soc: str


class BackendInfo(_Open):
    name: str


class ArtifactFile(_Open):
    file: str = Field(pattern=r"^[^/\\]+$", description="a file name inside the artifact folder")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    sidecars: dict[str, dict] = Field(default_factory=dict)


class TensorSpec(_Open):
    name: str
    shape: list[int] | None
    dtype: str


class CompileManifest(_Open):
    """What ``edgevit compile`` writes; the fields other commands rely on are typed."""

    manifest_version: int
    model: ModelInfo
    weights: dict
    device: DeviceInfo
    backend: BackendInfo
    precision: str
    verification: dict
    artifact: ArtifactFile
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    preprocessing: dict
    tool_versions: dict[str, str]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _problems(err: ValidationError) -> str:
    return "; ".join(f"'{'.'.join(map(str, e['loc'])) or '(top level)'}': {e['msg']}" for e in err.errors())


def validate_manifest(manifest: dict) -> dict:
    """Check a manifest against the schema before it is written (a programming error if it fails)."""
    CompileManifest.model_validate(manifest)
    return manifest


@dataclass(frozen=True)
class ArtifactFolder:
    """An artifact folder written by ``edgevit compile``, checked against its manifest."""

    folder: Path
    manifest: dict               # as written (every field, backend-specific ones included)
    schema: CompileManifest      # the typed view
    artifact: Path               # the artifact file, whose sha256 matched the manifest when read


def read_artifact_folder(folder: str | Path, verify: bool = True) -> ArtifactFolder:
    """The manifest and artifact of ``folder``; refuses a missing, malformed or changed artifact."""
    folder = Path(folder)
    hint = "Give the folder `edgevit compile` wrote, e.g. out/efficientformer_l1-pixel8."
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder. {hint}")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder} is not an artifact folder: it has no manifest.json. {hint}")
    recompile = "Recompile the artifact with `edgevit compile`."
    try:
        manifest = json.loads(manifest_path.read_text())
        schema = CompileManifest.model_validate(manifest)
    except (OSError, ValueError) as e:
        what = _problems(e) if isinstance(e, ValidationError) else f"{type(e).__name__}: {e}"
        raise ArtifactError(f"{manifest_path} is not a readable edgevit manifest ({what}). {recompile}") from None
    if schema.manifest_version > MANIFEST_VERSION:
        raise ArtifactError(f"{manifest_path} has manifest version {schema.manifest_version}; this edgevit reads "
                            f"up to {MANIFEST_VERSION}. Upgrade edgevit, or recompile with this one.")
    artifact = folder / schema.artifact.file
    if not artifact.is_file():
        raise ArtifactError(f"{folder} lists {artifact.name} in manifest.json but the file is missing. {recompile}")
    if verify:
        data = artifact.read_bytes()
        if len(data) != schema.artifact.size_bytes or sha256_bytes(data) != schema.artifact.sha256:
            raise ArtifactError(
                f"{artifact} is not the file that was compiled: it has {len(data)} bytes and sha256 "
                f"{sha256_bytes(data)[:16]}…, the manifest says {schema.artifact.size_bytes} bytes and "
                f"{schema.artifact.sha256[:16]}…. It was changed or damaged since; nothing was run. {recompile}")
    return ArtifactFolder(folder, manifest, schema, artifact)
