"""Masking of secret values: whole texts, bytes, and logs written in pieces."""

from __future__ import annotations

import itertools
import random
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.errors import InvalidValue
from objstore.masking import MASK, MIN_MASKED_LENGTH, Masker, StreamMasker, mask


def reference_mask(data: bytes, values: list[bytes]) -> bytes:
    """Obvious-by-construction masking: find every occurrence (overlaps too) of every value of at least
    MIN_MASKED_LENGTH bytes, merge the ones that overlap, and replace each merged run with MASK."""
    spans: list[tuple[int, int]] = []
    for value in {v for v in values if len(v) >= MIN_MASKED_LENGTH}:
        start = data.find(value)
        while start != -1:
            spans.append((start, start + len(value)))
            start = data.find(value, start + 1)
    out, pos, run_start, run_end = [], 0, -1, -1
    for start, end in sorted(spans):
        if start < run_end:
            run_end = max(run_end, end)
            continue
        if run_end != -1:
            out += [data[pos:run_start], MASK.encode()]
            pos = run_end
        run_start, run_end = start, end
    if run_end != -1:
        out += [data[pos:run_start], MASK.encode()]
        pos = run_end
    out.append(data[pos:])
    return b"".join(out)


def stream_all(masker: Masker, chunks: list[bytes]) -> bytes:
    stream = StreamMasker(masker)
    limit = max(masker.max_value_length - 1, 0)
    out = []
    for chunk in chunks:
        out.append(stream.feed(chunk))
        assert stream.held_back <= limit
    out.append(stream.flush())
    assert stream.held_back == 0
    return b"".join(out)


# --- whole texts -------------------------------------------------------------------------------------


def test_simple_replacement() -> None:
    assert mask("text with s3cr3t", ["s3cr3t"]) == "text with ****"
    assert MASK == "****"


def test_every_occurrence_of_every_value() -> None:
    masker = Masker(["token-1", "hunter22"])
    text = "token-1 hunter22 token-1, again token-1.hunter22"
    assert masker.mask_text(text) == "**** **** ****, again ****.****"


def test_nested_values_masked_whole() -> None:
    masker = Masker(["word", "password123"])
    assert masker.mask_text("my password123 and a word") == "my **** and a ****"
    assert masker.mask_bytes(b"password123") == b"****"
    # A value that is a prefix of another: the longer one wins where it occurs.
    assert Masker(["abcd", "abcdefgh"]).mask_text("abcdefgh! abcdx") == "****! ****x"


def test_overlapping_values_leak_nothing() -> None:
    masker = Masker(["abcdef", "defghi"])
    assert masker.mask_text("abcdefghi") == "****"
    assert masker.mask_text("x abcdefghi y") == "x **** y"
    assert masker.mask_text("x defghi abcdef y") == "x **** **** y"
    # A chain of overlaps is one run.
    assert Masker(["abcd", "cdef", "efgh"]).mask_text("-abcdefgh-") == "-****-"
    # An occurrence of a value overlapping itself.
    assert Masker(["abab"]).mask_text("xababababx") == "x****x"


def test_touching_occurrences_give_two_masks() -> None:
    assert Masker(["abcd"]).mask_text("abcdabcd") == "********"


def test_multi_line_values() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n-----END KEY-----"
    masker = Masker([key])
    assert masker.mask_text(f"key: {key}\ndone") == "key: ****\ndone"
    # A terminal writes \r\n for \n; a value stored with \r\n is found in \n text as well.
    assert masker.mask_text("key: " + key.replace("\n", "\r\n")) == "key: ****"
    assert Masker([key.replace("\n", "\r\n")]).mask_text(f"[{key}]") == "[****]"
    # Output that prefixes every line leaves no line of the value readable.
    prefixed = "\n".join(f"12:00:01 {line}" for line in key.split("\n"))
    assert masker.mask_text(prefixed) == "12:00:01 ****\n12:00:01 ****\n12:00:01 ****"
    assert masker.mask_bytes(f"<{key}>".encode()) == b"<****>"


def test_value_stored_with_trailing_newline() -> None:
    masker = Masker(["ghp_abcdef123456\n"])
    assert masker.mask_text("token=ghp_abcdef123456 done") == "token=**** done"
    assert masker.mask_text("ghp_abcdef123456\nnext") == "****next"


def test_values_shorter_than_minimum_are_not_masked() -> None:
    assert MIN_MASKED_LENGTH == 4
    text = "a b ab abc 1 12 123 - ok"
    masker = Masker(["", "a", "ab", "abc", "123", b"", b"ok", b"123"])
    assert masker.value_count == 0
    assert masker.mask_text(text) == text
    assert masker.mask_bytes(text.encode()) == text.encode()
    assert Masker(["abcd"]).mask_text("abc abcd") == "abc ****"
    # The minimum counts characters for str values and bytes for bytes values.
    assert Masker(["éé"]).mask_bytes("éé".encode()) == "éé".encode()
    assert Masker(["éé".encode()]).mask_bytes("éé".encode()) == b"****"
    # Lines of a multi-line value that are too short are masked only as part of the whole value.
    masker = Masker(["ab\nsecret-line\ncd"])
    assert masker.mask_text("ab cd secret-line") == "ab cd ****"


