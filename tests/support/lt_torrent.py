#!/usr/bin/python3
"""Makes and describes .torrent files with libtorrent, the reference engine, for the
interop tests. Prints one JSON object on stdout.

  lt_torrent.py create v1|hybrid|v2 SOURCE OUT.torrent PIECE_LENGTH
  lt_torrent.py describe TORRENT
"""
import json
import os
import sys

import libtorrent as lt


def describe(path):
    ti = lt.torrent_info(path)
    hashes = ti.info_hashes()
    files = ti.files()
    out = {
        "name": ti.name(),
        "info_hash_v1": str(hashes.v1) if hashes.has_v1() else None,
        "total_size": ti.total_size(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "private": ti.priv(),
        "files": [
            {
                "path": files.file_path(i),
                "size": files.file_size(i),
                "pad": bool(files.file_flags(i) & lt.file_storage.flag_pad_file),
            }
            for i in range(files.num_files())
        ],
        "trackers": [t.url for t in ti.trackers()],
    }
    return out


def create(kind, source, out_path, piece_length):
    fs = lt.file_storage()
    lt.add_files(fs, source)
    flags = {"v1": lt.create_torrent.v1_only, "hybrid": 0, "v2": lt.create_torrent.v2_only}[kind]
    ct = lt.create_torrent(fs, piece_length, flags=flags)
    ct.add_tracker("http://127.0.0.1:6969/announce", 0)
    ct.add_tracker("udp://127.0.0.1:6969/announce", 1)
    ct.set_creator("libtorrent test")
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(source)))
    with open(out_path, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def main():
    if sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        print(json.dumps(describe(sys.argv[4])))
    else:
        print(json.dumps(describe(sys.argv[2])))


main()
