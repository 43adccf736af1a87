"""Split long text into sentence-sized chunks for speech generation.

One model window holds about 20 s of audio, so long text is generated chunk by chunk and the chunks
are joined with a short pause; speech makes one chunk per sentence (``pack=False``) so every sentence
end gets that pause. Chunks end at sentence boundaries where possible, then at clause
boundaries (commas, semicolons, dashes), and only as a last resort between words.
"""
from __future__ import annotations

import re

# A sentence ends at . ! ? (and their CJK forms, and an ellipsis) followed by optional closing quotes /
# brackets, then whitespace or the end of the text. CJK full stops need no following space.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+|(?<=[\u3002\uff01\uff1f])[\"'\u201d\u2019)\]]*\s*")
_CLAUSE_END = re.compile(r"(?<=[,;:\u2014\uff0c\uff1b\uff1a\u3001])\s*")
# Abbreviations after which a full stop does not end a sentence.
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "approx"}


def normalize_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (whitespace normalised, empty pieces dropped)."""
    text = normalize_space(text)
    if not text:
        return []
    out: list[str] = []
    pos = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[pos:m.end()].strip()
        # Do not break after a known abbreviation or a single initial ("J. Smith").
        last_word = piece.rstrip(".!?\"')]\u201d\u2019").split(" ")[-1].lower() if piece else ""
        if piece.endswith(".") and (last_word in _ABBREV or (len(last_word) == 1 and last_word.isalpha())):
            continue
        if piece:
            out.append(piece)
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        out.append(rest)
    return out


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """Break one over-long sentence at clause boundaries, then between words."""
    if len(sentence) <= max_chars:
        return [sentence]
    parts = [p for p in _CLAUSE_END.split(sentence) if p.strip()]
    out: list[str] = []
    for part in parts:
        part = part.strip()
        if len(part) <= max_chars:
            out.append(part)
            continue
        words = part.split(" ")
        cur = ""
        for w in words:
            while len(w) > max_chars:  # a single huge "word" (no spaces, e.g. CJK): hard cut
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(w[:max_chars])
                w = w[max_chars:]
            if not w:
                continue
            cand = f"{cur} {w}" if cur else w
            if len(cand) > max_chars and cur:
                out.append(cur)
                cur = w
            else:
                cur = cand
        if cur:
            out.append(cur)
    return _pack(out, max_chars)


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive pieces while the result stays within ``max_chars``."""
    out: list[str] = []
    cur = ""
    for p in pieces:
        cand = f"{cur} {p}" if cur else p
        if cur and len(cand) > max_chars:
            out.append(cur)
            cur = p
        else:
            cur = cand
    if cur:
        out.append(cur)
    return out


def split_text(text: str, max_chars: int = 200, pack: bool = True) -> list[str]:
    """Chunks of at most ``max_chars`` characters (unless a single word is longer), cut at sentence
    boundaries where possible. With ``pack``, consecutive short sentences are packed together; without,
    every sentence starts a chunk (speech does this, so a pause follows every sentence end)."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if not pack:
        return [piece for s in sentences(text) for piece in _split_long(s, max_chars)]
    pieces: list[str] = []
    for s in sentences(text):
        pieces.extend(_split_long(s, max_chars))
    return _pack(pieces, max_chars)