def test_no_values_is_the_identity() -> None:
    masker = Masker([])
    text = "nothing to hide: s3cr3t"
    assert masker.mask_text(text) == text
    assert masker.mask_bytes(text.encode()) == text.encode()
    assert masker.max_value_length == 0
    assert mask(text, []) == text
    stream = StreamMasker(masker)
    assert stream.feed(b"abc") == b"abc"
    assert stream.held_back == 0
    assert stream.flush() == b""


def test_unicode_values() -> None:
    value = "pässwörd-🔑-秘密"
    masker = Masker([value])
    assert masker.mask_text(f"«{value}»") == "«****»"
    assert masker.mask_bytes(f"«{value}»".encode()) == "«****»".encode()
    assert masker.max_value_length == len(value.encode())


def test_bytes_and_str_values() -> None:
    masker = Masker([b"bytes-secret", "text-secret"])
    assert masker.value_count == 2
    assert masker.mask_text("bytes-secret text-secret") == "**** ****"
    assert masker.mask_bytes(b"bytes-secret text-secret") == b"**** ****"
    assert isinstance(masker.mask_bytes(bytearray(b"text-secret")), bytes)
    # Bytes that are not UTF-8 cannot appear in text; they are still masked in bytes.
    binary = Masker([b"\xff\xfe\x00\x01\x80"])
    assert binary.mask_bytes(b"<\xff\xfe\x00\x01\x80>") == b"<****>"
    assert binary.mask_text("<\ufffd\ufffd\x00\x01\ufffd>") == "<\ufffd\ufffd\x00\x01\ufffd>"


@pytest.mark.parametrize(
    "value", ["x.*y", "(a|b)", "\\d+\\", "[abc]", "a{2,3}", "^$HOME?", "\\\\\\\\", "a\\nb", "*+?|"]
)
def test_regex_metacharacters_are_literal(value: str) -> None:
    masker = Masker([value])
    assert masker.mask_text(f"[{value}]") == "[****]"
    assert masker.mask_bytes(f"[{value}]".encode()) == b"[****]"
    # What the value would match as a pattern is left alone.
    for lookalike in ["xaby", "a", "b", "abc", "aa", "HOME", "\\\\", "a\nb", "5"]:
        if value not in lookalike:
            assert masker.mask_text(lookalike) == lookalike


def test_short_metacharacter_values_are_ignored_not_interpreted() -> None:
    text = "anything at all (a) \\ ."
    assert mask(text, [".*", "\\", "|", "()"]) == text


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidValue):
        Masker("s3cr3t-value")  # type: ignore[arg-type]  # a lone str would mask nothing
    with pytest.raises(InvalidValue):
        Masker(b"s3cr3t-value")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue) as caught:
        Masker(["s3cr3t-value", 12345])  # type: ignore[list-item]
    assert "s3cr3t" not in str(caught.value)
    masker = Masker(["s3cr3t-value"])
    with pytest.raises(InvalidValue):
        masker.mask_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        masker.mask_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        masker.stream().feed("text")  # type: ignore[arg-type]


def test_repr_hides_values() -> None:
    values = ["s3cr3t-value", b"other-secret"]
    masker = Masker(values)
    stream = masker.stream()
    stream.feed(b"s3cr3t-va")
    for shown in (repr(masker), str(masker), repr(stream), str(stream)):
        assert "s3cr3t" not in shown and "other" not in shown and "s3cr3t-va" not in shown
    assert repr(masker) == "Masker(2 values)"
    assert repr(Masker(["only-one"])) == "Masker(1 value)"
    assert repr(stream) == "StreamMasker(2 values, 9 bytes held back)"


alphabet = st.sampled_from(["a", "b", "c", "\n", "é"])
small_values = st.lists(st.text(alphabet, min_size=1, max_size=9), max_size=6)


@given(values=small_values, noise=st.lists(st.text(alphabet, max_size=6), max_size=12), data=st.data())
@settings(max_examples=300, deadline=None)
def test_mask_bytes_matches_reference(values: list[str], noise: list[str], data: st.DataObject) -> None:
    # A small alphabet makes overlaps and nesting frequent. No line breaks in values here: the reference
    # knows nothing of line variants.
    values = [v.replace("\n", "") for v in values]
    text = "".join(data.draw(st.permutations(noise + values)))
    encoded = [v.encode() for v in values if len(v) >= MIN_MASKED_LENGTH]  # the minimum counts characters
    assert Masker(values).mask_bytes(text.encode()) == reference_mask(text.encode(), encoded)
    assert Masker(values).mask_text(text).encode() == reference_mask(text.encode(), encoded)


