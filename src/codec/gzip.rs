//! Gzip bodies (RFC 1952). kube-apiserver compresses a list larger than
//! 128 KiB for a client that accepts gzip, and every client-go program
//! does: a node with a hundred pods gets its pod list compressed. The cache
//! and the response filters read such bodies decompressed; the client still
//! gets the bytes the apiserver sent unless a filter rewrote them. The
//! DEFLATE stream is miniz_oxide's (a tested inflater beats writing one);
//! the gzip framing and its CRC-32 check are ours.

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use super::CodecError;

/// The longest gzip header read (its optional name, comment and extra field).
const MAX_HEADER: usize = 64 * 1024;
/// Output produced per inflate call.
const OUT_PIECE: usize = 32 * 1024;

fn invalid(what: &str) -> CodecError {
    CodecError(format!("invalid gzip body: {what}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Body,
    Trailer,
    Done,
}

/// A gzip body decompressed piece by piece as it arrives.
pub struct Gunzip {
    stage: Stage,
    /// Header or trailer bytes not yet complete.
    pending: Vec<u8>,
    inflater: Box<InflateState>,
    crc: Crc32,
    produced: usize,
    limit: usize,
    /// Where each inflate call writes (allocated once).
    scratch: Vec<u8>,
}

impl Gunzip {
    /// A decoder refusing to produce more than `limit` bytes in all (a
    /// small body can decompress to a great deal).
    pub fn new(limit: usize) -> Gunzip {
        Gunzip {
            stage: Stage::Header,
            pending: Vec::new(),
            inflater: InflateState::new_boxed(DataFormat::Raw),
            crc: Crc32::default(),
            produced: 0,
            limit,
            scratch: Vec::new(),
        }
    }

    /// Takes the next bytes of the body; returns what they decompress to.
    pub fn push(&mut self, mut input: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        while !input.is_empty() {
            match self.stage {
                Stage::Header => {
                    self.pending.extend_from_slice(input);
                    input = &[];
                    if let Some(length) = header_length(&self.pending)? {
                        let rest = self.pending.split_off(length);
                        self.pending.clear();
                        self.stage = Stage::Body;
                        let more = self.push(&rest)?;
                        out.extend(more);
                    } else if self.pending.len() > MAX_HEADER {
                        return Err(invalid("header too long"));
                    }
                }
                Stage::Body => loop {
                    self.scratch.resize(OUT_PIECE, 0);
                    let result =
                        inflate(&mut self.inflater, input, &mut self.scratch, MZFlush::None);
                    input = &input[result.bytes_consumed..];
                    let written = &self.scratch[..result.bytes_written];
                    self.produced = self.produced.saturating_add(written.len());
                    if self.produced > self.limit {
                        return Err(invalid(&format!(
                            "decompresses to more than {} bytes",
                            self.limit
                        )));
                    }
                    self.crc.update(written);
                    out.extend_from_slice(written);
                    match result.status {
                        Ok(MZStatus::StreamEnd) => {
                            self.stage = Stage::Trailer;
                            break;
                        }
                        Ok(_) | Err(MZError::Buf) => {}
                        Err(e) => return Err(invalid(&format!("deflate stream: {e:?}"))),
                    }
                    // A full piece may leave more output inside the inflater.
                    let full = result.bytes_written == OUT_PIECE;
                    if input.is_empty() && !full {
                        break;
                    }
                    if result.bytes_consumed == 0 && result.bytes_written == 0 {
                        return Err(invalid("deflate stream makes no progress"));
                    }
                },
                Stage::Trailer => {
                    let take = (8 - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.pending.len() == 8 {
                        let crc =
                            u32::from_le_bytes(self.pending[..4].try_into().unwrap_or_default());
                        let size =
                            u32::from_le_bytes(self.pending[4..].try_into().unwrap_or_default());
                        if crc != self.crc.value() {
                            return Err(invalid("CRC-32 does not match"));
                        }
                        if size != self.produced as u32 {
                            return Err(invalid("length does not match"));
                        }
                        self.stage = Stage::Done;
                    }
                }
                // What follows the member (padding, another member) is
                // not read: kube-apiserver writes one member.
                Stage::Done => input = &[],
            }
        }
        Ok(out)
    }

    /// At the end of the body: whether the whole stream, trailer checked, came.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.stage {
            Stage::Done => Ok(()),
            _ => Err(invalid("cut short")),
        }
    }
}

/// The length of a complete gzip header at the start of `bytes`, `None` if
/// more bytes are needed.
fn header_length(bytes: &[u8]) -> Result<Option<usize>, CodecError> {
    if bytes.len() < 10 {
        if bytes.len() >= 2 && bytes[..2] != [0x1f, 0x8b] {
            return Err(invalid("not gzip"));
        }
        return Ok(None);
    }
    if bytes[..2] != [0x1f, 0x8b] {
        return Err(invalid("not gzip"));
    }
    if bytes[2] != 8 {
        return Err(invalid("not DEFLATE"));
    }
    let flags = bytes[3];
    let mut at = 10;
    if flags & 0x04 != 0 {
        let Some(length) = bytes.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([length[0], length[1]]));
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            match bytes
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(end) => at += end + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    Ok((bytes.len() >= at).then_some(at))
}

/// CRC-32 (IEEE 802.3, reflected), as gzip's trailer carries it.
#[derive(Default)]
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn update(&mut self, bytes: &[u8]) {
        let mut c = !self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = !c;
    }

    fn value(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` as a gzip member, as Go's compress/gzip writes one (no name),
    /// or with a name and a comment.
    pub fn gzip(data: &[u8], with_name: bool) -> Vec<u8> {
        let mut out = vec![
            0x1f,
            0x8b,
            8,
            if with_name { 0x18 } else { 0 },
            0,
            0,
            0,
            0,
            0,
            0xff,
        ];
        if with_name {
            out.extend_from_slice(b"list.json\0a comment\0");
        }
        out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
        let mut crc = Crc32::default();
        crc.update(data);
        out.extend_from_slice(&crc.value().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn body() -> Vec<u8> {
        (0..20_000)
            .flat_map(|i| format!("{{\"item\":{i},\"name\":\"configmap-{i}\"}},").into_bytes())
            .collect()
    }

    #[test]
    fn a_body_split_anywhere_comes_out_whole() {
        let data = body();
        for with_name in [false, true] {
            let compressed = gzip(&data, with_name);
            for piece in [1, 7, 10, 11, 4096, compressed.len()] {
                let mut gunzip = Gunzip::new(usize::MAX);
                let mut out = Vec::new();
                for chunk in compressed.chunks(piece) {
                    out.extend(gunzip.push(chunk).unwrap());
                }
                assert!(gunzip.finish().is_ok(), "piece {piece}");
                assert_eq!(out, data, "piece {piece}");
            }
        }
    }

    #[test]
    fn damage_and_bombs_are_errors_never_panics() {
        let data = body();
        let compressed = gzip(&data, false);
        let mut bad_crc = compressed.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 1;
        let mut cut = Gunzip::new(usize::MAX);
        cut.push(&compressed[..compressed.len() / 2]).unwrap();
        assert!(cut.finish().is_err());
        let rows: &[(&[u8], usize)] = &[
            (&bad_crc, usize::MAX),
            (b"not gzip at all", usize::MAX),
            (&[0x1f, 0x8b, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3], usize::MAX),
            (&compressed, 1000),
        ];
        for (input, limit) in rows {
            let mut gunzip = Gunzip::new(*limit);
            assert!(gunzip.push(input).is_err() || gunzip.finish().is_err());
        }
        crate::fuzz::run(
            0x5eed_0011,
            &[&compressed[..], &gzip(b"{}", true)],
            2_000,
            |input| {
                let mut gunzip = Gunzip::new(64 << 10);
                let _ = gunzip.push(input);
                let _ = gunzip.finish();
            },
        );
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        let mut crc = Crc32::default();
        crc.update(b"123456789");
        assert_eq!(crc.value(), 0xcbf4_3926);
    }
}
