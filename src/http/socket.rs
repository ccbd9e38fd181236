//! A client's TCP socket whose reads stop at a total deadline, not only a
//! per-read timeout. A per-read timeout alone lets a client that sends one
//! byte just before each timeout hold a connection forever; and TLS reads
//! loop inside rustls until a whole record has arrived, out of reach of any
//! check the connection code makes between reads. So the deadline lives
//! here, under rustls: a TLS handshake, a request head (counted from its
//! first byte) and a request body each have one.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::time::{Duration, Instant};

pub struct Socket {
    tcp: TcpStream,
    /// The per-read timeout asked for (idle, body), restored after a
    /// deadline shortened it.
    read_timeout: Cell<Option<Duration>>,
    deadline: Cell<Option<Instant>>,
    /// A deadline that starts with the next byte received (a request head).
    on_first_byte: Cell<Option<Duration>>,
    /// Whether the socket's timeout is currently shorter than `read_timeout`.
    shortened: Cell<bool>,
    /// The same for writes: a response must be taken by this time.
    write_timeout: Cell<Option<Duration>>,
    write_deadline: Cell<Option<Instant>>,
    write_shortened: Cell<bool>,
}

impl Socket {
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            read_timeout: Cell::new(None),
            deadline: Cell::new(None),
            on_first_byte: Cell::new(None),
            shortened: Cell::new(false),
            write_timeout: Cell::new(None),
            write_deadline: Cell::new(None),
            write_shortened: Cell::new(false),
        }
    }

    /// The longest wait for any one write (never past the write deadline).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(timeout);
        self.write_shortened.set(false);
        self.tcp.set_write_timeout(timeout)
    }

    /// Writes fail with `TimedOut` from `deadline` on: a client that takes
    /// a response slowly cannot hold it (and the memory behind it) for
    /// longer than the request was allowed.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) {
        self.write_deadline.set(deadline);
        if self.write_shortened.replace(false) {
            let _ = self.tcp.set_write_timeout(self.write_timeout.get());
        }
    }

    fn before_write(&self) -> io::Result<()> {
        let Some(deadline) = self.write_deadline.get() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline for this response passed",
            ));
        }
        if self.write_timeout.get().is_none_or(|t| left < t) {
            self.write_shortened.set(true);
            self.tcp.set_write_timeout(Some(left))?;
        }
        Ok(())
    }

    /// The longest wait for any one read (never past the deadline).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // Unchanged (the usual case between keep-alive requests): no system call.
        if self.read_timeout.replace(timeout) == timeout && !self.shortened.get() {
            return Ok(());
        }
        self.shortened.set(false);
        self.tcp.set_read_timeout(timeout)
    }

    /// Reads fail with `TimedOut` from `deadline` on (`None`: no deadline).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.on_first_byte.set(None);
        self.deadline.set(deadline);
        if self.shortened.replace(false) {
            let _ = self.tcp.set_read_timeout(self.read_timeout.get());
        }
    }

    /// A deadline `within` after the next byte arrives; none until then.
    pub fn set_deadline_from_first_byte(&self, within: Duration) {
        self.set_deadline(None);
        self.on_first_byte.set(Some(within));
    }

    /// Fails once the deadline has passed; else makes sure the next read
    /// does not wait past it.
    fn before_read(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline.get() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline for this request passed",
            ));
        }
        if self.read_timeout.get().is_none_or(|t| left < t) {
            self.shortened.set(true);
            self.tcp.set_read_timeout(Some(left))?;
        }
        Ok(())
    }
}

impl Read for Socket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.before_read()?;
        let n = (&self.tcp).read(out)?;
        if n > 0
            && let Some(within) = self.on_first_byte.take()
        {
            self.deadline.set(Some(Instant::now() + within));
        }
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.before_write()?;
        (&self.tcp).write(bytes)
    }

    fn write_vectored(&mut self, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.before_write()?;
        (&self.tcp).write_vectored(slices)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&self.tcp).flush()
    }
}

/// Everything else (shutdown, peek, addresses) is the TCP socket's.
impl Deref for Socket {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Socket::new(server), client)
    }

    #[test]
    fn a_trickling_peer_is_cut_at_the_deadline_not_per_read() {
        let (mut socket, mut client) = pair();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.set_deadline_from_first_byte(Duration::from_millis(300));
        let started = Instant::now();
        let mut got = 0;
        let result = loop {
            // One byte at a time, each read answered at once: far within
            // the per-read timeout, so only the deadline can end it.
            client.write_all(b"x").unwrap();
            let mut byte = [0u8; 1];
            match socket.read(&mut byte) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
            assert!(started.elapsed() < Duration::from_secs(3), "never cut");
        };
        assert_eq!(result.kind(), io::ErrorKind::TimedOut);
        assert!(got >= 2, "{got}");
        // Cleared, the per-read timeout alone applies again.
        socket.set_deadline(None);
        client.write_all(b"y").unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(socket.read(&mut byte).unwrap(), 1);
    }

    #[test]
    fn a_peer_that_never_takes_a_response_is_cut_at_the_write_deadline() {
        let (mut socket, _client) = pair();
        socket
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        socket.set_write_deadline(Some(Instant::now() + Duration::from_millis(300)));
        let started = Instant::now();
        let piece = vec![0u8; 64 * 1024];
        let error = loop {
            // The client reads nothing: the socket buffers fill, then wait.
            if let Err(e) = socket.write(&piece) {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never cut");
        };
        assert!(matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        socket.set_write_deadline(None);
        assert!(socket.write_deadline.get().is_none());
        assert!(
            !socket.write_shortened.get(),
            "the write timeout is restored"
        );
    }

    #[test]
    fn a_later_deadline_restores_a_shortened_timeout() {
        let (mut socket, _client) = pair();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        socket.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
        let mut byte = [0u8; 1];
        assert!(socket.read(&mut byte).is_err());
        socket.set_deadline(Some(Instant::now() + Duration::from_secs(3600)));
        assert!(!socket.shortened.get());
        assert_eq!(
            socket.tcp.read_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_silent_peer_waits_no_longer_than_the_deadline() {
        let (mut socket, _client) = pair();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        socket.set_deadline(Some(Instant::now() + Duration::from_millis(200)));
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let error = socket.read(&mut byte).unwrap_err();
        assert!(matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
