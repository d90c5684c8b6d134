//! The CheckRequest read in place: the fields the engine reads, borrowed from the
//! message bytes.
//!
//! Decoding Envoy's CheckRequest into the generated types copies every header into a
//! `String` of its own and hashes it into a `HashMap`: about 27,000 instructions of a
//! warm allow's 65,000 (callgrind, `examples/profile_check.rs`), for a message the engine
//! reads a handful of fields from. This reader walks the protobuf wire format once and
//! keeps slices instead.
//!
//! It reads exactly what prost would for these fields: a later value of a singular field
//! replaces an earlier one, a repeated message is merged, a later map entry replaces an
//! earlier one with the same key (the [`Pairs`](crate::request::Pairs) lookup searches
//! from the end), strings must be UTF-8, and the limits on lengths, varints and nesting
//! are prost's. Every other field is skipped by its wire type without being checked
//! further, so a message prost would refuse only for a malformed field the engine never
//! reads is accepted here; whatever a message says in the fields read, the view is the
//! one prost's decode gives (the proptests below hold it to that).

/// Field numbers, from `envoy/service/auth/v3/attribute_context.proto`,
/// `external_auth.proto` and `envoy/config/core/v3/base.proto`.
mod tag {
    /// `CheckRequest.attributes`.
    pub const ATTRIBUTES: u32 = 1;
    /// `AttributeContext.source`.
    pub const SOURCE: u32 = 1;
    /// `AttributeContext.request`.
    pub const REQUEST: u32 = 4;
    /// `AttributeContext.context_extensions`.
    pub const CONTEXT_EXTENSIONS: u32 = 10;
    /// `AttributeContext.Peer.principal`.
    pub const PRINCIPAL: u32 = 4;
    /// `AttributeContext.Request.http`.
    pub const HTTP: u32 = 2;
    /// `HttpRequest.method`.
    pub const METHOD: u32 = 2;
    /// `HttpRequest.headers`.
    pub const HEADERS: u32 = 3;
    /// `HttpRequest.path`.
    pub const PATH: u32 = 4;
    /// `HttpRequest.host`.
    pub const HOST: u32 = 5;
    /// `HttpRequest.header_map`.
    pub const HEADER_MAP: u32 = 13;
    /// `HeaderMap.headers`.
    pub const HEADER_MAP_HEADERS: u32 = 1;
    /// `HeaderValue.key`, and a map entry's key.
    pub const KEY: u32 = 1;
    /// `HeaderValue.value`, and a map entry's value.
    pub const VALUE: u32 = 2;
    /// `HeaderValue.raw_value`.
    pub const RAW_VALUE: u32 = 3;
}

/// prost's `RECURSION_LIMIT`: how deep messages (and groups) may nest.
const RECURSION_LIMIT: u32 = 100;

/// Why the bytes are not a CheckRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end inside a field.
    #[error("truncated message")]
    Truncated,
    /// A varint longer than 10 bytes or above 2^64.
    #[error("invalid varint")]
    Varint,
    /// A field key with field number 0, above 2^29, or wire type 6 or 7.
    #[error("invalid field key")]
    Key,
    /// A field the engine reads, sent with another wire type than its own.
    #[error("field {0} has the wrong wire type")]
    WireType(&'static str),
    /// A string the engine reads that is not UTF-8.
    #[error("field {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A group end without its start, or with another field number.
    #[error("unbalanced group")]
    Group,
    /// Messages or groups nested deeper than prost allows.
    #[error("nested too deeply")]
    TooDeep,
}

/// A header as `HttpRequest.header_map` sends it (Envoy's `encode_raw_headers: true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHeader<'a> {
    /// The name, as the client sent it.
    pub key: &'a str,
    /// `value`, which Envoy leaves empty when it sends `raw_value`.
    pub value: &'a str,
    /// `raw_value`: the value's bytes, which need not be UTF-8.
    pub raw_value: &'a [u8],
}

