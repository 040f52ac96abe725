"""The bundled synthetic head CT as a SampleData source (two clicks to try the module).

:func:`sample_sources` reads ``Resources/Samples/samples.json`` (file names and SHA-256);
:func:`register_sample_data` passes them to Slicer's SampleData logic, which verifies the
checksum when it loads the file.  The logic class is passed in, so this runs without Slicer;
:func:`register_in_slicer` passes Slicer's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ichseg.resources import resources_dir

__all__ = ["CATEGORY", "ICON", "SampleSource", "register_in_slicer", "register_sample_data", "sample_sources"]

CATEGORY = "ICH Segmentation"
#: The module icon, the samples' thumbnail (``Resources`` sits next to this package, installed or not).
ICON = Path(__file__).parent.parent / "Resources" / "Icons" / "ICHSegmentation.png"


@dataclass(frozen=True)
class SampleSource:
    """Arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for one sample."""

    name: str
    uris: list[str]
    file_names: list[str]
    node_names: list[str]
    checksums: list[str]
    load_file_types: list[str]
    description: str


def sample_sources(folder: Path | None = None) -> list[SampleSource]:
    """One source per sample: its CT, loaded as a volume (the reference label stays for the tests/CLI)."""
    folder = folder or resources_dir() / "Samples"
    index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    sources = []
    for name, entry in sorted(index.items()):
        files = [(entry["file"], entry["sha256"], name, "VolumeFile")]
        for file_name, _, _, _ in files:
            if not (folder / file_name).is_file():
                raise FileNotFoundError(f"bundled sample file missing: {folder / file_name}")
        sources.append(
            SampleSource(
                name=name,
                uris=[(folder / f).resolve().as_uri() for f, _, _, _ in files],
                file_names=[f for f, _, _, _ in files],
                node_names=[n for _, _, n, _ in files],
                checksums=[f"SHA256:{s}" for _, s, _, _ in files],
                load_file_types=[t for _, _, _, t in files],
                description=entry.get("description", ""),
            )
        )
    return sources


def register_sample_data(sample_data_logic, thumbnail: str | None = None) -> list[str]:
    """Register every bundled sample with ``SampleData.SampleDataLogic``; returns their names."""
    names = []
    for source in sample_sources():
        sample_data_logic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=source.name,
            uris=source.uris,
            fileNames=source.file_names,
            nodeNames=source.node_names,
            thumbnailFileName=thumbnail,
            loadFileTypes=source.load_file_types,
            checksums=source.checksums,
        )
        names.append(source.name)
    return names


def register_in_slicer() -> list[str]:
    """Register the bundled samples in Slicer's Sample Data module (at startup)."""
    import SampleData

    return register_sample_data(SampleData.SampleDataLogic, thumbnail=str(ICON))
