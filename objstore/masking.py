"""Masking of secret values in text and in task execution logs.

A pure building block (standard library only): it knows nothing about the store, the vault or the log
tables. Two users are planned:

* ``store.mask(text)`` builds a :class:`Masker` from the secret values of one pipeline's scope (its own
  secrets plus the global secrets its namespace may use), or of every scope, and calls
  :meth:`Masker.mask_text`. A masker is immutable and thread-safe, so the store may cache one per scope
  and rebuild it whenever a secret of that scope is put or deleted.
* The task-log writer keeps one :class:`StreamMasker` per open log: every ``log.write(data)`` goes
  through :meth:`StreamMasker.feed` and only what it returns is appended; closing the log appends
  :meth:`StreamMasker.flush`. A secret split across writes is still masked, because ``feed`` holds back
  the last ``max_value_length - 1`` bytes until it knows whether they begin a secret. Those held-back
  bytes are not in the log until the next write or the flush; a writer that dies loses them, which is
  better than writing them unmasked.

**Values shorter than** ``MIN_MASKED_LENGTH`` **(4) are never masked**: 4 characters for a str value, 4
bytes for a bytes value. Masking ``"abc"`` or ``"1"`` would rewrite ordinary words and numbers all over
every log (and would tell a reader which short strings are secret). Keep secrets long.

What counts as an occurrence, and what replaces it:

* Matching is exact and case-sensitive, on characters (:meth:`Masker.mask_text`) or on bytes
  (:meth:`Masker.mask_bytes`). A str value is matched in bytes as its UTF-8 encoding; a bytes value is
  matched in text as its UTF-8 decoding when it is valid UTF-8 (else only in bytes). Other spellings of a
  value (base64, URL or JSON escaping, another case or encoding) are *not* recognised.
* Every occurrence of every value is covered, overlapping ones included: with the values ``abcdef`` and
  ``defghi``, the text ``abcdefghi`` becomes ``****`` and nothing of either value is left. Each
  contiguous run of covered text becomes one ``MASK``, so its length reveals nothing about the value;
  two occurrences that merely touch give two masks.
* A value containing a line break is also matched with all of its breaks written ``\\n`` or ``\\r\\n``
  (a terminal turns ``\\n`` into ``\\r\\n``), and each of its lines, stripped of surrounding
  whitespace, is masked on its own when it is long enough. This covers output that prefixes every line
  (timestamps, ``sed 's/^/  /'``) and values stored with a trailing newline (``echo token | ... put -``)
  but printed without one. The price: a line such as ``apiVersion: v1`` of a secret kubeconfig is masked
  wherever it appears.
* Values (and the lines above) are tried longest first, so a value containing another is masked whole.

A masker never shows its values: its repr says only how many it holds, and no error it raises contains a
value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import AnyStr, Final

from objstore.errors import InvalidValue

__all__ = ["MASK", "MIN_MASKED_LENGTH", "Masker", "StreamMasker", "mask"]

MASK: Final = "****"
MIN_MASKED_LENGTH: Final = 4

_MASK_BYTES: Final = MASK.encode()
# Leading characters factored out of the alternation; deeper levels gave no measurable gain.
_GROUP_DEPTH: Final = 2
_BYTES_LIKE: Final = (bytes, bytearray, memoryview)


class Masker:
    """Replaces every occurrence of a fixed set of secret values with :data:`MASK`.

    Build one per set of values and reuse it: the values are compiled once into one regular expression
    for text and one for bytes. Empty values and values shorter than :data:`MIN_MASKED_LENGTH` are
    ignored (see the module documentation for why).
    """

    __slots__ = ("_bytes_pattern", "_count", "_max_value_length", "_text_pattern")

    def __init__(self, values: Iterable[str | bytes]) -> None:
        # A lone str is an iterable of 1-character strings, all too short: it would silently mask nothing.
        if isinstance(values, (str, *_BYTES_LIKE)):
            raise InvalidValue("Masker takes an iterable of secret values, not a single str or bytes value")
        admitted: set[str | bytes] = set()
        text_forms: set[str] = set()
        byte_forms: set[bytes] = set()
        for value in values:
            if isinstance(value, str):
                forms_str = _forms(value, "\n", "\r\n")
                if value in forms_str:
                    admitted.add(value)
                text_forms |= forms_str
                byte_forms.update(_encoded(form) for form in forms_str)
            elif isinstance(value, _BYTES_LIKE):
                raw = bytes(value)
                forms_bytes = _forms(raw, b"\n", b"\r\n")
                if raw in forms_bytes:
                    admitted.add(raw)
                byte_forms |= forms_bytes
                text_forms.update(_decoded(form) for form in forms_bytes)
            else:
                raise InvalidValue(f"a secret value must be str or bytes, not {type(value).__name__}")
        # _encoded/_decoded give "" for a form with no counterpart; it must not become a pattern.
        text_forms.discard("")
        byte_forms.discard(b"")
        self._count = len(admitted)
        self._text_pattern = _compile(text_forms)
        self._bytes_pattern = _compile(byte_forms)
        self._max_value_length = max(map(len, byte_forms), default=0)

    @property
    def value_count(self) -> int:
        """How many distinct values are masked (values too short to be masked are not counted)."""
        return self._count

    @property
    def max_value_length(self) -> int:
        """The length in bytes of the longest byte sequence masked; 0 when nothing is masked."""
        return self._max_value_length

    def mask_text(self, text: str) -> str:
        """Return ``text`` with every occurrence of every value replaced by :data:`MASK`."""
        if not isinstance(text, str):
            raise InvalidValue(f"mask_text takes str, not {type(text).__name__}; use mask_bytes for bytes")
        if self._text_pattern is None:
            return text
        pieces, _ = _scan(self._text_pattern, text, MASK, len(text), 0)
        return "".join(pieces)

    def mask_bytes(self, data: bytes) -> bytes:
        """Return ``data`` with every occurrence of every value (str values as UTF-8) replaced by MASK."""
        if not isinstance(data, _BYTES_LIKE):
            raise InvalidValue(f"mask_bytes takes bytes, not {type(data).__name__}; use mask_text for str")
        data = bytes(data)
        if self._bytes_pattern is None:
            return data
        pieces, _ = _scan(self._bytes_pattern, data, _MASK_BYTES, len(data), 0)
        return b"".join(pieces)

    def stream(self) -> StreamMasker:
        """A new :class:`StreamMasker` over these values, for one log written in pieces."""
        return StreamMasker(self)

    def __repr__(self) -> str:
        return f"Masker({_count_text(self._count)})"


class StreamMasker:
    """Masks a byte stream written in pieces, such as a task execution log.

    ``feed`` returns what is safe to emit now and holds back at most ``max_value_length - 1`` trailing
    bytes that could be the start of a value completed by a later piece; ``flush`` returns the rest when
    the stream ends and leaves the masker ready for a new stream. For every way of cutting the input into
    pieces, the outputs joined equal ``Masker.mask_bytes`` of the whole input. Memory stays bounded by the
    held-back tail plus one piece. Not thread-safe: use one per stream.
    """

    __slots__ = ("_hold", "_masker", "_open", "_tail")

    def __init__(self, masker: Masker | Iterable[str | bytes]) -> None:
        self._masker = masker if isinstance(masker, Masker) else Masker(masker)
        self._hold = max(self._masker.max_value_length - 1, 0)
        # Raw (unmasked) bytes not emitted yet; never longer than _hold.
        self._tail = b""
        # _tail[:_open] lies inside a masked run whose MASK was already emitted.
        self._open = 0

    @property
    def held_back(self) -> int:
        """How many bytes ``feed`` is holding back right now."""
        return len(self._tail)

    def feed(self, chunk: bytes) -> bytes:
        """Take the next piece of the stream; return the masked bytes that can be emitted now."""
        if not isinstance(chunk, _BYTES_LIKE):
            raise InvalidValue(f"feed takes bytes, not {type(chunk).__name__}")
        pattern = self._masker._bytes_pattern
        if pattern is None:
            return bytes(chunk)
        data = self._tail + chunk if self._tail else bytes(chunk)
        # Everything before `cut` is final: an occurrence starting there ends within `data`.
        cut = len(data) - self._hold
        if cut <= 0:
            self._tail = data
            return b""
        pieces, self._open = _scan(pattern, data, _MASK_BYTES, cut, self._open)
        self._tail = data[cut:]
        return b"".join(pieces)

    def flush(self) -> bytes:
        """End the stream: return the held-back bytes, masked, and start afresh."""
        data, open_end = self._tail, self._open
        self._tail, self._open = b"", 0
        pattern = self._masker._bytes_pattern
        if pattern is None or not data:
            return data
        pieces, _ = _scan(pattern, data, _MASK_BYTES, len(data), open_end)
        return b"".join(pieces)

    def __repr__(self) -> str:
        return f"StreamMasker({_count_text(self._masker.value_count)}, {len(self._tail)} bytes held back)"


def mask(text: str, values: Iterable[str | bytes]) -> str:
    """One-off ``Masker(values).mask_text(text)``; build a :class:`Masker` to mask many texts."""
    return Masker(values).mask_text(text)


def _count_text(count: int) -> str:
    return f"{count} value" if count == 1 else f"{count} values"


def _forms(value: AnyStr, lf: AnyStr, crlf: AnyStr) -> set[AnyStr]:
    """The spellings of one value to mask: itself and, if multi-line, its LF/CRLF forms and its lines."""
    if len(value) < MIN_MASKED_LENGTH:
        return set()
    forms = {value}
    if lf in value:
        unix = value.replace(crlf, lf)
        forms.update((unix, unix.replace(lf, crlf)))
        forms.update(line.strip() for line in unix.split(lf))
    return {form for form in forms if len(form) >= MIN_MASKED_LENGTH}


def _encoded(form: str) -> bytes:
    try:
        return form.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: such a value cannot occur in UTF-8 bytes
        return b""


def _decoded(form: bytes) -> str:
    try:
        return form.decode("utf-8")
    except UnicodeDecodeError:  # not text: it can only occur in bytes
        return ""


def _compile(forms: set[AnyStr]) -> re.Pattern[AnyStr] | None:
    if not forms:
        return None
    # Longest first: at a given position the regex engine takes the first alternative that matches.
    ordered = sorted(forms, key=lambda form: (-len(form), form))
    return re.compile(_alternation(ordered, _GROUP_DEPTH))


def _alternation(values: list[AnyStr], depth: int) -> AnyStr:
    """``v1|v2|...`` of the escaped values, grouped by their leading characters (a shallow trie).

    Grouping lets the engine reject, with one comparison, every value that cannot start at a position
    instead of trying each in turn (about 3x faster over 200 values). Values keep their longest-first
    order inside each group, so the match at a position is still the longest value found there.
    """
    bar, group, close = _syntax(values[0])
    if depth == 0 or len(values) == 1 or any(len(value) < 2 for value in values):
        return bar.join(re.escape(value) for value in values)
    groups: dict[AnyStr, list[AnyStr]] = {}
    for value in values:
        groups.setdefault(value[:1], []).append(value[1:])
    return bar.join(
        re.escape(head) + group + _alternation(rests, depth - 1) + close for head, rests in groups.items()
    )


def _syntax(like: AnyStr) -> tuple[AnyStr, AnyStr, AnyStr]:
    if isinstance(like, str):
        return "|", "(?:", ")"
    return b"|", b"(?:", b")"


def _scan(
    pattern: re.Pattern[AnyStr], data: AnyStr, mask: AnyStr, cut: int, open_end: int
) -> tuple[list[AnyStr], int]:
    """Mask ``data[:cut]``; the one algorithm behind whole-text and streamed masking.

    ``data[:open_end]`` continues a masked run whose MASK has already been emitted. Returns the pieces to
    emit for ``data[:cut]`` and how far past ``cut`` the last masked run reaches (0 if it ends by ``cut``),
    which the caller passes back as ``open_end`` together with ``data[cut:]``. An occurrence starting
    before ``cut`` must lie wholly within ``data``: the stream guarantees it by holding back enough bytes.
    """
    pieces: list[AnyStr] = []
    end = open_end  # the masked run so far is data[..:end]; data[:end] is accounted for
    found = pattern.search(data)
    while True:
        # Grow the run by every occurrence starting inside it, so overlapping values leak nothing.
        while found is not None and found.start() < end:
            end = max(end, found.end())
            found = pattern.search(data, found.start() + 1)
        if end > cut:
            # Occurrences starting at or after `cut` may be incomplete: carry the run into the next call.
            return pieces, end - cut
        if found is None or found.start() >= cut:
            pieces.append(data[end:cut])
            return pieces, 0
        pieces += (data[end : found.start()], mask)
        end = found.end()
        found = pattern.search(data, found.start() + 1)
