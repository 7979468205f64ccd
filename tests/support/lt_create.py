#!/usr/bin/python3
"""Makes a .torrent with libtorrent's create_torrent, for `create`'s interop tests.

  lt_create.py v1|v2|hybrid SOURCE OUT.torrent PIECE_LENGTH [private]

v2 and hybrid add SOURCE with libtorrent's own walk (libtorrent sorts the files as BEP 52
asks). libtorrent's v1 keeps the order the folder lists its entries in, so for v1 the
files are added one by one, sorted by their whole path joined with '/' (mktorrent's
order, which `create --v1` follows too). No creation date, tracker or creator is set:
only the info dictionary is compared.
"""
import os
import sys

import libtorrent as lt


def v1_files(source):
    name = os.path.basename(os.path.abspath(source))
    if os.path.isfile(source):
        return [(name, os.path.getsize(source))]
    found = []
    for folder, _dirs, files in os.walk(source):
        for f in files:
            full = os.path.join(folder, f)
            rel = os.path.relpath(full, source).split(os.sep)
            found.append(("/".join([name] + rel), os.path.getsize(full)))
    found.sort(key=lambda e: e[0].encode())
    return found


def main():
    kind, source, out_path, piece_length = sys.argv[1:5]
    private = len(sys.argv) > 5 and sys.argv[5] == "private"
    fs = lt.file_storage()
    if kind == "v1":
        for path, size in v1_files(source):
            fs.add_file(path, size)
    else:
        lt.add_files(fs, source)
    flags = {"v1": lt.create_torrent.v1_only, "hybrid": 0, "v2": lt.create_torrent.v2_only}[kind]
    ct = lt.create_torrent(fs, int(piece_length), flags=flags)
    ct.set_priv(private)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(source)))
    entry = ct.generate()
    entry.pop(b"creation date", None)
    with open(out_path, "wb") as f:
        f.write(lt.bencode(entry))


main()
