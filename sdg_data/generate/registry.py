"""The text-to-image generators of SDG-30K, each a diffusers pipeline with the settings its model card recommends.

Anything else diffusers loads (a hub id or a local pipeline folder) works too: it gets the generic settings and
whatever the recipe or the flags give.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GeneratorSpec:
    name: str  # what goes into records' `generator` (the SDG-30K names for the four)
    model_id: str  # hub id or local folder
    pipeline_class: str | None  # diffusers class name; None: DiffusionPipeline picks from model_index.json
    steps: int
    guidance_scale: float | None
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # other arguments the card passes to the pipeline
    dtype: str = "bfloat16"
    revision: str | None = None


_SPECS = [
    # FLUX.2: guidance-distilled (one pass, the scale is an input of the transformer)
    GeneratorSpec("FLUX.2-dev", "black-forest-labs/FLUX.2-dev", "Flux2Pipeline", steps=50, guidance_scale=4.0),
    # Z-Image-Turbo: distilled, 9 steps = 8 transformer evaluations, no classifier-free guidance
    GeneratorSpec("Z-Image-Turbo", "Tongyi-MAI/Z-Image-Turbo", "ZImagePipeline", steps=9, guidance_scale=0.0),
    GeneratorSpec(
        "LongCat-Image",
        "meituan-longcat/LongCat-Image",
        "LongCatImagePipeline",
        steps=50,
        guidance_scale=4.5,
        call_kwargs={"enable_cfg_renorm": True, "enable_prompt_rewrite": True},
    ),  # fmt: skip
    GeneratorSpec(
        "SANA-1.5-1.6B",
        "Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers",
        "SanaPipeline",
        steps=20,
        guidance_scale=4.5,
    ),  # fmt: skip
]
# Not an SDG-30K generator: the base model BoxFlow-GRPO aligns (guidance-distilled, one pass; the paper's 28 steps)
OTHERS = {"FLUX.1-dev": GeneratorSpec("FLUX.1-dev", "black-forest-labs/FLUX.1-dev", "FluxPipeline", 28, 3.5)}
REGISTRY: dict[str, GeneratorSpec] = {spec.name: spec for spec in _SPECS}  # the four of SDG-30K
ALIASES = {
    "flux1": "FLUX.1-dev",
    "flux2": "FLUX.2-dev",
    "z-image": "Z-Image-Turbo",
    "longcat": "LongCat-Image",
    "sana": "SANA-1.5-1.6B",
}


def resolve(spec: str, model_paths: dict[str, str] | None = None) -> GeneratorSpec:
    """A registry name (or alias), optionally redirected to a local copy by ``model_paths``; else any diffusers
    model id or pipeline folder, named by its last path part."""
    name = ALIASES.get(spec, spec)
    known = {**REGISTRY, **OTHERS}
    by_id = {e.model_id: e for e in known.values()}  # a registry model named by its hub id gets its settings
    if name in known or spec in by_id:
        entry = known[name] if name in known else by_id[spec]
        local = (model_paths or {}).get(name) or (model_paths or {}).get(spec)
        return replace(entry, model_id=local) if local else entry
    p = Path(spec)
    looks_local = p.exists()
    if not looks_local and spec.count("/") != 1:
        names = ", ".join(known)
        raise ValueError(f"generator {spec!r}: not a registry name ({names}), a local pipeline folder or a hub id")
    return GeneratorSpec(
        name=p.name if looks_local else spec.split("/")[-1],
        model_id=spec,
        pipeline_class=None,
        steps=28,
        guidance_scale=None,
        dtype="auto",
    )


def slug(name: str) -> str:
    """A folder-safe form of a generator name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
