//! The decoder: untrusted bytes in, a borrowed [`Value`] tree or a [`DecodeError`] out.
//!
//! It is iterative (an explicit stack of open containers, never recursion), so no input can
//! overflow the call stack, and every limit is checked before the work it guards: nesting
//! depth, token count, integer range and each string's length against the bytes that
//! remain. Values borrow from the input, and each keeps its exact raw span, so the
//! info-hash is taken over the original bytes and never over a re-encoding.

use super::DecodeError;

/// libtorrent's depth limit for `.torrent` files; real torrents nest four or five deep.
pub const DEFAULT_MAX_DEPTH: usize = 100;

/// libtorrent's token limit for `.torrent` files. A torrent with a million files stays
/// under it; the cap exists so that a small, dense input cannot make a huge tree.
pub const DEFAULT_MAX_TOKENS: usize = 2_000_000;

/// Bounds on what one decode may build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Containers open at once; one more is [`DecodeError::TooDeep`].
    pub max_depth: usize,
    /// Values of any kind, dictionary keys included; one more is
    /// [`DecodeError::TooManyTokens`].
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: DEFAULT_MAX_DEPTH,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// One decoded value, borrowing from the input it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// What the value is, with its contents.
    kind: Kind<'a>,
    /// The exact bytes that encoded this value, so callers can hash or forward them.
    raw: &'a [u8],
    /// Where `raw` starts in the input, for error messages of the layers above.
    offset: usize,
}

/// The four bencode types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `i<n>e`, within the range of an `i64`.
    Int(i64),
    /// `<len>:<bytes>`, not necessarily UTF-8.
    Bytes(&'a [u8]),
    /// `l...e`.
    List(Vec<Value<'a>>),
    /// `d...e`.
    Dict(Dict<'a>),
}

/// A dictionary: keys are unique; their order is the input's.
///
/// BEP 3 asks for sorted keys, but torrents with unsorted keys exist in the wild and the
/// info-hash is taken over the raw bytes anyway, so order is not enforced. Duplicate keys
/// are refused, because two readers could then disagree on what the dictionary says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dict<'a> {
    entries: Vec<(&'a [u8], Value<'a>)>,
}

impl<'a> Dict<'a> {
    /// The value under `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries
            .iter()
            .find_map(|(k, v)| (*k == key).then_some(v))
    }

    /// Entries in input order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &Value<'a>)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> Value<'a> {
    /// The value's kind and contents.
    pub fn kind(&self) -> &Kind<'a> {
        &self.kind
    }

    /// The exact original bytes of this value.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The byte offset of this value in the decoded input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(items) => Some(items),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// A word for the kind, for error messages ("expected a list, found an integer").
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Int(_) => "integer",
            Kind::Bytes(_) => "string",
            Kind::List(_) => "list",
            Kind::Dict(_) => "dictionary",
        }
    }
}

/// Decodes `input`, which must hold exactly one value, with the default [`Limits`].
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    decode_with(input, Limits::default())
}

/// Decodes `input`, which must hold exactly one value.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value<'_>, DecodeError> {
    let (value, end) = decode_prefix_with(input, limits)?;
    if end != input.len() {
        return Err(DecodeError::TrailingData { offset: end });
    }
    Ok(value)
}

/// Decodes one value from the start of `input` and returns it with the number of bytes it
/// took. What follows is left to the caller (a `ut_metadata` message carries raw data after
/// its dictionary).
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    decode_prefix_with(input, Limits::default())
}

/// A container that has been opened and not yet closed.
struct Open<'a> {
    /// Where its `l` or `d` is.
    start: usize,
    body: OpenBody<'a>,
}

enum OpenBody<'a> {
    List(Vec<Value<'a>>),
    Dict {
        entries: Vec<(&'a [u8], Value<'a>)>,
        /// The offset of every key, kept only to name a duplicate key precisely.
        key_offsets: Vec<usize>,
        /// A key read whose value has not been read yet.
        pending_key: Option<&'a [u8]>,
        /// Whether every key so far was greater than the one before; if so there can be
        /// no duplicate, and the close needs no sort.
        sorted: bool,
    },
}

/// Decodes one value from the start of `input` under `limits`. One loop over an explicit
/// stack, so depth costs no recursion: each turn closes a container, reads a dictionary
/// key, or reads a value (a leaf or a container's start), and hands what it completed to
/// its parent.
pub fn decode_prefix_with(input: &[u8], limits: Limits) -> Result<(Value<'_>, usize), DecodeError> {
    let mut decoder = Decoder {
        input,
        limits,
        stack: Vec::new(),
        tokens: 0,
        pos: 0,
    };
    loop {
        let byte = *input.get(decoder.pos).ok_or(DecodeError::UnexpectedEof {
            offset: decoder.pos,
        })?;
        let completed = if byte == b'e' && decoder.closes() {
            decoder.close_innermost()?
        } else if decoder.read_key(byte)? {
            continue;
        } else if let Some(leaf) = decoder.read_value(byte)? {
            leaf
        } else {
            // It opened a container.
            continue;
        };
        if let Some(top) = decoder.hand_up(completed)? {
            return Ok((top, decoder.pos));
        }
    }
}

