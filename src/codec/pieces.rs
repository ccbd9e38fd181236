//! A list or a run of watch events as it is sent: the cached objects
//! themselves, shared with the index and never copied, and the few bytes of
//! framing an encoding puts around them. The connection writes the pieces
//! with vectored writes, so a 220 KB pod list is never gathered into one
//! buffer per request (one copy less, and no large allocation the allocator
//! keeps once the request is gone).

use std::ops::Range;

/// Objects and the framing between them, in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces<T> {
    items: Vec<T>,
    framing: Vec<u8>,
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `framing[range]`.
    Framing(Range<usize>),
    /// `items[index][range]`.
    Item(usize, Range<usize>),
}

impl<T: AsRef<[u8]>> Pieces<T> {
    pub(super) fn new(items: Vec<T>) -> Self {
        Pieces {
            items,
            framing: Vec::new(),
            parts: Vec::new(),
            len: 0,
        }
    }

    /// Bytes of framing only (an event or two made on the spot).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let mut pieces = Pieces::new(Vec::new());
        pieces.frame(&bytes);
        pieces
    }

    pub(super) fn items(&self) -> &[T] {
        &self.items
    }

    /// Appends framing bytes (joined to the framing just before, if any).
    pub(super) fn frame(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.framing.len();
        self.framing.extend_from_slice(bytes);
        let end = self.framing.len();
        self.len += bytes.len();
        match self.parts.last_mut() {
            Some(Part::Framing(last)) if last.end == start => last.end = end,
            _ => self.parts.push(Part::Framing(start..end)),
        }
    }

    /// Appends part of an item, as it is held. `range` lies within the item
    /// (the codec took it from the item's own bytes).
    pub(super) fn item(&mut self, index: usize, range: Range<usize>) {
        self.len += range.len();
        self.parts.push(Part::Item(index, range));
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The pieces in order, as slices to write.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(|part| match part {
            Part::Framing(range) => &self.framing[range.clone()],
            Part::Item(index, range) => &self.items[*index].as_ref()[range.clone()],
        })
    }

    /// Copies the bytes from `cursor` (a part and an offset in it, from
    /// `(0, 0)`) into `out`, moving the cursor; 0 once all were read. For a
    /// reader that hands the pieces on in buffers it is given.
    pub fn read_at(&self, cursor: &mut (usize, usize), out: &mut [u8]) -> usize {
        let mut written = 0;
        while written < out.len() {
            let Some(part) = self.parts.get(cursor.0) else {
                break;
            };
            let slice = match part {
                Part::Framing(range) => &self.framing[range.clone()],
                Part::Item(index, range) => &self.items[*index].as_ref()[range.clone()],
            };
            let rest = &slice[cursor.1.min(slice.len())..];
            let n = rest.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&rest[..n]);
            written += n;
            if n == rest.len() {
                *cursor = (cursor.0 + 1, 0);
            } else {
                cursor.1 += n;
            }
        }
        written
    }

    /// Every piece joined (tests, and the rare answer that needs one buffer).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for slice in self.slices() {
            out.extend_from_slice(slice);
        }
        out
    }
}

/// Where `part` lies within `whole` (`part` is a subslice of it).
pub(super) fn range_within(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    debug_assert!(start + part.len() <= whole.len(), "not a subslice");
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_items_come_out_in_order_with_adjacent_framing_joined() {
        let mut pieces = Pieces::new(vec![b"abc".to_vec(), b"xyz".to_vec()]);
        pieces.frame(b"[");
        pieces.item(0, 0..3);
        pieces.frame(b",");
        pieces.frame(b" ");
        pieces.item(1, 1..3);
        pieces.frame(b"");
        pieces.frame(b"]");
        let slices: Vec<&[u8]> = pieces.slices().collect();
        assert_eq!(slices, [&b"["[..], b"abc", b", ", b"yz", b"]"]);
        assert_eq!(pieces.len(), 9);
        assert_eq!(pieces.to_vec(), b"[abc, yz]");
    }

    #[test]
    fn read_in_buffers_of_any_size_gives_every_byte_once() {
        let mut pieces = Pieces::new(vec![b"abc".to_vec(), b"xyz".to_vec()]);
        pieces.frame(b"[");
        pieces.item(0, 0..3);
        pieces.frame(b",");
        pieces.item(1, 0..3);
        pieces.frame(b"]");
        for size in [1, 2, 3, 7, 64] {
            let mut cursor = (0, 0);
            let mut out = Vec::new();
            let mut buffer = vec![0; size];
            loop {
                let n = pieces.read_at(&mut cursor, &mut buffer);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buffer[..n]);
            }
            assert_eq!(out, pieces.to_vec(), "buffers of {size}");
        }
    }

    #[test]
    fn a_subslice_is_found_where_it_lies() {
        let whole = b"0123456789";
        assert_eq!(range_within(whole, &whole[3..7]), 3..7);
        assert_eq!(range_within(whole, &whole[10..]), 10..10);
    }
}
