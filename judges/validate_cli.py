"""`scripts/validate_judges`: the judges' figures source by source, written into the docs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .support import load_model
from .training import PRIOR, SYNTHETIC_SHARE, TRAIN_SOURCES, C
from .validate import markdown, validate

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- validation tables: begin -->", "<!-- validation tables: end -->"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scripts/validate_judges", description=__doc__)
    ap.add_argument("--train-dir", default=str(ROOT.parent / "shared" / "train"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                    help="the human-labeled files never trained on (default ../shared/data)")
    ap.add_argument("--model", default=None, help="support model to judge with (default: the shipped one)")
    ap.add_argument("--cache", default=str(ROOT / "build" / "signals.jsonl"), help="signal cache; '' for none")
    ap.add_argument("--limit", type=int, help="only the first N records of each file (a quick check)")
    ap.add_argument("--baseline-sample", type=int, default=300,
                    help="records per training source the earlier formulas are computed on (they are slow)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "judges-validation.md"),
                    help="markdown file whose tables are replaced; '' to only print")
    ap.add_argument("--json", dest="json_out", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    train_paths = [Path(args.train_dir) / f"{n}.jsonl.gz" for n in TRAIN_SOURCES]
    train_paths = [p for p in train_paths if p.is_file()]
    if not train_paths:
        ap.error(f"no training files in {args.train_dir}")
    data_dir = Path(args.data_dir) if Path(args.data_dir).is_dir() else None
    t0 = time.perf_counter()
    meta = load_model(args.model).meta
    result = validate(train_paths, data_dir, model_path=args.model, cache_path=args.cache or None,
                      limit=args.limit, baseline_sample=args.baseline_sample,
                      c=float(meta.get("c", C)), prior=float(meta.get("prior", PRIOR)),
                      synthetic_share=float(meta.get("synthetic_share", SYNTHETIC_SHARE)),
                      progress=lambda line: print(line, flush=True))
    tables = markdown(result)
    print(tables)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.docs:
        doc = Path(args.docs)
        text = doc.read_text(encoding="utf-8") if doc.is_file() else f"{BEGIN}\n{END}\n"
        if BEGIN not in text or END not in text:
            ap.error(f"{doc} has no {BEGIN} ... {END} markers to put the tables between")
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        stamp = (f"Model `{result['model'] or meta.get('id')}`; "
                 f"`scripts/validate_judges{' --limit ' + str(args.limit) if args.limit else ''}`, "
                 f"{time.perf_counter() - t0:.0f} s.")
        doc.write_text(f"{head}{BEGIN}\n{stamp}\n\n{tables}\n{END}{tail}", encoding="utf-8")
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
