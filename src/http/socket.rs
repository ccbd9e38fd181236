//! A client's TCP socket whose reads stop at a total deadline, not only a
//! per-read timeout. A per-read timeout alone lets a client that sends one
//! byte just before each timeout hold a connection forever; and TLS reads
//! loop inside rustls until a whole record has arrived, out of reach of any
//! check the connection code makes between reads. So the deadline lives
//! here, under rustls: a TLS handshake, a request head (counted from its
//! first byte) and a request body each have one. The upstream client keeps
//! its exchanges' deadlines the same way.
//!
//! Timeouts and deadlines reach the socket just before a read or write,
//! and only when the timeout in place is not already close to what is
//! wanted (within `SLACK`): requests on a keep-alive connection then cost
//! no `setsockopt` each.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// How far the timeout in place may be from the time left before a
/// deadline (a 64th of it, at most this) and still be kept: a read or write
/// ends at most this much before or after its deadline.
const SLACK: Duration = Duration::from_millis(100);

pub struct Socket {
    tcp: TcpStream,
    /// The per-read timeout asked for (idle, body), restored after a
    /// deadline shortened it.
    read_timeout: Cell<Option<Duration>>,
    deadline: Cell<Option<Instant>>,
    /// A deadline that starts with the next byte received (a request head).
    on_first_byte: Cell<Option<Duration>>,
    /// The read timeout the socket has now.
    applied_read: Cell<Option<Duration>>,
    /// The same for writes: a response must be taken by this time.
    write_timeout: Cell<Option<Duration>>,
    write_deadline: Cell<Option<Instant>>,
    applied_write: Cell<Option<Duration>>,
}

impl Socket {
    pub fn new(tcp: TcpStream) -> Socket {
        Socket {
            tcp,
            read_timeout: Cell::new(None),
            deadline: Cell::new(None),
            on_first_byte: Cell::new(None),
            applied_read: Cell::new(None),
            write_timeout: Cell::new(None),
            write_deadline: Cell::new(None),
            applied_write: Cell::new(None),
        }
    }

    /// The longest wait for any one write (never past the write deadline);
    /// from the next write on.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(timeout);
        Ok(())
    }

    /// Writes fail with `TimedOut` from `deadline` on: a client that takes
    /// a response slowly cannot hold it (and the memory behind it) for
    /// longer than the request was allowed.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) {
        self.write_deadline.set(deadline);
    }

    fn before_write(&self) -> io::Result<()> {
        let wanted = wanted(self.write_timeout.get(), self.write_deadline.get())
            .ok_or_else(|| deadline_passed("deadline for this response passed"))?;
        apply(&self.applied_write, wanted, |t| {
            self.tcp.set_write_timeout(t)
        })
    }

    /// The longest wait for any one read (never past the deadline); from
    /// the next read on.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout);
        Ok(())
    }

    /// Sets the read timeout on the socket at once, for reads of the raw
    /// TCP socket (which pass by the deadline).
    pub fn set_raw_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout);
        self.applied_read.set(timeout);
        self.tcp.set_read_timeout(timeout)
    }

    /// Reads fail with `TimedOut` from `deadline` on (`None`: no deadline).
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.on_first_byte.set(None);
        self.deadline.set(deadline);
    }

    /// A deadline `within` after the next byte arrives; none until then.
    pub fn set_deadline_from_first_byte(&self, within: Duration) {
        self.set_deadline(None);
        self.on_first_byte.set(Some(within));
    }

    /// Fails once the deadline has passed; else makes sure the next read
    /// does not wait past it.
    fn before_read(&self) -> io::Result<()> {
        let wanted = wanted(self.read_timeout.get(), self.deadline.get())
            .ok_or_else(|| deadline_passed("deadline for this request passed"))?;
        apply(&self.applied_read, wanted, |t| self.tcp.set_read_timeout(t))
    }

    /// Whether the peer has closed (`Ok(0)`), sent bytes not read yet
    /// (`Ok(n)`), or neither (`WouldBlock`). Never blocks.
    pub fn peek_now(&self) -> io::Result<usize> {
        self.tcp.set_nonblocking(true)?;
        let mut probe = [0u8; 1];
        let peeked = self.tcp.peek(&mut probe);
        self.tcp.set_nonblocking(false)?;
        peeked
    }
}

/// The timeout one operation may wait: the plain timeout, shortened to what
/// is left before the deadline; `None` once the deadline has passed.
fn wanted(timeout: Option<Duration>, deadline: Option<Instant>) -> Option<Option<Duration>> {
    let Some(deadline) = deadline else {
        return Some(timeout);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    Some(Some(timeout.map_or(left, |t| t.min(left))))
}

/// Sets `wanted` on the socket unless the timeout in place is close enough.
fn apply(
    applied: &Cell<Option<Duration>>,
    wanted: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let close_enough = match (applied.get(), wanted) {
        (Some(now), Some(wanted)) => now.abs_diff(wanted) <= (wanted / 64).min(SLACK),
        (now, wanted) => now == wanted,
    };
    if close_enough {
        return Ok(());
    }
    set(wanted)?;
    applied.set(wanted);
    Ok(())
}

fn deadline_passed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
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
    fn a_timeout_close_to_the_one_in_place_costs_no_system_call() {
        let ms = |ms| Some(Duration::from_millis(ms));
        // in place, wanted, whether the socket is changed
        let cases = [
            (None, None, false),
            (None, ms(100), true),
            (ms(100), None, true),
            (ms(2000), ms(2000), false),
            (ms(65_000), ms(64_990), false),
            (ms(64_990), ms(65_000), false),
            (ms(65_000), ms(64_000), true),
            (ms(1000), ms(1010), false),
            (ms(1000), ms(1020), true),
        ];
        for (in_place, wanted, changed) in cases {
            let applied = Cell::new(in_place);
            let mut called = false;
            apply(&applied, wanted, |_| {
                called = true;
                Ok(())
            })
            .unwrap();
            assert_eq!(called, changed, "{in_place:?} -> {wanted:?}");
            let now = if changed { wanted } else { in_place };
            assert_eq!(applied.get(), now, "{in_place:?} -> {wanted:?}");
        }
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
        socket.before_write().unwrap();
        assert_eq!(
            socket.tcp.write_timeout().unwrap(),
            Some(Duration::from_secs(30)),
            "the write timeout is restored"
        );
    }

    #[test]
    fn a_later_deadline_restores_a_shortened_timeout() {
        let (mut socket, mut client) = pair();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        socket.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
        let mut byte = [0u8; 1];
        assert!(socket.read(&mut byte).is_err());
        socket.set_deadline(Some(Instant::now() + Duration::from_secs(3600)));
        client.write_all(b"x").unwrap();
        assert_eq!(socket.read(&mut byte).unwrap(), 1);
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
