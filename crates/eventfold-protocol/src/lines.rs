//! NDJSON as it arrives: a body read chunk by chunk, cut into lines.
//!
//! A line can span many chunks (a large append line sent slowly, a large event in a
//! subscription). Searching the whole buffer for a line end on every chunk makes such a line
//! cost its length times its number of chunks (a 16 MB line in 4 KiB chunks was 5.4 s of a
//! server's CPU); [`Lines`] remembers how far it has searched, so every byte is searched once,
//! and cuts lines off without moving the rest of the buffer.

use bytes::{Bytes, BytesMut};

/// A byte stream cut into lines ending in `\n`, fed chunk by chunk.
#[derive(Debug, Default)]
pub struct Lines {
    buf: BytesMut,
    /// The first `searched` bytes of `buf` hold no `\n`.
    searched: usize,
}

impl Lines {
    /// No bytes yet.
    pub fn new() -> Self {
        Lines::default()
    }

    /// Adds the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line without its `\n`, or `None` until a line end arrives. Bytes it
    /// searched and found no line end in are not searched again by the next call.
    pub fn next_line(&mut self) -> Option<Bytes> {
        let Some(at) = memchr::memchr(b'\n', &self.buf[self.searched..]) else {
            self.searched = self.buf.len();
            return None;
        };
        let end = self.searched + at;
        self.searched = 0;
        let mut line = self.buf.split_to(end + 1);
        line.truncate(end);
        Some(line.freeze())
    }

    /// Bytes received and not yet returned as a line: the start of a line whose end has not
    /// come (once [`Lines::next_line`] returned `None`).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Whether the pending bytes are only whitespace (or none).
    pub fn pending_is_blank(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }

    /// The pending bytes as a last line (the stream ended without a final `\n`); empties the
    /// buffer.
    pub fn take_rest(&mut self) -> Bytes {
        self.searched = 0;
        self.buf.split().freeze()
    }

    /// Drops the pending bytes.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.searched = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(l: &mut Lines) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| l.next_line().map(|b| b.to_vec())).collect()
    }

    #[test]
    fn lines_are_cut_at_each_line_end_and_the_rest_waits() {
        let mut l = Lines::new();
        l.push(b"one\ntw");
        assert_eq!(drain(&mut l), vec![b"one".to_vec()]);
        assert_eq!(l.pending(), 2);
        l.push(b"o\n\nthr");
        assert_eq!(drain(&mut l), vec![b"two".to_vec(), Vec::new()]);
        assert!(!l.pending_is_blank());
        assert_eq!(&l.take_rest()[..], b"thr");
        assert_eq!(l.pending(), 0);
        assert!(l.pending_is_blank());
    }

    #[test]
    fn a_long_line_in_small_chunks_is_searched_once() {
        // 8 MiB in 64-byte chunks: 131,072 chunks. Searching the whole buffer again on each
        // would look at ~550 GB; searching each byte once, at 8 MiB, is immediate.
        let mut l = Lines::new();
        let chunk = [b'a'; 64];
        for _ in 0..(8 << 20) / chunk.len() {
            l.push(&chunk);
            assert!(l.next_line().is_none());
            assert_eq!(l.searched, l.pending(), "every byte received was searched");
        }
        l.push(b"\nnext");
        assert_eq!(l.next_line().map(|b| b.len()), Some(8 << 20));
        assert_eq!(l.searched, 0);
        assert_eq!(l.pending(), 4);
    }

    #[test]
    fn clear_forgets_what_was_searched() {
        let mut l = Lines::new();
        l.push(b"abc");
        assert!(l.next_line().is_none());
        l.clear();
        l.push(b"x\n");
        assert_eq!(drain(&mut l), vec![b"x".to_vec()]);
    }

    proptest! {
        /// However the stream is cut into chunks, and however lines are taken between them,
        /// the lines are those of splitting the whole at each `\n`, and the rest is what
        /// follows the last one.
        #[test]
        fn any_chunking_gives_the_lines_of_the_whole(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..20),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut l = Lines::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                l.push(&data[at..c]);
                at = c;
                got.extend(drain(&mut l));
            }
            let mut want: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let rest = want.pop().unwrap_or_default();
            prop_assert_eq!(got, want);
            prop_assert_eq!(l.take_rest().to_vec(), rest);
        }
    }
}
