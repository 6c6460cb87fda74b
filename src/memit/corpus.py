"""The text that statistics and perplexity read, as documents and as token windows.

A corpus is local files (plain text, WikiExtractor ``<doc>`` files, JSONL with a ``text`` field,
any of them gzipped), a folder of such files, a Hugging Face dataset (``hf:NAME[:CONFIG[:SPLIT]]``),
or, by default, the WikiText-2 excerpt bundled with memit so that editing works offline.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch

BUNDLED = "bundled:wikitext2-valid"


class CorpusError(ValueError):
    pass


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _docs_of_file(path: Path) -> Iterator[str]:
    text = _read(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CorpusError(f"{path}: line {n} is not a JSON object with a 'text' field") from None
    elif text.lstrip().startswith("<doc "):  # WikiExtractor output
        for chunk in text.split("</doc>"):
            body = chunk.split(">", 1)[-1].strip()
            if body:
                yield body
    else:
        for para in text.split("\n"):
            if para.strip():
                yield para.strip()


def iter_texts(source: str | None) -> Iterator[str]:
    """Documents of a corpus, in a fixed order."""
    if source in (None, BUNDLED):
        ref = resources.files("memit") / "data" / "wikitext2_valid.txt.gz"
        with resources.as_file(ref) as p:
            yield from _docs_of_file(Path(p))
        return
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise CorpusError("hf: corpora need the 'datasets' package (pip install datasets)") from None
        name, config, split = (source[3:].split(":") + [None, None])[:3]
        ds = datasets.load_dataset(name, config, split=split or "train", streaming=True)
        for rec in ds:
            if rec.get("text", "").strip():
                yield rec["text"]
        return
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise CorpusError(f"{path}: directory holds no files")
    elif path.is_file():
        files = [path]
    else:
        raise CorpusError(f"corpus {source!r} not found")
    for f in files:
        yield from _docs_of_file(f)


def token_windows(tokenizer, source: str | None, seq_len: int, max_tokens: int) -> torch.Tensor:
    """The corpus as consecutive windows of ``seq_len`` tokens, ``max_tokens`` in all at most.

    Articles are concatenated (separated by EOS) and cut into windows rather than truncated,
    so long articles are used whole.
    """
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for doc in iter_texts(source):
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"] + sep)
        if len(stream) >= max_tokens:
            break
    n = min(len(stream), max_tokens) // seq_len
    if n == 0:
        raise CorpusError(f"corpus {source or BUNDLED!r} has fewer than {seq_len} tokens")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)
