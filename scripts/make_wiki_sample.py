"""Make the embedded default corpus `nasbert_hf/data/wiki-sample.txt.gz` from the Wikipedia shards.

Takes every `--stride`-th article (counting across the shards in name order, so the sample
spreads over the whole dump) until `--max-chars` characters of text are collected. Articles
are kept whole: one paragraph a line, articles separated by a blank line, as in the source.
The output is deterministic: the same shards give the same bytes (gzip level 9, mtime 0, no
file name in the gzip header).

    python scripts/make_wiki_sample.py --source ../shared/data/wiki --output nasbert_hf/data/wiki-sample.txt.gz
"""

import argparse
import gzip
import io
import os
from pathlib import Path


def read_articles(shard: Path):
    """Yield each article of a shard as its list of non-empty lines (paragraphs)."""
    article = []
    with gzip.open(shard, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.strip():
                article.append(line)
            elif article:
                yield article
                article = []
    if article:
        yield article


def sample_articles(shards, stride: int, max_chars: int):
    """Every `stride`-th article over all shards, stopping before `max_chars` would be exceeded."""
    chosen, total, index = [], 0, 0
    for shard in shards:
        for article in read_articles(shard):
            index += 1
            if (index - 1) % stride:
                continue
            size = sum(len(line) + 1 for line in article) + 1
            if total + size > max_chars:
                return chosen
            chosen.append(article)
            total += size
    return chosen


def write_gzip(path: Path, text: str) -> None:
    """Write reproducible gzip bytes (fixed mtime, empty name), atomically."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def main(argv=None):
    default_source = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki"
    default_output = Path(__file__).resolve().parents[1] / "nasbert_hf" / "data" / "wiki-sample.txt.gz"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=default_source, help="folder of wiki-NNN.txt.gz shards")
    parser.add_argument("--output", type=Path, default=default_output)
    parser.add_argument("--stride", type=int, default=21, help="keep every N-th article")
    parser.add_argument("--max-chars", type=int, default=5_000_000, help="stop before this much text")
    args = parser.parse_args(argv)

    shards = sorted(args.source.glob("wiki-*.txt.gz"))
    if not shards:
        raise SystemExit(f"no wiki-*.txt.gz shards in {args.source}")
    articles = sample_articles(shards, args.stride, args.max_chars)
    text = "\n\n".join("\n".join(article) for article in articles) + "\n"
    write_gzip(args.output, text)
    paragraphs = sum(len(article) for article in articles)
    print(
        f"{args.output}: {len(articles)} articles, {paragraphs} paragraphs, {len(text):,} characters, "
        f"{args.output.stat().st_size:,} bytes gzip"
    )


if __name__ == "__main__":
    main()
