//! An in-memory client connection for unit tests, so the head reader, the
//! body decoder and the exchange can be checked on byte slices without
//! sockets (the socket a `Stream` must name, for its timeouts only, is one
//! idle loopback connection shared by all).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;

use super::conn::{Conn, Stream};
use super::socket::Socket;

/// What a client sent (handed out at most `piece` bytes per read, to cross
/// buffer refills) and what the hub wrote back.
pub(crate) struct Memory {
    input: Vec<u8>,
    at: usize,
    piece: usize,
    pub(crate) output: Vec<u8>,
    /// How many writes the output took.
    pub(crate) writes: usize,
    socket: Socket,
}

impl Memory {
    pub(crate) fn new(input: &[u8]) -> Memory {
        Memory::in_pieces(input, usize::MAX)
    }

    pub(crate) fn in_pieces(input: &[u8], piece: usize) -> Memory {
        Memory {
            input: input.to_vec(),
            at: 0,
            piece,
            output: Vec::new(),
            writes: 0,
            socket: idle_socket(),
        }
    }
}

impl Read for Memory {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.piece).min(self.input.len() - self.at);
        out[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Memory {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(bytes);
        self.writes += 1;
        Ok(bytes.len())
    }

    /// Takes every slice at once, as a socket with room does.
    fn write_vectored(&mut self, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for slice in slices {
            self.output.extend_from_slice(slice);
            n += slice.len();
        }
        self.writes += 1;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Memory {
    fn socket(&self) -> &Socket {
        &self.socket
    }
}

/// A handle on the one idle loopback connection every `Memory` names.
fn idle_socket() -> Socket {
    static IDLE: OnceLock<(TcpStream, TcpStream)> = OnceLock::new();
    let (ours, _peer) = IDLE.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (ours, peer)
    });
    Socket::new(ours.try_clone().expect("a handle on the idle socket"))
}

/// Everything still unread on a connection: buffered bytes, then the stream's.
pub(crate) fn unread(conn: &mut Conn<Memory>) -> Vec<u8> {
    let mut rest = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        match conn.read_some(&mut piece) {
            Ok(0) => return rest,
            Ok(n) => rest.extend_from_slice(&piece[..n]),
            Err(e) => panic!("reading an in-memory connection: {e}"),
        }
    }
}
