"""Local corpora, a BPE tokenizer trained on them, folders moved with checksums (ch. 14).

A cluster's compute nodes usually cannot reach the internet, so chapter 14 never
downloads anything: its text ships with the machine or with the repository, its
tokenizer is trained here, and its model is built from a configuration. This module
holds the parts that are not about the model:

* :func:`stdlib_corpus` -- the Python standard library's own ``*.py`` files (the folder
  ``sysconfig.get_paths()["stdlib"]``), in sorted order, cut at a fixed number of
  characters: the *pretraining* corpus. Any Python installation has it.
* :func:`book_corpus` -- the book's own chapters (``book/*.md``, sorted), cut the same
  way: the *fine-tuning* corpus, prose with some code and mathematics instead of code.
* :func:`split_held_out` -- the last fraction of a corpus kept back for perplexity.
* :func:`train_bpe` -- a byte-level BPE tokenizer (Sennrich et al.; the byte-level
  alphabet of GPT-2) trained with the ``tokenizers`` library and wrapped as a
  ``PreTrainedTokenizerFast`` so that ``save_pretrained`` / ``from_pretrained`` work.
* :func:`checksums`, :func:`transfer` -- the SHA-256 of every file of a folder, and a
  copy to another folder (as to a cluster's file system) verified against them.

``tokenizers`` and ``transformers`` are imported inside the functions that use them, so
that importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import repo_root

SEPARATOR = "\n\n"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


@dataclass(frozen=True)
class Corpus:
    """Text gathered from local files, with where it came from and its fingerprint."""

    name: str
    text: str
    files: tuple[str, ...]
    root: str

    @property
    def sha256(self) -> str:
        """SHA-256 of the text (UTF-8): runs that report the same one used the same."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The corpus in a JSON-friendly form (without the text)."""
        return {
            "name": self.name,
            "root": self.root,
            "n_files": len(self.files),
            "first_file": self.files[0] if self.files else None,
            "last_file": self.files[-1] if self.files else None,
            "chars": len(self.text),
            "sha256": self.sha256,
        }


def gather(name: str, root: Path, paths: list[Path], max_chars: int) -> Corpus:
    """Concatenate ``paths`` (already in a fixed order) until ``max_chars`` characters.

    Files are joined with a blank line; the last file is cut so that the text has
    exactly ``max_chars`` characters (or fewer if all the files together are shorter).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    parts: list[str] = []
    used: list[str] = []
    total = 0
    for path in paths:
        if total >= max_chars:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        piece = (SEPARATOR if parts else "") + text
        parts.append(piece[: max_chars - total])
        total += len(parts[-1])
        used.append(str(path.relative_to(root)))
    return Corpus(name, "".join(parts), tuple(used), str(root))


def stdlib_root() -> Path:
    """The folder of the Python standard library this interpreter runs on."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_corpus(max_chars: int, skip_files: int = 0) -> Corpus:
    """The standard library's top-level ``*.py`` files, sorted, cut at ``max_chars``.

    ``skip_files`` starts further down the sorted list (a second, disjoint subset).
    """
    root = stdlib_root()
    paths = sorted(root.glob("*.py"))[skip_files:]
    if not paths:
        raise FileNotFoundError(f"no *.py files in the standard library folder {root}")
    return gather("python-stdlib", root, paths, max_chars)


def book_corpus(max_chars: int) -> Corpus:
    """The book's chapter pages (``book/*.md``, sorted), cut at ``max_chars``."""
    root = repo_root()
    paths = sorted((root / "book").glob("*.md"))
    if not paths:
        raise FileNotFoundError(f"no book/*.md files under {root}")
    return gather("book-markdown", root, paths, max_chars)


def split_held_out(text: str, fraction: float) -> tuple[str, str]:
    """``(train, held_out)``: the held-out part is the last ``fraction`` of the text,
    starting at a line break so that no line is cut in two."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    cut = int(len(text) * (1 - fraction))
    nl = text.find("\n", cut)
    cut = nl + 1 if 0 <= nl < len(text) - 1 else cut
    return text[:cut], text[cut:]


def chunks(text: str, size: int = 4096) -> list[str]:
    """The text in pieces of about ``size`` characters, cut after a line break."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def train_bpe(text: str, vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``text``, as a ``PreTrainedTokenizerFast``.

    The alphabet is the 256 byte symbols of GPT-2's byte-level scheme, so any text can
    be encoded without an unknown token; ``vocab_size`` (at least 256 plus the three
    special tokens ``<pad>``, ``<s>``, ``</s>``) leaves room for the merges learned from
    ``text``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    floor = 256 + len(SPECIAL_TOKENS)
    if vocab_size < floor:
        raise ValueError(
            f"vocab_size must be at least {floor} (256 bytes + "
            f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(chunks(text), trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Any) -> Any:
    """A ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` (the book's tokens)."""
    from transformers import PreTrainedTokenizerFast

    pad, bos, eos = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, bos_token=bos, eos_token=eos
    )


def checksums(folder: str | Path) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``folder``, sorted by path."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return out


def write_manifest(folder: str | Path) -> Path:
    """Write ``SHA256SUMS`` in ``folder`` (the format ``sha256sum -c`` reads)."""
    folder = Path(folder)
    sums = {k: v for k, v in checksums(folder).items() if k != "SHA256SUMS"}
    path = folder / "SHA256SUMS"
    path.write_text("".join(f"{h}  {name}\n" for name, h in sums.items()))
    return path


def transfer(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Copy the folder ``src`` to ``dst`` and verify every file's SHA-256 on arrival.

    Writes ``SHA256SUMS`` into ``src`` first (what one ships next to the files), copies,
    then recomputes the checksums at ``dst`` and compares them with the manifest. Raises
    ``RuntimeError`` naming the files that differ; returns ``{files, bytes, manifest}``.
    """
    src, dst = Path(src), Path(dst)
    write_manifest(src)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    expected = {}
    for line in (dst / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        expected[name] = digest
    got = {k: v for k, v in checksums(dst).items() if k != "SHA256SUMS"}
    bad = sorted(
        k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)
    )
    if bad:
        raise RuntimeError(f"transfer {src} -> {dst}: checksums differ for {bad}")
    return {
        "files": len(got),
        "bytes": sum((dst / k).stat().st_size for k in got),
        "manifest": expected,
    }
