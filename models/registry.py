"""The weights registry: one table of every published checkpoint facezoom can use.

Each `WeightsEntry` says where the file itself is published (the URL a script downloads, or the
Python package it ships in), what proves a copy authentic (a pinned SHA-256, or the git blob id
GitHub publishes for a committed file; None where nothing is published: never invented), its
licence and training data, its key layout (`models.generators.LAYOUTS`, "pfsr", or "spandrel-face"/"spandrel-frame"
for the restorers and upscalers spandrel detects) and the architecture it must match. `models.weights` fetches, verifies and locates them; this module
holds data only and imports nothing heavy.
"""

from __future__ import annotations

import dataclasses

NON_COMMERCIAL = "non-commercial use only"


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint (see the module docstring)."""

    name: str  # the registry name users type (`sr.generator=...`)
    url: str  # where the publisher hosts the file
    filename: str  # the file name in the cache
    sha256: str | None  # published SHA-256; None = the publisher gives none
    size_bytes: int | None  # exact size when published (checked); None = unknown
    approx_size: str  # for humans: what the download costs
    licence: str
    source: str  # who trained and published it, and where it is described
    layout: str  # key layout: one of models.generators.LAYOUTS, "pfsr" (models.networks.pfsr), or "spandrel-face"/"spandrel-frame" (models.zoo)
    converter: str  # how the file's contents become the generator's state dict
    arch: tuple[tuple[str, object], ...]  # architecture settings the file must match exactly
    description: str
    manual_only: bool = False  # hosted where no script can download it reliably (Google Drive): place it by hand
    git_blob: str | None = None  # the git blob id GitHub publishes for a committed file: SHA-1 of b"blob <size>\0" + bytes
    package: str | None = None  # "module/file": ships inside an installed Python package instead of the cache
    install: str | None = None  # the pip command that installs `package`
    companions: tuple[tuple[str, str, bool], ...] = ()  # (file name, URL, required) of files that go with it
    framing: str = "ffhq"  # how the model's training faces were cropped (the alignment template)
    search: tuple[tuple[str, object], ...] = ()  # PulseBackend settings measured for this prior, where PULSE's differ


PFSR_RAW = "https://raw.githubusercontent.com/DeokyunKim/Progressive-Face-Super-Resolution/master/checkpoints/"
PULSE_DRIVE = "https://drive.google.com/uc?id="  # PULSE.py's own download links


PFSR_CELEBA = WeightsEntry(
    name="pfsr-celeba",
    url=PFSR_RAW + "generator_checkpoint_singleGPU.ckpt",  # committed to the repository: GitHub's raw-file URL
    filename="generator_checkpoint_singleGPU.ckpt",
    sha256=None,  # not published; the git blob id below is
    size_bytes=None,
    approx_size="~36 MB (9.0M float32 weights)",
    licence=f"{NON_COMMERCIAL}: trained on CelebA (non-commercial research only); the PFSR repository states no licence",
    source="Kim et al., BMVC 2019, DeokyunKim/Progressive-Face-Super-Resolution, checkpoints/ (its demo.py/eval.py default)",
    layout="pfsr",
    converter="take 'model_state_dict' (with 'step', 'alpha', 'iteration')",
    arch=(("channels", (512, 256, 128, 64)),),
    description="Progressive Face SR 16x16 -> 128x128, CelebA-aligned faces (sr.backend=ffsr's default)",
    git_blob="231a06b9cd426a79ca044d687b0b7d2e6fb91367",
)

REAL_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
# Real-ESRGAN's code is BSD-3-Clause (xinntao/Real-ESRGAN LICENSE); its releases give the weights no other
# terms, so they are commonly taken to come under it. They were trained on DIV2K (released for academic
# research), Flickr2K and OutdoorSceneTraining: a commercial user should read those datasets' terms too.
REAL_ESRGAN_LICENCE = ("BSD-3-Clause (xinntao/Real-ESRGAN, which states no separate terms for its weights); "
                       "trained on DIV2K (academic research only), Flickr2K and OST")
# The SHA-256s and sizes below are not published by xinntao: they are those recorded, identically, by several
# independent projects that pin the official release assets (AUR python-realesrgan's PKGBUILD and others);
# facezoom's authors could not download the files to check them here (the work machine has no network).


def _frame_model(name: str, release: str, *, sha256: str, size: int, scale: int, arch: str, layout: str, description: str) -> WeightsEntry:
    """A Real-ESRGAN release asset: a whole-frame upscaler (composite.upscaler), read by spandrel."""
    return WeightsEntry(
        name=name, url=f"{REAL_ESRGAN}{release}/{name}.pth", filename=f"{name}.pth", sha256=sha256, size_bytes=size,
        approx_size=f"{size / 1e6:.0f} MB", licence=REAL_ESRGAN_LICENCE,
        source=f"Wang et al., Real-ESRGAN (ICCVW 2021), xinntao/Real-ESRGAN release {release}", layout="spandrel-frame",
        converter=f"none: spandrel detects {arch} in the {layout} state dict", arch=(("scale", scale),), description=description)


FRAME_MODELS = (  # whole-frame upscalers for -s 2 / -s 4 (models/frame_sr.py); read by spandrel, not models.generators
    _frame_model("RealESRGAN_x4plus", "v0.1.0", sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
                 size=67040989, scale=4, arch="RRDBNet (23 blocks, 64 features)", layout="'params_ema'",
                 description="Real-ESRGAN 4x for real-world photos and video (RRDBNet, 16.7M weights): best detail, slowest"),
    _frame_model("RealESRGAN_x2plus", "v0.2.1", sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
                 size=67061725, scale=2, arch="RRDBNet (pixel-unshuffle by 2, 23 blocks)", layout="'params_ema'",
                 description="Real-ESRGAN 2x (RRDBNet on the frame unshuffled by 2, 16.7M weights)"),
    _frame_model("realesr-general-x4v3", "v0.2.5.0", sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
                 size=4885111, scale=4, arch="SRVGGNetCompact (32 convs, 64 features)", layout="'params'",
                 description="Real-ESRGAN's small general 4x model (SRVGGNetCompact, 1.2M weights): many times faster than x4plus"),
)


GFPGAN_RELEASES = "https://github.com/TencentARC/GFPGAN/releases/download/"
# Face restorers (`sr.backend=restore`, models/backends/restore.py), loaded through spandrel (models/zoo.py),
# which recognises the architecture from the keys: `arch` stays empty. Their publishers give no
# checksums: each is trusted on first use (its SHA-256 recorded on arrival, checked at every load).
GFPGAN_ENTRY = WeightsEntry(
    name="gfpgan-1.4",
    url=GFPGAN_RELEASES + "v1.3.0/GFPGANv1.4.pth",  # published with release v1.3.0 (inference_gfpgan.py's URL)
    filename="GFPGANv1.4.pth",
    sha256=None,  # not published by TencentARC/GFPGAN
    size_bytes=None,
    approx_size="~350 MB (86M float32 weights; 512x512 faces)",
    licence=f"{NON_COMMERCIAL}: trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0); GFPGAN's code is Apache 2.0",
    source="Wang et al., CVPR 2021, TencentARC/GFPGAN release v1.3.0: GFPGANv1Clean (channel multiplier 2)",
    layout="spandrel-face",
    converter="take the 'params_ema' state dict",
    arch=(),
    description="GFPGAN v1.4 face restorer, 512x512 FFHQ-aligned faces (more detail and identity than v1.3)",
)
FACE_RESTORERS = (
    GFPGAN_ENTRY,
    dataclasses.replace(
        GFPGAN_ENTRY,
        name="gfpgan-1.3",
        url=GFPGAN_RELEASES + "v1.3.0/GFPGANv1.3.pth",
        filename="GFPGANv1.3.pth",
        description="GFPGAN v1.3 face restorer, 512x512 FFHQ-aligned faces (smoother, more natural than v1.4)",
    ),
    dataclasses.replace(
        GFPGAN_ENTRY,
        name="restoreformer",
        url=GFPGAN_RELEASES + "v1.3.4/RestoreFormer.pth",
        filename="RestoreFormer.pth",
        approx_size="~290 MB (73M float32 weights; 512x512 faces)",
        licence=f"{NON_COMMERCIAL}: trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0); RestoreFormer's and GFPGAN's code is Apache 2.0",
        source="Wang et al., CVPR 2022 (wzhouxiff/RestoreFormer), as republished in TencentARC/GFPGAN release v1.3.4",
        converter="take the 'params_ema' (or 'params') state dict",
        description="RestoreFormer face restorer, 512x512 FFHQ-aligned faces",
    ),
    dataclasses.replace(
        GFPGAN_ENTRY,
        name="codeformer",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        filename="codeformer.pth",
        approx_size="~380 MB (94M float32 weights; 512x512 faces)",
        licence=f"{NON_COMMERCIAL}: S-Lab License 1.0 (non-commercial; weights and code); trained on FFHQ",
        source="Zhou et al., NeurIPS 2022, sczhou/CodeFormer release v0.1.0 (needs spandrel_extra_arches)",
        description="CodeFormer face restorer, 512x512 FFHQ-aligned faces; sr.codeformer_w trades quality (0) for fidelity (1)",
    ),
)


REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            name="stylegan2-ffhq-512",
            url="https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth",
            filename="StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth",
            sha256=None,  # not published by TencentARC/GFPGAN
            size_bytes=None,  # not published
            approx_size="~100 MB (25.6M float32 weights)",
            licence=f"{NON_COMMERCIAL}: trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0); released with GFPGAN",
            source="TencentARC/GFPGAN release v0.1.0 (the StyleGAN2 prior GFPGAN was trained with), BasicSR StyleGAN2Generator",
            layout="basicsr-stylegan2",
            converter="take the 'params_ema' state dict",
            arch=(("resolution", 512), ("channel_multiplier", 1)),
            description="StyleGAN2 FFHQ 512x512, channel multiplier 1 (the default: faster; can render at 128/256)",
        ),
        WeightsEntry(
            name="stylegan1-ffhq-1024",
            url="https://github.com/lernapparat/lernapparat/releases/download/v2019-02-01/karras2019stylegan-ffhq-1024x1024.for_g_all.pt",
            filename="karras2019stylegan-ffhq-1024x1024.for_g_all.pt",
            sha256=None,  # not published by lernapparat
            size_bytes=None,  # not published
            approx_size="~105 MB (26.2M float32 weights)",
            licence=f"{NON_COMMERCIAL}: NVIDIA StyleGAN FFHQ weights, CC BY-NC 4.0",
            source="NVlabs/stylegan FFHQ 1024 (Karras et al. 2019), converted to PyTorch by lernapparat; the network PULSE used",
            layout="lernapparat-stylegan1",
            converter="none (a flat g_mapping.*/g_synthesis.* state dict)",
            arch=(("resolution", 1024),),
            description="StyleGAN (v1) FFHQ 1024x1024, as in the PULSE paper (always renders 1024)",
        ),
        WeightsEntry(
            name="pulse-stylegan1-ffhq-1024",
            url=PULSE_DRIVE + "1TCViX1YpQyRsklTVYEJwdbmK91vklCo8",
            filename="pulse/synthesis.pt",
            sha256=None,  # not published
            size_bytes=None,
            approx_size="~100 MB (synthesis.pt) + ~8 MB (mapping.pt)",
            licence=f"{NON_COMMERCIAL}: NVIDIA StyleGAN FFHQ weights, CC BY-NC 4.0",
            source="alex-damian/pulse (PULSE.py downloads them into its cache/ folder as <hash>_synthesis.pt and "
                   "<hash>_mapping.pt; gaussian_fit.pt is written beside PULSE.py): the same StyleGAN as stylegan1-ffhq-1024",
            layout="lernapparat-stylegan1",
            converter="synthesis.pt and mapping.pt joined under g_synthesis./g_mapping. (PULSE's epiN.noise -> epiN.top_epi.noise)",
            arch=(("resolution", 1024),),
            description="PULSE's own cache files: StyleGAN (v1) FFHQ 1024 as synthesis.pt + mapping.pt (+ gaussian_fit.pt); "
                        "or pass sr.generator=PATH/TO/pulse/cache",
            manual_only=True,
            companions=(("pulse/mapping.pt", PULSE_DRIVE + "14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k", True),
                        ("pulse/gaussian_fit.pt", "", False)),
        ),
        PFSR_CELEBA,
        dataclasses.replace(
            PFSR_CELEBA,
            name="pfsr-celeba-ddp",
            url=PFSR_RAW + "generator_checkpoint.ckpt",
            filename="generator_checkpoint.ckpt",
            source="Kim et al., BMVC 2019, DeokyunKim/Progressive-Face-Super-Resolution, checkpoints/: the distributed (apex) training run",
            converter="take 'model_state_dict', dropping the data-parallel 'module.' prefixes",
            description="Progressive Face SR 16x16 -> 128x128, the multi-GPU run's weights",
            git_blob="f338756f7ea2c4d5139a5960c67235bae07235e7",
        ),
        dataclasses.replace(
            PFSR_CELEBA,
            name="pfsr-celeba-unaligned",
            url=PFSR_RAW + "unalign_trained_generator_checkpoint.ckpt",
            filename="unalign_trained_generator_checkpoint.ckpt",
            source="Kim et al., BMVC 2019, DeokyunKim/Progressive-Face-Super-Resolution, checkpoints/: trained on unaligned CelebA faces",
            description="Progressive Face SR 16x16 -> 128x128, trained on unaligned CelebA faces (facezoom still feeds it aligned crops)",
            git_blob="8aaa6ccfb49439d76d77824034559d8678f05e20",
        ),
        WeightsEntry(
            name="dcgan-digiface-64",
            url="https://pypi.org/project/gan-face-generate/1.1.1/",  # ships inside the wheel; pip fetches it
            filename="gan_face_generate/weights.tar",
            sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",  # of the file in the 1.1.1 wheel
            size_bytes=14322251,
            approx_size="14 MB inside the 13 MB gan-face-generate wheel (3.6M float32 weights)",
            licence="weights: MIT (the gan-face-generate wheel); training data: DigiFace-1M (Microsoft), "
                    f"{NON_COMMERCIAL} (non-commercial research)",
            source="chien-liu/DCGAN-PyTorch, published on PyPI as gan-face-generate 1.1.1: the PyTorch DCGAN tutorial's "
                   "generator trained on DigiFace-1M's synthetic rendered faces",
            layout="dcgan",
            converter="take 'netG_state_dict' (the tutorial's main.N.* keys)",
            arch=(("resolution", 64), ("z_dim", 100), ("ngf", 64)),
            description="a small demonstration face prior, 64x64 (z of 100): it invents rendered-looking faces, not photographs",
            package="gan_face_generate/weights.tar",
            framing="arcface",  # DigiFace-1M's 112x112 face-recognition crops, resized to 64
            # A cold search's peak learning rate: on 16 faces it drew, shrunk to 16x16, 100 steps reached eps
            # on 62% at PULSE's 0.4, 81% at 1.0, 88% at 1.5-3.0 (z has 100 dimensions, not 18 x 512);
            # warm starts keep 0.05 (the least flicker on its latent paths). benchmarks/real_prior.py.
            # Its faces' framing is searched too: MTCNN's landmarks frame them a few per cent off the way
            # it draws them, and then no face it draws fits the crop to eps (models/reframe.py).
            search=(("learning_rate", 1.5), ("refine_framing", True)),
            install="pip install gan-face-generate==1.1.1",
        ),
        *FRAME_MODELS,
        *FACE_RESTORERS,
    )
}
DEFAULT = "stylegan2-ffhq-512"
