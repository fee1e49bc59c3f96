//! rustls driven sans-IO between a connection's receive buffers and the protocol core:
//! ciphertext in, plaintext out; plaintext in, ciphertext queued for the socket.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

pub struct TlsStream {
    conn: ServerConnection,
}

impl TlsStream {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsStream, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The shard's send queue bounds what waits for a viewer; rustls need not bound it again.
        conn.set_buffer_limit(None);
        Ok(TlsStream { conn })
    }

    /// Feeds received ciphertext and appends whatever plaintext it yields to `plain`.
    /// Returns whether the peer sent close_notify.
    pub fn receive(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>) -> Result<bool, rustls::Error> {
        while !cipher.is_empty() {
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            }
            let state = self.conn.process_new_packets()?;
            let mut want = state.plaintext_bytes_to_read();
            while want > 0 {
                let start = plain.len();
                plain.resize(start + want, 0);
                match self.conn.reader().read(&mut plain[start..]) {
                    Ok(n) => {
                        plain.truncate(start + n);
                        want -= n.min(want);
                        if n == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        plain.truncate(start);
                        break;
                    }
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                }
            }
            if state.peer_has_closed() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Encrypts `plain` for the peer. Before the handshake completes rustls holds it back and
    /// releases it with the handshake's end (see [`TlsStream::take_outgoing`]).
    pub fn send(&mut self, plain: &[u8]) {
        // Writing to rustls' in-memory buffer cannot fail with the buffer limit lifted.
        let _ = self.conn.writer().write_all(plain);
    }

    /// Ciphertext waiting to go out: handshake messages, records, alerts.
    pub fn take_outgoing(&mut self) -> Option<Vec<u8>> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}