/// The fields of a CheckRequest the engine reads, borrowed from its bytes. Missing fields
/// are empty, as in the generated types.
#[derive(Default, PartialEq, Eq)]
pub struct CheckFields<'a> {
    /// `attributes.request.http.method`.
    pub method: &'a str,
    /// `attributes.request.http.host`.
    pub host: &'a str,
    /// `attributes.request.http.path` (with the query string).
    pub path: &'a str,
    /// `attributes.request.http.headers`, in message order.
    pub headers: Vec<(&'a str, &'a str)>,
    /// `attributes.request.http.header_map.headers`, in message order.
    pub header_map: Vec<RawHeader<'a>>,
    /// Whether `attributes.request.http` is present at all.
    pub has_http: bool,
    /// `attributes.source.principal`.
    pub principal: &'a str,
    /// `attributes.context_extensions`, in message order.
    pub context_extensions: Vec<(&'a str, &'a str)>,
}

impl std::fmt::Debug for CheckFields<'_> {
    // Headers are left out on purpose: they carry `Authorization` and `Cookie`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckFields")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl<'a> CheckFields<'a> {
    /// Reads a serialized `envoy.service.auth.v3.CheckRequest`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut fields = CheckFields {
            // A typical Istio request has 15 to 25 headers.
            headers: Vec::with_capacity(24),
            ..Default::default()
        };
        let mut r = Reader { buf: bytes };
        while let Some((field, wire)) = r.key()? {
            match field {
                tag::ATTRIBUTES => {
                    let body = r.message(wire, "attributes", RECURSION_LIMIT)?;
                    fields.attributes(body, RECURSION_LIMIT - 1)?;
                }
                _ => r.skip(field, wire, RECURSION_LIMIT)?,
            }
        }
        Ok(fields)
    }

    fn attributes(&mut self, bytes: &'a [u8], depth: u32) -> Result<(), WireError> {
        let mut r = Reader { buf: bytes };
        while let Some((field, wire)) = r.key()? {
            match field {
                tag::SOURCE => {
                    let mut peer = Reader {
                        buf: r.message(wire, "source", depth)?,
                    };
                    while let Some((field, wire)) = peer.key()? {
                        match field {
                            tag::PRINCIPAL => self.principal = peer.string(wire, "principal")?,
                            _ => peer.skip(field, wire, depth - 1)?,
                        }
                    }
                }
                tag::REQUEST => {
                    let mut request = Reader {
                        buf: r.message(wire, "request", depth)?,
                    };
                    while let Some((field, wire)) = request.key()? {
                        match field {
                            tag::HTTP => {
                                let body = request.message(wire, "http", depth - 1)?;
                                self.has_http = true;
                                self.http(body, depth - 2)?;
                            }
                            _ => request.skip(field, wire, depth - 1)?,
                        }
                    }
                }
                tag::CONTEXT_EXTENSIONS => {
                    let entry = r.message(wire, "context_extensions", depth)?;
                    let pair = map_entry(entry, "context_extensions", depth - 1)?;
                    self.context_extensions.push(pair);
                }
                _ => r.skip(field, wire, depth)?,
            }
        }
        Ok(())
    }

    fn http(&mut self, bytes: &'a [u8], depth: u32) -> Result<(), WireError> {
        let mut r = Reader { buf: bytes };
        while let Some((field, wire)) = r.key()? {
            match field {
                tag::METHOD => self.method = r.string(wire, "method")?,
                tag::HOST => self.host = r.string(wire, "host")?,
                tag::PATH => self.path = r.string(wire, "path")?,
                tag::HEADERS => {
                    let entry = r.message(wire, "headers", depth)?;
                    self.headers.push(map_entry(entry, "headers", depth - 1)?);
                }
                tag::HEADER_MAP => {
                    let mut map = Reader {
                        buf: r.message(wire, "header_map", depth)?,
                    };
                    while let Some((field, wire)) = map.key()? {
                        match field {
                            tag::HEADER_MAP_HEADERS => {
                                let body = map.message(wire, "header_map.headers", depth - 1)?;
                                self.header_map.push(raw_header(body, depth - 2)?);
                            }
                            _ => map.skip(field, wire, depth - 1)?,
                        }
                    }
                }
                _ => r.skip(field, wire, depth)?,
            }
        }
        Ok(())
    }
}

