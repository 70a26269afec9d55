"""The registry of named models: what each name means and where its weights come from.

A :class:`ModelSpec` is pure data (no torch): family, architecture, official download
URL, file name in the cache, SHA-256, exact size in bytes, licence, parameter count and
a one-line "when to use it". ``REGISTRY`` maps names to specs in display order;
:func:`get_spec` looks a name up, forgiving case and ``_`` vs ``-``.

Adding a model family (SAM 2.1, MobileSAM …): append its specs to ``_SPECS`` with
``family`` set to the family's key (``"sam2"``, ``"mobilesam"``), and teach
``terramask.models.resolve`` how to load that family.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from terramask.core.errors import UnknownModelError

FAMILIES = ("sam", "sam2", "mobilesam", "classic", "grounding-dino", "owlv2", "sam3")
DETECTOR_FAMILIES = ("grounding-dino", "owlv2")
"""Open-vocabulary detectors: boxes per phrase for the detector + SAM concept route."""
CONCEPT_FAMILIES = (*DETECTOR_FAMILIES, "sam3")
"""Models of the concept route (:mod:`terramask.models.concept`), loaded by
``concept.resolve.load_concept_backend``, not by ``resolve.load_backend``."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face model repository snapshot.

    ``path`` inside the repository; ``size_bytes`` and ``sha256`` when published and
    recorded here (``None``: not checked); ``required=False`` for files a repository may
    lack (e.g. a slow tokenizer's vocabulary beside ``tokenizer.json``): a 404 skips it.
    """

    path: str
    size_bytes: int | None = None
    sha256: str | None = None
    required: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """One named model.

    ``arch`` is the family's architecture key (SAM: ``vit_b``/``vit_l``/``vit_h``;
    ``None`` lets the backend infer it from the checkpoint). ``url``, ``filename``,
    ``sha256`` (lower-case hex) and ``size_bytes`` are ``None`` for weight-free models.
    ``config`` is a family-specific build configuration (e.g. SAM 2's config name).
    ``params_millions`` counts all parameters of the model (encoder + prompt encoder +
    decoder).

    Hugging Face models (the concept route) are *snapshots*: ``repo`` (``org/name``),
    ``revision`` and ``files`` name what to fetch from ``{endpoint}/{repo}/resolve/
    {revision}/{path}`` (see :mod:`terramask.models.snapshot`); ``filename`` is then the
    snapshot's directory in the cache, ``url`` the repository page, ``sha256`` ``None``
    (each file carries its own) and ``size_bytes`` the approximate download size, for
    display. ``gated``: the weights need a licence accepted on the hub first.
    """

    name: str
    family: str
    arch: str | None
    url: str | None
    filename: str | None
    sha256: str | None
    size_bytes: int | None
    licence: str
    params_millions: float | None
    when_to_use: str
    config: str | None = None
    repo: str | None = None
    revision: str = "main"
    files: tuple[HubFile, ...] = ()
    gated: bool = False

    @property
    def needs_weights(self) -> bool:
        """True when the model loads a checkpoint file."""
        return self.filename is not None

    @property
    def is_snapshot(self) -> bool:
        """True for a Hugging Face repository snapshot (a directory of files)."""
        return self.repo is not None


_SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# SHA-256 values: computational-cell-analytics/micro-sam, micro_sam/util.py (its pooch
# registry of the official SAM checkpoints), cross-checked against several independent
# public download manifests that list both size and SHA-256 for these three files (all
# agreed). Byte sizes: the same manifests, and for ViT-B also a recorded `wget` of the
# official URL ("Length: 375042383 (358M)"). Not verified against the live files here
# (no network); `download()` checks both on every download.
# Parameter counts: counted here by building the official `segment_anything`
# architectures (vit_b 93,735,472; vit_l 312,342,832; vit_h 641,090,608).
_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="sam-vit-b",
        family="sam",
        arch="vit_b",
        url=_SAM_BASE_URL + "sam_vit_b_01ec64.pth",
        filename="sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        size_bytes=375_042_383,
        licence="Apache-2.0",
        params_millions=93.7,
        when_to_use="Default SAM: fastest of the three on CPU; clear objects (buildings, fields, water).",
    ),
    ModelSpec(
        name="sam-vit-l",
        family="sam",
        arch="vit_l",
        url=_SAM_BASE_URL + "sam_vit_l_0b3195.pth",
        filename="sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        size_bytes=1_249_524_607,
        licence="Apache-2.0",
        params_millions=312.3,
        when_to_use="Better masks than ViT-B on thin or low-contrast objects for ~3x its encoder cost; near ViT-H quality.",
    ),
    ModelSpec(
        name="sam-vit-h",
        family="sam",
        arch="vit_h",
        url=_SAM_BASE_URL + "sam_vit_h_4b8939.pth",
        filename="sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        size_bytes=2_564_550_879,
        licence="Apache-2.0",
        params_millions=641.1,
        when_to_use="Best SAM quality, ~7x ViT-B's encoder cost; use with a GPU or precomputed embeddings.",
    ),
    # SAM 2.1 (facebookresearch/sam2, release 092824). SHA-256 and byte sizes: each agreed
    # across several independent public manifests found with the code search (download
    # scripts and registries that pin these files, e.g. a pooch-style HASHES table for
    # all four, checkpoint-verification scripts, recorded `sha256sum` outputs); not
    # verified against the live files here (no network); `download()` checks both.
    # Parameter counts: counted here by building the official sam2.1 configs (whole
    # model incl. the video memory modules: 38,962,498 / 46,060,354 / 80,850,178 /
    # 224,446,642), equal to the official README's 38.9 / 46 / 80.8 / 224.4 M.
    ModelSpec(
        name="sam2.1-hiera-tiny",
        family="sam2",
        arch="sam2.1_hiera_t",
        url=_SAM2_BASE_URL + "sam2.1_hiera_tiny.pt",
        filename="sam2.1_hiera_tiny.pt",
        sha256="7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        size_bytes=156_008_466,
        licence="Apache-2.0",
        params_millions=39.0,
        when_to_use="Smallest SAM 2.1: much cheaper encoder than SAM ViT-B, similar mask quality; good CPU default for SAM 2.",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
    ),
    ModelSpec(
        name="sam2.1-hiera-small",
        family="sam2",
        arch="sam2.1_hiera_s",
        url=_SAM2_BASE_URL + "sam2.1_hiera_small.pt",
        filename="sam2.1_hiera_small.pt",
        sha256="6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        size_bytes=184_416_285,
        licence="Apache-2.0",
        params_millions=46.1,
        when_to_use="A little slower than tiny, slightly better masks.",
        config="configs/sam2.1/sam2.1_hiera_s.yaml",
    ),
    ModelSpec(
        name="sam2.1-hiera-base-plus",
        family="sam2",
        arch="sam2.1_hiera_b+",
        url=_SAM2_BASE_URL + "sam2.1_hiera_base_plus.pt",
        filename="sam2.1_hiera_base_plus.pt",
        sha256="a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        size_bytes=323_606_802,
        licence="Apache-2.0",
        params_millions=80.9,
        when_to_use="Balanced SAM 2.1: better on thin and low-contrast objects, about 2x tiny's encoder cost.",
        config="configs/sam2.1/sam2.1_hiera_b+.yaml",
    ),
    ModelSpec(
        name="sam2.1-hiera-large",
        family="sam2",
        arch="sam2.1_hiera_l",
        url=_SAM2_BASE_URL + "sam2.1_hiera_large.pt",
        filename="sam2.1_hiera_large.pt",
        sha256="2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        size_bytes=898_083_611,
        licence="Apache-2.0",
        params_millions=224.4,
        when_to_use="Best SAM 2.1 quality; slow on CPU, use a GPU or precomputed embeddings.",
        config="configs/sam2.1/sam2.1_hiera_l.yaml",
    ),
    # MobileSAM (ChaoningZhang/MobileSAM, weights/mobile_sam.pt on master). SHA-256 and
    # size: two independent public manifests found with the code search agree (one
    # pinning the raw file at upstream commit f706ad9c). Parameters: counted here by
    # building the architecture (10,130,092; TinyViT encoder 6,065,532).
    ModelSpec(
        name="mobilesam",
        family="mobilesam",
        arch="vit_t",
        url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
        filename="mobile_sam.pt",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        size_bytes=40_728_226,
        licence="Apache-2.0",
        params_millions=10.1,
        when_to_use="Fastest SAM-family model (TinyViT encoder, SAM decoder); coarser masks than SAM ViT-B. Use for quick interactive work on CPU.",
    ),
    ModelSpec(
        name="classic",
        family="classic",
        arch=None,
        url=None,
        filename=None,
        sha256=None,
        size_bytes=None,
        licence="n/a (no weights)",
        params_millions=None,
        when_to_use="Weight-free baseline (GrabCut / random walker from your prompts); works offline, no download.",
    ),
)

# Concept-route models (issue 11): Hugging Face repositories loaded with `transformers`.
# Files: what `from_pretrained` reads (config, weights, processor and tokenizer files).
# Parameter counts: counted here by building the `transformers` architectures on the meta
# device from the repositories' configurations (Grounding DINO tiny = the default config,
# base = Swin-B 384 backbone; OWLv2 base/16 at 960 px; SAM 3: the image model `Sam3Model`
# builds, without the video tracker the checkpoint also holds). Sizes: approximate
# float32 safetensors downloads (parameters x 4 bytes; SAM 3 with its tracker), for display;
# no per-file SHA-256 is recorded here (no network to read the hub's published LFS hashes).
_HF_PAGE = "https://huggingface.co/"
# repositories saved by older `transformers` hold preprocessor_config.json, newer ones processor_config.json
_PROCESSOR = (HubFile("preprocessor_config.json", required=False), HubFile("processor_config.json", required=False))
_BERT_TOKENIZER = (
    HubFile("tokenizer_config.json"),
    HubFile("special_tokens_map.json", required=False),
    HubFile("tokenizer.json", required=False),
    HubFile("vocab.txt", required=False),
)
_CLIP_TOKENIZER = (
    HubFile("tokenizer_config.json"),
    HubFile("special_tokens_map.json", required=False),
    HubFile("tokenizer.json", required=False),
    HubFile("vocab.json", required=False),
    HubFile("merges.txt", required=False),
)


def _hub_spec(repo: str, name: str, family: str, **fields) -> ModelSpec:
    base = repo.split("/")[-1]
    return ModelSpec(name=name, family=family, url=_HF_PAGE + repo, filename=base, sha256=None, repo=repo, **fields)


_SPECS = _SPECS + (
    _hub_spec(
        "IDEA-Research/grounding-dino-tiny",
        "grounding-dino-tiny",
        "grounding-dino",
        arch="swin-t",
        size_bytes=689_000_000,
        licence="Apache-2.0",
        params_millions=172.3,
        when_to_use="Detector for `terramask find --text`: boxes per phrase, then SAM masks each box; CPU-friendly default.",
        files=(HubFile("config.json"), *_PROCESSOR, *_BERT_TOKENIZER, HubFile("model.safetensors")),
    ),
    _hub_spec(
        "IDEA-Research/grounding-dino-base",
        "grounding-dino-base",
        "grounding-dino",
        arch="swin-b",
        size_bytes=929_000_000,
        licence="Apache-2.0",
        params_millions=232.3,
        when_to_use="Larger Grounding DINO (Swin-B): better recall on small or rare objects, ~1.5x tiny's cost.",
        files=(HubFile("config.json"), *_PROCESSOR, *_BERT_TOKENIZER, HubFile("model.safetensors")),
    ),
    _hub_spec(
        "google/owlv2-base-patch16-ensemble",
        "owlv2-base",
        "owlv2",
        arch="vit-b/16",
        size_bytes=620_000_000,
        licence="Apache-2.0",
        params_millions=155.0,
        when_to_use="OWLv2 detector for `find --text`: scores every phrase separately; good on many classes at once.",
        files=(HubFile("config.json"), *_PROCESSOR, *_CLIP_TOKENIZER, HubFile("model.safetensors")),
    ),
    _hub_spec(
        "facebook/sam3",
        "sam3",
        "sam3",
        arch="sam3",
        size_bytes=3_450_000_000,
        licence="SAM License (gated: accept it on Hugging Face first)",
        params_millions=840.4,
        when_to_use="SAM 3: phrases and example boxes give every instance with masks, no detector needed; "
        "gated weights, heavy on CPU.",
        files=(HubFile("config.json"), *_PROCESSOR, *_CLIP_TOKENIZER, HubFile("model.safetensors")),
        gated=True,
    ),
)

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def normalise_name(name: str) -> str:
    """Canonical spelling of a model name: lower case, ``-`` instead of ``_``/spaces."""
    return "-".join(name.strip().lower().replace("_", "-").split())


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name`` (case and ``_``/``-`` insensitive), or the model of a
    fine-tuning run directory ``name`` (:mod:`terramask.models.finetune.run_dir`).

    Raises :class:`UnknownModelError` listing the known names and the closest matches.
    """
    key = normalise_name(name)
    spec = REGISTRY.get(key)
    if spec is not None:
        return spec
    from terramask.models.finetune.run_dir import run_model

    run = run_model(name)  # a fine-tuning run directory (`--model RUN_DIR`)
    if run is not None:
        return run.spec
    known = list(REGISTRY)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(known)}")


def list_specs(family: str | None = None) -> list[ModelSpec]:
    """All specs in display order, optionally only one family."""
    return [spec for spec in REGISTRY.values() if family is None or spec.family == family]


def spec_for_filename(filename: str) -> ModelSpec | None:
    """The spec whose official checkpoint file is called ``filename``, if any (snapshot
    folders of Hugging Face models are not checkpoint files)."""
    for spec in REGISTRY.values():
        if spec.filename is not None and not spec.is_snapshot and spec.filename == filename:
            return spec
    return None
