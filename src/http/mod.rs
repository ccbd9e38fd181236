//! A small, bounded HTTP/1.1 server: the only code that speaks HTTP to clients.
//!
//! Written here rather than taken from tiny_http because every property the hub
//! needs from its listener is one tiny_http lacks: a cap on connections and
//! threads, a header size limit, idle and read deadlines, an accept loop that
//! survives fd exhaustion, and responses flushed as they are written.

mod body;
mod conn;
mod head;
#[cfg(test)]
pub(crate) mod memory;
mod response_head;
mod server;
mod socket;
mod tls;

pub(crate) use body::parse_chunk_size;
pub use conn::{Exchange, Limits, Stream};
pub use head::header_value;
pub use server::{
    Acceptor, ErrorBody, Handler, PlainAcceptor, ServerConfig, ServerHandle, ServerStats, spawn,
};
pub use socket::Socket;
pub use tls::{TlsAcceptor, server_config};