/// Where [`decode_prefix_with`] is: the input, the next offset, and the containers open.
struct Decoder<'a> {
    input: &'a [u8],
    limits: Limits,
    /// Containers opened and not yet closed, the innermost last.
    stack: Vec<Open<'a>>,
    /// Tokens read so far, against `limits.max_tokens`.
    tokens: usize,
    /// The offset of the next byte.
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Whether an `e` here closes the innermost container: there is one, and it is not a
    /// dictionary waiting for the value of a key it has read.
    fn closes(&self) -> bool {
        let awaiting_dict_value = matches!(
            self.stack.last(),
            Some(Open {
                body: OpenBody::Dict {
                    pending_key: Some(_),
                    ..
                },
                ..
            })
        );
        !self.stack.is_empty() && !awaiting_dict_value
    }

    /// Closes the innermost container at its `e`, giving its value.
    fn close_innermost(&mut self) -> Result<Value<'a>, DecodeError> {
        let open = self
            .stack
            .pop()
            .ok_or(DecodeError::UnexpectedEof { offset: self.pos })?;
        self.pos += 1;
        close(self.input, open, self.pos)
    }

    /// When the innermost container is a dictionary that wants a key (it is not waiting
    /// for a value), reads that key, which must be a string, and says `true`.
    fn read_key(&mut self, byte: u8) -> Result<bool, DecodeError> {
        let Some(Open {
            body:
                OpenBody::Dict {
                    pending_key: pending @ None,
                    entries,
                    key_offsets,
                    sorted,
                },
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(false);
        };
        if !byte.is_ascii_digit() {
            return Err(DecodeError::NonStringKey { offset: self.pos });
        }
        count_token(&mut self.tokens, self.limits, self.pos)?;
        let key_offset = self.pos;
        let (key, next) = parse_bytes(self.input, self.pos)?;
        if let Some((last, _)) = entries.last() {
            if key <= *last {
                *sorted = false;
            }
        }
        key_offsets.push(key_offset);
        *pending = Some(key);
        self.pos = next;
        Ok(true)
    }

    /// Reads the value that starts with `byte`: a leaf, given back, or the start of a
    /// list or dictionary, pushed on the stack (`None`).
    fn read_value(&mut self, byte: u8) -> Result<Option<Value<'a>>, DecodeError> {
        let pos = self.pos;
        count_token(&mut self.tokens, self.limits, pos)?;
        let (value, next) = match byte {
            b'i' => {
                let (n, next) = parse_int(self.input, pos)?;
                (leaf(self.input, Kind::Int(n), pos, next)?, next)
            }
            b'0'..=b'9' => {
                let (bytes, next) = parse_bytes(self.input, pos)?;
                (leaf(self.input, Kind::Bytes(bytes), pos, next)?, next)
            }
            b'l' | b'd' => {
                self.open(byte == b'l')?;
                return Ok(None);
            }
            other => {
                return Err(DecodeError::UnexpectedByte {
                    offset: pos,
                    byte: other,
                })
            }
        };
        self.pos = next;
        Ok(Some(value))
    }

    /// Opens a list (or else a dictionary) at its `l` or `d`, within the depth allowed.
    fn open(&mut self, list: bool) -> Result<(), DecodeError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                offset: self.pos,
                limit: self.limits.max_depth,
            });
        }
        let body = if list {
            OpenBody::List(Vec::new())
        } else {
            OpenBody::Dict {
                entries: Vec::new(),
                key_offsets: Vec::new(),
                pending_key: None,
                sorted: true,
            }
        };
        self.stack.push(Open {
            start: self.pos,
            body,
        });
        self.pos += 1;
        Ok(())
    }

    /// Hands a finished value to its parent, or gives it back if it is the top level.
    fn hand_up(&mut self, completed: Value<'a>) -> Result<Option<Value<'a>>, DecodeError> {
        match self.stack.last_mut() {
            None => return Ok(Some(completed)),
            Some(Open {
                body: OpenBody::List(items),
                ..
            }) => items.push(completed),
            Some(Open {
                body:
                    OpenBody::Dict {
                        entries,
                        pending_key,
                        ..
                    },
                start,
            }) => {
                let key = pending_key
                    .take()
                    .ok_or(DecodeError::NonStringKey { offset: *start })?;
                entries.push((key, completed));
            }
        }
        Ok(None)
    }
}

