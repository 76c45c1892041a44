"""The scalars of a run: OUT/log.jsonl and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path


class RunLog:
    """Scalars to OUT/log.jsonl, and to TensorBoard when it is installed.

    ``resume_step``: rows (and TensorBoard events) after this step are dropped: a killed run may have
    logged steps that its last.pt does not hold, and the resumed run logs them again.
    """

    def __init__(self, out_dir: Path, *, resume_step: int | None = None) -> None:
        path = out_dir / "log.jsonl"
        if resume_step is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the kill
                    continue
                if row.get("step", 0) <= resume_step:
                    kept.append(line + "\n")
            path.write_text("".join(kept))
        self._file = open(path, "a")
        try:
            # Here, not at the top: tensorboard is an optional dependency (and slow to import).
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)
        except ImportError:  # tensorboard is optional
            self._tb = None

    def log(self, row: dict[str, float]) -> None:
        # NaN is not JSON: a figure without classes is written as null.
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb:
            self._tb.close()