/// A `map<string, string>` entry: key 1, value 2, either missing means empty.
fn map_entry<'a>(
    bytes: &'a [u8],
    name: &'static str,
    depth: u32,
) -> Result<(&'a str, &'a str), WireError> {
    let (mut key, mut value) = ("", "");
    let mut r = Reader { buf: bytes };
    while let Some((field, wire)) = r.key()? {
        match field {
            tag::KEY => key = r.string(wire, name)?,
            tag::VALUE => value = r.string(wire, name)?,
            _ => r.skip(field, wire, depth)?,
        }
    }
    Ok((key, value))
}

fn raw_header(bytes: &[u8], depth: u32) -> Result<RawHeader<'_>, WireError> {
    let mut header = RawHeader::default();
    let mut r = Reader { buf: bytes };
    while let Some((field, wire)) = r.key()? {
        match field {
            tag::KEY => header.key = r.string(wire, "header_map.key")?,
            tag::VALUE => header.value = r.string(wire, "header_map.value")?,
            tag::RAW_VALUE => header.raw_value = r.bytes(wire, "header_map.raw_value")?,
            _ => r.skip(field, wire, depth)?,
        }
    }
    Ok(header)
}

/// Wire types (the low 3 bits of a field key).
mod wire_type {
    pub const VARINT: u8 = 0;
    pub const FIXED64: u8 = 1;
    pub const LEN: u8 = 2;
    pub const START_GROUP: u8 = 3;
    pub const END_GROUP: u8 = 4;
    pub const FIXED32: u8 = 5;
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().enumerate().take(10) {
            // The tenth byte may only carry bit 63.
            if i == 9 && byte > 1 {
                return Err(WireError::Varint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.buf.len() >= 10 {
            WireError::Varint
        } else {
            WireError::Truncated
        })
    }

    /// The next field's number and wire type; `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u32, u8)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| WireError::Key)?;
        let wire = (key & 7) as u8;
        if field == 0 || key > u64::from(u32::MAX) || wire > wire_type::FIXED32 {
            return Err(WireError::Key);
        }
        Ok(Some((field, wire)))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        if len > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(taken)
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self, wire: u8, name: &'static str) -> Result<&'a [u8], WireError> {
        if wire != wire_type::LEN {
            return Err(WireError::WireType(name));
        }
        let len = self.varint()?;
        self.take(len)
    }

    fn string(&mut self, wire: u8, name: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(wire, name)?).map_err(|_| WireError::NotUtf8(name))
    }

    /// An embedded message's bytes, at nesting budget `depth` (prost refuses to enter a
    /// message with none left).
    fn message(&mut self, wire: u8, name: &'static str, depth: u32) -> Result<&'a [u8], WireError> {
        let body = self.bytes(wire, name)?;
        if depth == 0 {
            return Err(WireError::TooDeep);
        }
        Ok(body)
    }

    /// Skips a field the engine does not read, as prost's `skip_field` does.
    fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Result<(), WireError> {
        if depth == 0 {
            return Err(WireError::TooDeep);
        }
        match wire {
            wire_type::VARINT => self.varint().map(drop),
            wire_type::FIXED64 => self.take(8).map(drop),
            wire_type::FIXED32 => self.take(4).map(drop),
            wire_type::LEN => {
                let len = self.varint()?;
                self.take(len).map(drop)
            }
            wire_type::START_GROUP => loop {
                let (inner, inner_wire) = self.key()?.ok_or(WireError::Truncated)?;
                if inner_wire == wire_type::END_GROUP {
                    return if inner == field {
                        Ok(())
                    } else {
                        Err(WireError::Group)
                    };
                }
                self.skip(inner, inner_wire, depth - 1)?;
            },
            _ => Err(WireError::Group),
        }
    }
}

#[cfg(test)]
mod tests;
