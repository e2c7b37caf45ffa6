"""Exported models: a trained run as safetensors + JSON, the form a model ships in (and the package's own).

A run folder (`tumorgen train`) holds pickled torch checkpoints with optimizer state and generator
states: what resuming needs, ten times what synthesis needs, and a format that must be read with
care. `export_model(RUN, OUT)` keeps what synthesis needs:

    OUT/model.json          format, name, the run's config and data record (uptake draw, grid,
                            intensity), the VAE's latent scale, steps, and the SHA-256 of each file
    OUT/vae.safetensors     the VAE's EMA weights
    OUT/flow.safetensors    the SC-VFE U-Net's and the VMR refiner's EMA weights
    OUT/MODEL_CARD.md       what it was trained on, how, how good it is, what it is for (written by hand)

`load_model_folder(OUT)` checks every weights file against model.json's SHA-256 before reading it, and
reads tensors with safetensors only (no pickle on the load path), so a corrupted or swapped file is
refused with one sentence. Bundled models are such folders under `tumorgen/bundled/`, found by name.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from tumorgen.config import from_dict, to_dict
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.atomic import staged_dir, write_json
from tumorgen.io.files import sha256_file

FORMAT = "tumorgen-model"
VERSION = 1
MODEL_FILE = "model.json"
WEIGHT_FILES = ("vae.safetensors", "flow.safetensors")
DEFAULT_MODEL = "ibsi-fdg"  # the model `TumorGen.load()` and every command use when none is named


def bundled_root() -> Path:
    """The package folder that holds the bundled models, one folder each."""
    return Path(str(resources.files("tumorgen"))) / "bundled"


def bundled_models() -> dict[str, Path]:
    """Bundled model name -> folder, for every folder under `tumorgen/bundled/` with a model.json."""
    root = bundled_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / MODEL_FILE).is_file()}


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is an exported model folder (rather than a run folder)."""
    return (Path(path) / MODEL_FILE).is_file()


def resolve_model(source: str | Path | None) -> Path:
    """The folder a model source names: None -> the default bundled model, a bundled name, or a path.

    A path wins over a bundled name of the same spelling, so `./ibsi-fdg` is always the local folder.
    """
    if source is None:
        source = DEFAULT_MODEL
    path = Path(source)
    if path.exists():
        return path
    bundled = bundled_models()
    if str(source) in bundled:
        return bundled[str(source)]
    if isinstance(source, str) and "/" not in source and "\\" not in source:
        names = ", ".join(bundled) or "none are installed"
        raise TumorGenError(f"'{source}' is neither a folder nor a bundled model (bundled: {names}; "
                            "see `tumorgen models`)")
    raise fail_on(path, "does not exist; --model needs a run folder, an exported model folder or a bundled "
                        "model's name")


