"""`tyllm compare`'s command: reads --tokens, runs compare, prints the report, writes --json and
--plot. Exit 0 when everything passes, 1 when a threshold fails (bad input: 2, in tyllm.cli)."""

import json
from pathlib import Path

from tyllm.errors import TyllmError


def read_tokens(path: Path) -> list[int]:
    """Token ids from a file: a JSON list of ints, or ints separated by whitespace or commas."""
    try:
        text = path.read_text()
    except OSError as e:
        raise TyllmError(f"--tokens {path} cannot be read ({e.strerror}): name a file of token "
                         f"ids.") from None
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else text.replace(
            ",", " ").split()
        return [int(v) for v in values]
    except (ValueError, TypeError):
        raise TyllmError(f"--tokens {path} is not a list of token ids: write a JSON list of "
                         f"ints, or ints separated by spaces.") from None


def writable(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.is_dir() or not out.parent.is_dir():
        raise TyllmError(f"{flag} {path} must name a file in an existing folder.")
    return out


def run(args) -> int:
    from tyllm.compare import compare
    from tyllm.compare.report import plot, text

    if args.prompt is not None and args.tokens is not None:
        raise TyllmError("Give the prompt once: --prompt TEXT or --tokens FILE, not both.")
    json_path, plot_path = writable(args.json, "--json"), writable(args.plot, "--plot")
    tokens = read_tokens(Path(args.tokens)) if args.tokens else None
    report = compare(args.artifacts, args.model, prompt=args.prompt, tokens=tokens,
                     image=args.image,
                     new_tokens=args.new_tokens, workers=args.workers, dies=args.dies,
                     chat=not args.raw, cosine=args.min_cosine, sqnr_db=args.min_sqnr,
                     top1=args.min_top1)
    print(text(report))
    if json_path:
        json_path.write_text(json.dumps(report.as_json(), indent=1))
    if plot_path:
        plot(report, plot_path)
    print(f"framework output: {report.log}")
    return 0 if report.passed else 1
