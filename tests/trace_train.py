"""``aekit ARGS`` with every process recording the training-set positions it trains on, for test_distributed.

    torchrun ... tests/trace_train.py TRACE_DIR train --model vae ...

Each process writes ``TRACE_DIR/rank<R>.jsonl`` when it exits: one line per epoch it trained,
``{"epoch": E, "indices": [positions in training order]}``. A callback of ``aekit.train`` sees every step.
"""

import atexit
import functools
import json
import os
import sys
from pathlib import Path

import aekit.api
from aekit.cli import main
from aekit.training.loop import Callback


class Trace(Callback):
    def __init__(self, path: Path) -> None:
        self.path, self.epochs = path, {}
        atexit.register(self.write)

    def on_batch(self, epoch, index) -> None:
        self.epochs.setdefault(epoch, []).extend(index.tolist())

    def write(self) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for epoch, indices in sorted(self.epochs.items()):
                f.write(json.dumps({"epoch": epoch, "indices": indices}) + "\n")


if __name__ == "__main__":
    folder, argv = Path(sys.argv[1]), sys.argv[2:]
    trace = Trace(folder / f"rank{os.environ.get('RANK', '0')}.jsonl")
    aekit.api.train = functools.partial(aekit.api.train, callbacks=[trace])
    sys.exit(main(argv))