def read_model_record(folder: str | Path) -> dict:
    """model.json of an exported model, checked for format, version and the fields synthesis needs."""
    folder = Path(folder)
    path = folder / MODEL_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise fail_on(folder, f"is not an exported model folder (it has no {MODEL_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail_on(path, f"is not valid JSON ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise fail_on(path, f"is not a TumorGen model record (no format '{FORMAT}')")
    if record.get("version") != VERSION:
        raise fail_on(path, f"has model format version {record.get('version')!r}; this TumorGen reads {VERSION}")
    missing = [k for k in ("name", "config", "data", "scale_factor", "steps", "sha256") if k not in record]
    if missing:
        raise fail_on(path, f"is incomplete (missing {', '.join(missing)})")
    return record


def verified_state(folder: Path, name: str, record: dict) -> dict[str, torch.Tensor]:
    """The tensors of one weights file, after its SHA-256 matched the one model.json pins."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / name
    pinned = record["sha256"].get(name)
    if not path.is_file():
        raise fail_on(path, "is missing from the model folder")
    if not isinstance(pinned, str):
        raise fail_on(folder / MODEL_FILE, f"pins no SHA-256 for {name}")
    if sha256_file(path) != pinned:
        raise fail_on(path, "does not match the SHA-256 in model.json: the file is corrupted or was replaced")
    try:
        state = load_file(str(path), device="cpu")
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # float16 exports
    except (SafetensorError, OSError, ValueError) as err:
        raise fail_on(path, f"is not a readable safetensors file ({' '.join(str(err).split())[:160]})") from None


def export_model(run_dir: str | Path, out: str | Path, *, name: str | None = None, half: bool = False,
                 overwrite: bool = False) -> Path:
    """Write `run_dir`'s EMA weights, config and data record as an exported model folder `out`.

    Args:
        run_dir: a finished `tumorgen train` run folder.
        out: the new folder (written whole in a staging folder, then renamed: never half-written).
        name: the model's name (default: `out`'s folder name).
        half: store floating-point weights as float16 (half the size; they are computed in float32
            after loading, so only the weights' rounding differs).
        overwrite: replace an existing `out`.
    """
    from safetensors.torch import save_file

    from tumorgen import __version__
    from tumorgen.training.checkpoint import load_checkpoint
    from tumorgen.training.run_folder import load_run

    run_dir, out = Path(run_dir), Path(out)
    run = load_run(run_dir, device="cpu", use_ema=True)
    vae_payload = load_checkpoint(run_dir / "vae.pt", expected_kind="vae")
    flow = torch.nn.ModuleDict({"unet": run.models.unet, "refiner": run.models.refiner}
                               if run.models.refiner is not None else {"unet": run.models.unet})
    states = {"vae.safetensors": run.models.vae.state_dict(), "flow.safetensors": flow.state_dict()}
    stored = torch.float16 if half else torch.float32
    with staged_dir(out, overwrite=overwrite) as tmp:
        for file_name, state in states.items():
            save_file({k: (v.to(stored) if v.is_floating_point() else v).detach().cpu().contiguous()
                       for k, v in state.items()}, str(tmp / file_name))
        data = {k: v for k, v in run.data_info.items() if k != "vae_sha256"}
        record = {
            "format": FORMAT, "version": VERSION, "name": name or out.name, "tumorgen_version": __version__,
            "config": to_dict(run.config), "data": data, "scale_factor": run.scale_factor,
            "steps": {"vae": int(vae_payload["step"]), "tumorgen": run.step},
            "train_seconds": {"vae": vae_payload["extra"].get("train_seconds"),
                              "tumorgen": _train_seconds(run_dir)},
            "weights_dtype": str(stored).removeprefix("torch."),
            "sha256": {f: sha256_file(tmp / f) for f in WEIGHT_FILES},
        }
        write_json(tmp / MODEL_FILE, record)
    return out


def _train_seconds(run_dir: Path) -> float | None:
    from tumorgen.training.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt", expected_kind="tumorgen")["extra"].get("train_seconds")


def load_model_folder(folder: str | Path, *, device: torch.device | str = "cpu", lite: bool = True):
    """Rebuild an exported model as a `run_folder.LoadedRun` (EMA weights, eval mode, no gradients).

    Args:
        folder: an exported model folder (see the module docstring).
        device: where to put the networks.
        lite: build the networks without importing MONAI (`models/lite_*`; same weights, same outputs).
    """
    from tumorgen.models.tumorgen import TumorGenModels
    from tumorgen.models.vae import build_vae
    from tumorgen.training.run_folder import LoadedRun, build_flow_models, load_weights

    folder = Path(folder)
    record = read_model_record(folder)
    try:
        cfg = from_dict(record["config"], source=str(folder / MODEL_FILE))
    except TumorGenError as err:
        raise fail_on(folder / MODEL_FILE, f"holds a config this TumorGen cannot read ({err})") from None
    scale = record["scale_factor"]
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise fail_on(folder / MODEL_FILE, "has no positive latent scale factor")
    v = cfg.vae
    vae = build_vae(arch=v.arch, channels=v.channels, latent_channels=v.latent_channels,
                    num_res_blocks=v.num_res_blocks, norm_num_groups=v.norm_num_groups, attention=v.attention,
                    lite=lite and v.arch == "kl")  # MAISI's VAE has no MONAI-free twin
    load_weights(vae, verified_state(folder, "vae.safetensors", record), folder / "vae.safetensors", "VAE")
    flow = build_flow_models(cfg, vae, lite=lite)
    if "no_vmr" in cfg.ablate:
        del flow["refiner"]
    load_weights(flow, verified_state(folder, "flow.safetensors", record), folder / "flow.safetensors", "TumorGen")
    vae, flow = vae.to(device).eval(), flow.to(device).eval()
    for p in [*vae.parameters(), *flow.parameters()]:
        p.requires_grad_(False)
    refiner = flow["refiner"] if "refiner" in flow else None
    models = TumorGenModels(vae=vae, unet=flow["unet"], refiner=refiner)
    return LoadedRun(config=cfg, models=models, scale_factor=float(scale), data_info=record["data"],
                     version=str(record.get("tumorgen_version", "unknown")), step=int(record["steps"]["tumorgen"]),
                     run_dir=folder)


def model_summary(folder: str | Path) -> dict:
    """What `tumorgen models` prints for one model folder: name, steps, size on disk, the card's first lines."""
    folder = Path(folder)
    record = read_model_record(folder)
    card = folder / "MODEL_CARD.md"
    lines = [ln.strip() for ln in card.read_text().splitlines() if ln.strip()] if card.is_file() else []
    summary = [ln for ln in lines if not ln.startswith("#")][:3]
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {"name": record["name"], "folder": str(folder), "steps": record["steps"], "megabytes": size / 2**20,
            "title": next((ln.lstrip("# ") for ln in lines if ln.startswith("#")), record["name"]),
            "summary": summary}
