//! The HTTP tracker protocol (placeholder until the bencode module lands).
