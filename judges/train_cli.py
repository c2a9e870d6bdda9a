"""`scripts/train_judges`: rebuild the support model from labeled files (for maintainers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .support import MODEL_PATH
from .training import SEED, TRAIN_SOURCES, train

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scripts/train_judges", description=__doc__)
    ap.add_argument("--train-dir", default=str(ROOT.parent / "shared" / "train"),
                    help="folder with the labeled training files (default ../shared/train)")
    ap.add_argument("--source", action="append", help="a labeled file to train on (repeatable; default the three "
                    "of --train-dir)")
    ap.add_argument("--out", default=str(MODEL_PATH), help="where to write the model (default: the shipped one)")
    ap.add_argument("--cache", default=str(ROOT / "build" / "signals.jsonl"),
                    help="signal cache (reading passages is the slow part); '' for none")
    ap.add_argument("--limit", type=int, help="use only the first N records of each file (tests, quick tries)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    ap.add_argument("--layers", type=int, default=6, choices=range(1, 7), metavar="{1..6}",
                    help="read the output of this MiniLM layer (default 6, the last, as the shipped model; fewer is faster)")
    args = ap.parse_args(argv)
    paths = args.source or [str(Path(args.train_dir) / f"{name}.jsonl.gz") for name in TRAIN_SOURCES]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        ap.error(f"no training file at {', '.join(missing)}")
    train(paths, out=args.out, cache_path=args.cache or None, limit=args.limit, seed=args.seed,
          # layers=0 is the last layer, recorded as models before --layers were (no reader_layers field)
          threads=args.threads, layers=0 if args.layers == 6 else args.layers,
          progress=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