# --- streams -----------------------------------------------------------------------------------------


def test_stream_every_split_point() -> None:
    masker = Masker(["s3cr3t-tok", "tok-9"])
    data = b"ab s3cr3t-tok-9 cd s3cr3t-tok"
    expected = masker.mask_bytes(data)
    assert expected == b"ab **** cd ****"
    for i in range(len(data) + 1):
        assert stream_all(masker, [data[:i], data[i:]]) == expected
        for j in range(i, len(data) + 1):
            assert stream_all(masker, [data[:i], data[i:j], data[j:]]) == expected


def test_stream_one_byte_per_feed() -> None:
    key = "line one of the key\nline two\n"
    masker = Masker([key, "s3cr3t-value"])
    data = f"start {key} middle s3cr3t-value end s3cr3t-val".encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert stream_all(masker, chunks) == masker.mask_bytes(data)
    assert b"s3cr3t-value" not in stream_all(masker, chunks)
    # A multi-byte character split inside a value.
    value = "pässwörd-🔑"
    encoded = f"x{value}y".encode()
    assert stream_all(Masker([value]), [encoded[i : i + 1] for i in range(len(encoded))]) == b"x****y"


def test_stream_emits_early_and_holds_back_little() -> None:
    masker = Masker(["abcdefgh"])
    stream = masker.stream()
    assert stream.feed(b"0123456789") == b"012"
    assert stream.held_back == 7
    assert stream.feed(b"abcd") == b"3456"
    assert stream.feed(b"efgh tail") == b"789****"
    assert stream.flush() == b" tail"
    # flush starts a new stream
    assert stream.feed(b"abcdefgh!") == b"****"
    assert stream.flush() == b"!"


def test_stream_flush_on_empty_stream() -> None:
    stream = StreamMasker(["s3cr3t-value"])
    assert stream.flush() == b""
    assert stream.feed(b"") == b""
    assert stream.flush() == b""


def test_stream_long_overlap_chain_is_not_held_whole() -> None:
    # A run of overlapping occurrences longer than any value is emitted as it goes, not buffered.
    masker = Masker(["abab"])
    stream = masker.stream()
    out = [stream.feed(b"x")] + [stream.feed(b"ab") for _ in range(1000)]
    assert stream.held_back <= 3
    out.append(stream.flush())
    assert b"".join(out) == b"x****"


@st.composite
def stream_cases(draw: st.DrawFn) -> tuple[list[str | bytes], bytes, list[int]]:
    values = draw(st.lists(st.text(alphabet, min_size=0, max_size=12), max_size=6))
    raw_values = draw(st.lists(st.binary(min_size=3, max_size=8), max_size=2))
    noise = draw(st.lists(st.text(alphabet, max_size=8).map(str.encode) | st.binary(max_size=4), max_size=10))
    pieces = [v.encode() for v in values] + raw_values + noise
    data = b"".join(draw(st.permutations(pieces)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return [*values, *raw_values], data, cuts


@given(stream_cases())
@settings(max_examples=400, deadline=None)
def test_stream_equals_whole_for_any_split(case: tuple[list[str | bytes], bytes, list[int]]) -> None:
    values, data, cuts = case
    masker = Masker(values)
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert stream_all(masker, chunks) == masker.mask_bytes(data)


# --- speed -------------------------------------------------------------------------------------------


def test_performance_one_mib_two_hundred_values() -> None:
    rng = random.Random(7)
    symbols = string.ascii_letters + string.digits
    values = ["".join(rng.choices(symbols, k=rng.randint(8, 40))) for _ in range(200)]
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(1000)]
    parts, size = [], 0
    while size < 1 << 20:
        part = rng.choice(values) if rng.random() < 0.002 else rng.choice(words)
        parts.append(part)
        size += len(part) + 1
    text = " ".join(parts)[: 1 << 20]
    data = text.encode()

    started = time.perf_counter()
    masker = Masker(values)
    masked_text = masker.mask_text(text)
    text_seconds = time.perf_counter() - started

    started = time.perf_counter()
    masked = masker.mask_bytes(data)
    bytes_seconds = time.perf_counter() - started

    started = time.perf_counter()
    streamed = stream_all(masker, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    stream_seconds = time.perf_counter() - started

    assert masked_text.count(MASK) > 100
    assert masked == masked_text.encode() == streamed
    assert not any(value in masked_text for value in values)
    assert text_seconds < 1.0 and bytes_seconds < 1.0 and stream_seconds < 1.0
