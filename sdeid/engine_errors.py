"""Engines that cannot serve stop the stage, with the engine's own error in one line.

Ray Data restarts a dead actor and resubmits its batch with no limit by default; ray.data.llm's
engine stage exits its actor on purpose when the vLLM engine core dies (EngineDeadError), so an
engine that dies on every batch (an unsupported head size, a CUDA error, a KV cache too small for
the context) would be restarted forever. Two parts fix that:

- `bound_restarts` gives the engine stage a finite `max_restarts` / `max_task_retries`, so Ray
  Data fails the dataset once a replica has died that many times;
- the root cause lives in the engine core process, not in the EngineDeadError the actor sees
  ("See stack trace (above)"), so `engine_logging` points vLLM's logging (in every engine
  process, on any node) at a config that also appends ERROR records to a file in the stage's
  output folder, and `engine_failure` reads the cause back from it for the error users see.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sdeid.errors import SdeidError

ERROR_LOG = "engine_errors.log"
# A Python traceback's last line: "SomeError: what went wrong" (the exception raised).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)[\w]*): (.+)$")


def engine_logging(folder: Path) -> dict:
    """Env vars for the engine actors: vLLM's usual console logging plus ERROR records
    appended to `folder/engine_errors.log` (on shared storage on a cluster)."""
    folder.mkdir(parents=True, exist_ok=True)
    fmt = "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "plain", "level": "INFO"},
            "errors": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "level": "ERROR",
                "filename": str(folder / ERROR_LOG),
                "mode": "a",
            },
        },
        "loggers": {
            "vllm": {"handlers": ["console", "errors"], "level": "INFO", "propagate": False}
        },
    }
    path = folder / "vllm_logging.json"
    path.write_text(json.dumps(config, indent=2))
    return {"VLLM_LOGGING_CONFIG_PATH": str(path)}


def bound_restarts(processor, max_restarts: int) -> None:
    """Give the processor's engine stage at most `max_restarts` actor restarts and batch
    retries (ray.data.llm exposes the stages, not these two settings)."""
    for name in processor.list_stage_names():
        if name.startswith("vLLMEngineStage"):
            kwargs = processor.get_stage_by_name(name).map_batches_kwargs
            kwargs["max_restarts"] = max_restarts
            kwargs["max_task_retries"] = max_restarts
            return
    raise RuntimeError(f"no vLLM engine stage among {processor.list_stage_names()}")


def root_cause(folder: Path) -> str | None:
    """The first exception line the engines logged (the cause, before any restart's echo)."""
    path = folder / ERROR_LOG
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        m = _EXCEPTION_LINE.match(line.strip())
        if m and not m.group(1).endswith("EngineDeadError"):
            return f"{m.group(1)}: {m.group(3)}"[:500]
    return None


def engine_failure(folder: Path, max_restarts: int, error: BaseException) -> SdeidError:
    """The error users see when the engine stage failed."""
    cause = root_cause(folder) or f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    return SdeidError(
        f"generate: the vLLM engine failed (a replica is restarted at most {max_restarts} "
        f"times, engine_max_restarts); the engine's error: {cause} "
        f"(engine log: {folder / ERROR_LOG})"
    )
