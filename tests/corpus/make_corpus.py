#!/usr/bin/env python3
"""Writes the hostile-torrent corpus: one file per case and expected.tsv.

Each case is a .torrent that Metainfo::from_bytes must refuse, paired with the exact
Display text of the error it must give. Byte offsets in the expected texts are computed
here from the bytes written, so a change to a case cannot silently desynchronise them.

Run from anywhere: python3 tests/corpus/make_corpus.py. It rewrites every *.torrent in
this folder and expected.tsv; the output is deterministic. With `--fuzz-seeds DIR` it
instead writes the hostile cases plus some valid torrents into DIR, to seed a fuzz corpus.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Raw:
    """Bytes spliced into the output as they are, for encodings the encoder refuses."""

    def __init__(self, data):
        self.data = data


class Pairs:
    """A dictionary written in the given order, duplicates and all."""

    def __init__(self, *pairs):
        self.pairs = pairs


def enc(v):
    """Bencodes v; plain dicts get sorted keys, as a well-behaved encoder would write."""
    if isinstance(v, Raw):
        return v.data
    if isinstance(v, bool):
        raise TypeError("bool is not bencode")
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode("utf-8")
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(enc(x) for x in v) + b"e"
    if isinstance(v, dict):
        pairs = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(enc(k) + enc(x) for k, x in pairs) + b"e"
    if isinstance(v, Pairs):
        return b"d" + b"".join(enc(k) + enc(x) for k, x in v.pairs) + b"e"
    raise TypeError(type(v))


ANNOUNCE = "http://tracker.invalid/announce"


def hashes(n, extra=0):
    """n fake SHA-1 hashes (plus `extra` stray bytes); their values do not matter here."""
    return bytes((i * 7 + 3) % 256 for i in range(n * 20 + extra))


def single(**overrides):
    """A valid single-file info dict: 40000 bytes in pieces of 16 KiB, so 3 pieces."""
    info = {"name": "sample.bin", "piece length": 16384, "length": 40000, "pieces": hashes(3)}
    info.update(overrides)
    return {k: v for k, v in info.items() if v is not None}


def multi(files, **overrides):
    info = {"name": "album", "piece length": 16384, "files": files, "pieces": hashes(3)}
    info.update(overrides)
    return {k: v for k, v in info.items() if v is not None}


def f(length, *path):
    return {"length": length, "path": list(path)}


def torrent(info):
    return enc({"announce": ANNOUNCE, "info": info})


def at(data, needle, nth=0):
    """The offset of the nth occurrence of needle in data; fails loudly if absent."""
    pos = -1
    for _ in range(nth + 1):
        pos = data.find(needle, pos + 1)
        if pos < 0:
            sys.exit("needle %r not found" % needle)
    return pos


def bencode_err(text):
    return "not valid bencode: " + text


VALID_FILES = [f(30000, "disc1", "track01.flac"), f(10000, "cover.jpg")]

cases = []


def case(name, data, expected):
    cases.append((name + ".torrent", data, expected))


# Decoder-level damage.

case("empty_file", b"", bencode_err("unexpected end of input at byte 0"))

case("top_level_list", enc([ANNOUNCE, single()]), "torrent is not a dictionary")

N = 100_000
case(
    "deep_nesting_lists",
    b"l" * N + b"e" * N,
    bencode_err("nesting deeper than 100 levels at byte 100"),
)

# The torrent dict, then `info` and its children, each a one-key dict: the 101st open
# container is the 100th of the chain that starts at info, 4 bytes apart. Ten thousand
# levels are as far past the limit as a hundred thousand, in a tenth of the file.
D = 10_000
data = b"d4:info" + b"d1:a" * D + b"0:" + b"e" * D + b"e"
case(
    "deep_nesting_dicts_in_info",
    data,
    bencode_err("nesting deeper than 100 levels at byte %d" % (7 + 4 * 99)),
)

data = b"d4:info99999999999999:" + b"x" * 10 + b"e"
case(
    "huge_string_length",
    data,
    bencode_err("string at byte 7 claims more than the %d bytes that remain" % (len(data) - 22)),
)

# A length prefix too long for any integer type: the decoder must not wrap around.
data = b"d4:info" + b"9" * 30 + b":xe"
case(
    "string_length_overflows_usize",
    data,
    bencode_err("string at byte 7 claims more than the %d bytes that remain" % (len(data) - 7)),
)

data = torrent(single(**{"piece length": Raw(b"i99999999999999999999e")}))
case(
    "piece_length_overflows_i64",
    data,
    bencode_err("integer at byte %d does not fit in 64 bits" % at(data, b"i99999999999999999999e")),
)

data = torrent(single(length=Raw(b"i9223372036854775808e")))
case(
    "length_overflows_i64",
    data,
    bencode_err("integer at byte %d does not fit in 64 bits" % at(data, b"i9223372036854775808e")),
)

data = torrent(single(**{"piece length": Raw(b"i016384e")}))
case(
    "leading_zero_integer",
    data,
    bencode_err("malformed integer at byte %d" % at(data, b"i016384e")),
)

data = torrent(single(length=Raw(b"i-0e")))
case("negative_zero_integer", data, bencode_err("malformed integer at byte %d" % at(data, b"i-0e")))

data = torrent(single(name=Raw(b"010:sample.bin")))
case(
    "leading_zero_string_length",
    data,
    bencode_err("malformed string length at byte %d" % at(data, b"010:")),
)

data = b"d4:infoxe"
case("unexpected_byte", data, bencode_err("unexpected byte 0x78 at byte 7"))

VALID = torrent(single())
# Cut in half, the file ends inside the `piece length` key: the decoder must see that the
# key's declared length runs past the end rather than read beyond the buffer.
cut = len(VALID) // 2
key_at = at(VALID, b"12:piece length")
key_data = key_at + 3
assert key_data <= cut < key_data + 12, "the cut should fall inside the key"
case(
    "truncated_half",
    VALID[:cut],
    bencode_err(
        "string at byte %d claims more than the %d bytes that remain" % (key_at, cut - key_data)
    ),
)

case(
    "trailing_garbage",
    VALID + b"<html>oops</html>",
    bencode_err("trailing data after the value at byte %d" % len(VALID)),
)

# Two `length` keys next to each other, then the same clash with keys out of order, which
# takes the decoder's sorting path.
data = torrent(Pairs(("length", 40000), ("length", 1), ("name", "sample.bin"),
                     ("piece length", 16384), ("pieces", hashes(3))))
case(
    "duplicate_key",
    data,
    bencode_err("duplicate dictionary key at byte %d" % at(data, b"6:length", 1)),
)

data = torrent(Pairs(("name", "sample.bin"), ("length", 40000), ("pieces", hashes(3)),
                     ("piece length", 16384), ("name", "other.bin")))
case(
    "duplicate_key_unsorted",
    data,
    bencode_err("duplicate dictionary key at byte %d" % at(data, b"4:name", 1)),
)

case(
    "non_string_key",
    b"di42e" + torrent(single())[1:],
    bencode_err("dictionary key at byte 1 is not a string"),
)

# Structure of the torrent and its info dict.

case("missing_info", enc({"announce": ANNOUNCE}), 'missing required field "info"')

case("info_not_dict", enc({"announce": ANNOUNCE, "info": "spam"}), "info is not a dictionary")

case("missing_pieces", torrent(single(pieces=None)), 'missing required field "pieces"')

case(
    "missing_piece_length",
    torrent(single(**{"piece length": None})),
    'missing required field "piece length"',
)

case("missing_name", torrent(single(name=None)), 'missing required field "name"')

case(
    "neither_length_nor_files",
    torrent(single(length=None)),
    'missing required field "length"',
)

case(
    "missing_path",
    torrent(multi([{"length": 40000}])),
    'missing required field "path"',
)

data = torrent(single(**{"piece length": "16384"}))
case(
    "piece_length_not_integer",
    data,
    'field "piece length" at byte %d should be an integer, found string' % at(data, b"5:16384"),
)

data = torrent(single(pieces=[hashes(3)]))
case(
    "pieces_not_string",
    data,
    'field "pieces" at byte %d should be a string, found list' % (at(data, b"6:pieces") + 8),
)

data = torrent(multi("track01.flac"))
case(
    "files_not_list",
    data,
    'field "files" at byte %d should be a list, found string' % at(data, b"12:track01.flac"),
)

data = torrent(multi([7]))
case(
    "file_entry_not_dict",
    data,
    # The offset is the entry's, one past the list's opening `l`.
    'field "files" at byte %d should be a list of dictionaries, found integer'
    % (at(data, b"li7ee") + 1),
)

data = torrent(multi([{"length": 40000, "path": "disc1/track01.flac"}]))
case(
    "path_not_list",
    data,
    'field "path" at byte %d should be a list, found string' % at(data, b"18:disc1/track01.flac"),
)

data = torrent(multi([{"length": 40000, "path": ["disc1", 1]}]))
case(
    "path_component_not_string",
    data,
    'field "path" at byte %d should be a list of strings, found integer' % at(data, b"i1ee"),
)

case(
    "empty_files_list",
    torrent(multi([])),
    "files list is empty",
)

case(
    "both_length_and_files",
    torrent(single(files=VALID_FILES)),
    'info has both "length" and "files"',
)

case(
    "v2_only",
    torrent({
        "meta version": 2,
        "name": "v2.bin",
        "piece length": 16384,
        "file tree": {"v2.bin": {"": {"length": 40000, "pieces root": bytes(32)}}},
    }),
    "this is a BitTorrent v2-only torrent, which is not supported (v1 and hybrid torrents are)",
)

# Numbers.

case("negative_length", torrent(single(length=-1)), 'field "length" is negative (-1)')

case(
    "negative_piece_length",
    torrent(single(**{"piece length": -16384})),
    'field "piece length" is negative (-16384)',
)

case(
    "negative_file_length_in_list",
    torrent(multi([f(40000, "a"), f(-5, "b")])),
    'field "length" is negative (-5)',
)

case(
    "zero_piece_length",
    torrent(single(**{"piece length": 0})),
    "piece length 0 is outside 1 byte to 512 MiB",
)

case(
    "piece_length_over_512mib",
    torrent(single(**{"piece length": 512 * 1024 * 1024 + 1})),
    "piece length 536870913 is outside 1 byte to 512 MiB",
)

I64_MAX = 2**63 - 1
case(
    "file_lengths_overflow_u64",
    torrent(multi([f(I64_MAX, "a"), f(I64_MAX, "b"), f(I64_MAX, "c")], pieces=hashes(1))),
    "file lengths overflow when added up",
)

case(
    "too_many_pieces",
    torrent(single(**{"piece length": 1, "length": 2**32, "pieces": hashes(1)})),
    "4294967296 pieces is more than the protocol can number",
)

case(
    "pieces_not_multiple_of_20",
    torrent(single(pieces=hashes(2, extra=19))),
    "pieces field is 59 bytes, not a multiple of 20",
)

case(
    "piece_count_mismatch",
    torrent(single(pieces=hashes(2))),
    "torrent has 2 piece hashes but its files need 3",
)

case(
    "total_length_zero",
    torrent(single(length=0, pieces=b"")),
    "torrent has no data (total length is 0)",
)

# Names and paths.

case(
    "name_dotdot",
    torrent(single(name="..")),
    'torrent name ".." is not usable: path component ".." would leave its folder',
)

case(
    "name_with_separators",
    torrent(multi(VALID_FILES, name="../../etc")),
    'torrent name "../../etc" is not usable: path component "../../etc" holds a separator or NUL',
)

case(
    "name_empty",
    torrent(single(name="")),
    'torrent name "" is not usable: empty path component',
)

# The UTF-8 name wins over the plain one, so it must be checked too.
case(
    "name_utf8_traversal",
    torrent(single(**{"name.utf-8": "../evil"})),
    'torrent name "../evil" is not usable: path component "../evil" holds a separator or NUL',
)

case(
    "path_traversal_dotdot",
    torrent(multi([f(40000, "..", "..", "etc", "cron.d", "evil")])),
    'file 0 has an unusable path: path component ".." would leave its folder',
)

case(
    "path_dot_component",
    torrent(multi([f(20000, "disc1", "a"), f(20000, "disc1", ".", "b")])),
    'file 1 has an unusable path: path component "." would leave its folder',
)

case(
    "path_absolute",
    torrent(multi([f(40000, "/etc/passwd")])),
    'file 0 has an unusable path: path component "/etc/passwd" holds a separator or NUL',
)

case(
    "path_backslash_traversal",
    torrent(multi([f(40000, "..\\..\\Windows\\evil.dll")])),
    'file 0 has an unusable path: path component "..\\\\..\\\\Windows\\\\evil.dll"'
    " holds a separator or NUL",
)

case(
    "path_nul_byte",
    torrent(multi([f(40000, "evil.txt\0.jpg")])),
    'file 0 has an unusable path: path component "evil.txt\\0.jpg" holds a separator or NUL',
)

case(
    "path_empty_list",
    torrent(multi([f(40000)])),
    "file 0 has an unusable path: empty path",
)

case(
    "path_empty_component",
    torrent(multi([f(10000, "ok"), f(10000, "ok2"), f(20000, "disc1", "", "x")])),
    "file 2 has an unusable path: empty path component",
)

# The UTF-8 path wins over the plain one, so a clean `path` cannot hide a hostile
# `path.utf-8`.
case(
    "path_utf8_traversal",
    torrent(multi([f(20000, "a"), {"length": 20000, "path": ["b"], "path.utf-8": ["..", "b"]}])),
    'file 1 has an unusable path: path component ".." would leave its folder',
)


# Valid torrents, used only to seed the fuzzers (never committed as corpus cases): they
# give the metainfo fuzzer accepted inputs to mutate from, with the optional parts filled.
valid_seeds = {
    "valid_single": torrent(single()),
    "valid_multi": torrent(multi(VALID_FILES)),
    "valid_multi_padding": torrent(multi(
        [f(16000, "a.bin"), {"length": 384, "path": [".pad", "384"], "attr": "p"},
         f(23616, "b.bin")])),
    "valid_hybrid": torrent(single(**{
        "meta version": 2,
        "file tree": {"sample.bin": {"": {"length": 40000, "pieces root": bytes(32)}}},
    })),
    "valid_private_utf8": enc({
        "announce": ANNOUNCE,
        "announce-list": [[ANNOUNCE, "udp://tracker.invalid:6969"], ["http://b.invalid/a"]],
        "comment": "a comment",
        "created by": "make_corpus.py",
        "creation date": 1700000000,
        "url-list": ["http://seed.invalid/"],
        "info": multi([{"length": 40000, "path": ["x"], "path.utf-8": ["caf\u00e9"]}],
                      private=1, **{"name.utf-8": "\u00e9t\u00e9"}),
    }),
    "valid_renamed": torrent(multi(
        [f(10000, "CON"), f(10000, "same"), f(10000, "same"), f(10000, "same", "x")])),
    # Web seeds (BEP 19): hostile `url-list` entries are refused one by one, and the
    # torrent still loads, so these are valid seeds that carry hostile parts.
    "valid_url_list_string": enc({"url-list": "http://127.0.0.1:8000/", "info": single()}),
    "valid_url_list_hostile": enc({
        "url-list": ["ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)",
                     "http://", 7, {"a": 1}, Raw(b"3:\xff\xfeh"),
                     "http://127.0.0.1/" + "a" * 4096, "http://127.0.0.1/ok",
                     "http://127.0.0.1/ok", ""],
        "info": multi(VALID_FILES),
    }),
    "valid_url_list_not_a_list": enc({"url-list": 42, "info": single()}),
    "valid_url_list_huge": enc({
        "url-list": ["http://127.0.0.1/%d" % i for i in range(200)], "info": single()}),
    "valid_unsorted": torrent(Pairs(("pieces", hashes(1)), ("name", "u"),
                                    ("piece length", 16384), ("length", 5))),
}


def write_fuzz_seeds(folder):
    """Seeds a fuzz corpus folder with every hostile case and the valid torrents."""
    os.makedirs(folder, exist_ok=True)
    for name, data, _ in cases:
        with open(os.path.join(folder, name), "wb") as out:
            out.write(data)
    for name, data in valid_seeds.items():
        with open(os.path.join(folder, name + ".torrent"), "wb") as out:
            out.write(data)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--fuzz-seeds":
        write_fuzz_seeds(sys.argv[2])
        print("%d seeds written to %s" % (len(cases) + len(valid_seeds), sys.argv[2]))
        return
    names = [n for n, _, _ in cases]
    texts = [e for _, _, e in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    assert len(set(texts)) == len(texts), "every case must give its own error text"
    for _, _, e in cases:
        assert "\t" not in e and "\n" not in e
    for old in os.listdir(HERE):
        if old.endswith(".torrent"):
            os.remove(os.path.join(HERE, old))
    for name, data, _ in cases:
        with open(os.path.join(HERE, name), "wb") as out:
            out.write(data)
    with open(os.path.join(HERE, "expected.tsv"), "w", encoding="utf-8", newline="\n") as out:
        for name, _, e in sorted(cases):
            out.write("%s\t%s\n" % (name, e))
    print("%d cases written" % len(cases))


main()
