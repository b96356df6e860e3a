//! Non-blocking writes of queued buffers, vectored, resuming mid-buffer after a short write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::net::TcpStream;

/// Buffers are written in groups of up to this many per system call.
const MAX_SLICES: usize = 32;

#[derive(Default)]
pub struct Writer {
    pending: VecDeque<Bytes>,
    /// Bytes of the front buffer already written.
    offset: usize,
}

impl Writer {
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending.push_back(bytes);
        }
    }

    pub fn queue(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes until the socket would block or nothing is left. Returns bytes written.
    pub fn write_to(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let mut written = 0;
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, buf) in self.pending.iter().take(MAX_SLICES).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &buf[self.offset..] } else { buf });
                count += 1;
            }
            match stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 4 {
            self.pending = VecDeque::new();
        }
        Ok(written)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let front = self.pending.front().expect("wrote more than was queued");
            let left = front.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.pending.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_resumes_mid_buffer() {
        let mut writer = Writer::default();
        writer.push(Bytes::from_static(b"abc"));
        writer.push(Bytes::from_static(b"defg"));
        writer.advance(4);
        assert_eq!(writer.offset, 1);
        assert_eq!(writer.pending.len(), 1);
        writer.advance(3);
        assert!(writer.is_empty());
        assert_eq!(writer.offset, 0);
    }
}