fn count_token(tokens: &mut usize, limits: Limits, offset: usize) -> Result<(), DecodeError> {
    *tokens += 1;
    if *tokens > limits.max_tokens {
        return Err(DecodeError::TooManyTokens {
            offset,
            limit: limits.max_tokens,
        });
    }
    Ok(())
}

fn leaf<'a>(
    input: &'a [u8],
    kind: Kind<'a>,
    start: usize,
    end: usize,
) -> Result<Value<'a>, DecodeError> {
    let raw = input
        .get(start..end)
        .ok_or(DecodeError::UnexpectedEof { offset: end })?;
    Ok(Value {
        kind,
        raw,
        offset: start,
    })
}

/// Turns a closed container into a value; `end` is just past its `e`.
fn close<'a>(input: &'a [u8], open: Open<'a>, end: usize) -> Result<Value<'a>, DecodeError> {
    let kind = match open.body {
        OpenBody::List(items) => Kind::List(items),
        OpenBody::Dict {
            entries,
            key_offsets,
            sorted,
            ..
        } => {
            if !sorted {
                if let Some(offset) = first_duplicate_key(&entries, &key_offsets) {
                    return Err(DecodeError::DuplicateKey { offset });
                }
            }
            Kind::Dict(Dict { entries })
        }
    };
    leaf(input, kind, open.start, end)
}

/// The offset of the second occurrence of a repeated key, if any. Sorting indices keeps
/// this O(n log n) however the keys are arranged.
fn first_duplicate_key(entries: &[(&[u8], Value<'_>)], key_offsets: &[usize]) -> Option<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].0.cmp(entries[b].0).then(a.cmp(&b)));
    order
        .windows(2)
        .filter(|w| entries[w[0]].0 == entries[w[1]].0)
        .filter_map(|w| key_offsets.get(w[1]).copied())
        .min()
}

/// Parses `i<digits>e` at `start`; returns the integer and the offset just past the `e`.
fn parse_int(input: &[u8], start: usize) -> Result<(i64, usize), DecodeError> {
    let invalid = DecodeError::InvalidInteger { offset: start };
    let mut pos = start + 1;
    let negative = input.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let digits_start = pos;
    let mut n: i64 = 0;
    loop {
        match input.get(pos) {
            None => return Err(DecodeError::UnexpectedEof { offset: pos }),
            Some(b'e') => break,
            Some(&d) if d.is_ascii_digit() => {
                let digit = i64::from(d - b'0');
                // Accumulate on the negative side when negative, so i64::MIN fits.
                n = n
                    .checked_mul(10)
                    .and_then(|n| {
                        if negative {
                            n.checked_sub(digit)
                        } else {
                            n.checked_add(digit)
                        }
                    })
                    .ok_or(DecodeError::IntegerOverflow { offset: start })?;
                pos += 1;
            }
            Some(_) => return Err(invalid),
        }
    }
    let digits = input.get(digits_start..pos).unwrap_or_default();
    let leading_zero = digits.len() > 1 && digits.first() == Some(&b'0');
    let negative_zero = negative && digits == b"0";
    if digits.is_empty() || leading_zero || negative_zero {
        return Err(invalid);
    }
    Ok((n, pos + 1))
}

/// Parses `<len>:<bytes>` at `start`; returns the bytes and the offset just past them.
fn parse_bytes(input: &[u8], start: usize) -> Result<(&[u8], usize), DecodeError> {
    let mut pos = start;
    let mut len: usize = 0;
    loop {
        match input.get(pos) {
            None => return Err(DecodeError::UnexpectedEof { offset: pos }),
            Some(b':') => break,
            Some(&d) if d.is_ascii_digit() => {
                len = len
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(usize::from(d - b'0')))
                    .ok_or(DecodeError::LengthBeyondInput {
                        offset: start,
                        remaining: input.len().saturating_sub(start),
                    })?;
                pos += 1;
            }
            Some(&byte) => return Err(DecodeError::UnexpectedByte { offset: pos, byte }),
        }
    }
    if pos - start > 1 && input.get(start) == Some(&b'0') {
        return Err(DecodeError::InvalidLength { offset: start });
    }
    let data_start = pos + 1;
    let remaining = input.len().saturating_sub(data_start);
    if len > remaining {
        return Err(DecodeError::LengthBeyondInput {
            offset: start,
            remaining,
        });
    }
    let end = data_start + len;
    let bytes = input
        .get(data_start..end)
        .ok_or(DecodeError::LengthBeyondInput {
            offset: start,
            remaining,
        })?;
    Ok((bytes, end))
}
