//! rustls driven sans-IO between a connection's receive buffers and the protocol core:
//! ciphertext in, plaintext out; plaintext in, ciphertext queued for the socket. The same
//! stream serves viewers on HTTPS listeners (server side) and `rtsps://` cameras (client side).

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

pub struct TlsStream {
    conn: Connection,
}

impl TlsStream {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsStream, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The shard's send queue bounds what waits for a viewer; rustls need not bound it again.
        conn.set_buffer_limit(None);
        Ok(TlsStream { conn: Connection::Server(conn) })
    }

    /// The client side, towards a camera: the ClientHello is waiting in `take_outgoing` at
    /// once, and what is sent before the handshake ends goes out with its end.
    pub fn client(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<TlsStream, rustls::Error> {
        let mut conn = ClientConnection::new(config, name)?;
        conn.set_buffer_limit(None);
        Ok(TlsStream { conn: Connection::Client(conn) })
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
                // `want` is what rustls holds for reading (bounded by its buffer limit): no overflow.
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

    /// Encrypts `header` and `payload` as one run of plaintext: a WebSocket frame's header goes
    /// in the same record as (the start of) its payload rather than in a 2–10 byte record of
    /// its own, with neither copied.
    pub fn send_framed(&mut self, header: &[u8], payload: &[u8]) {
        let parts = [std::io::IoSlice::new(header), std::io::IoSlice::new(payload)];
        // With the buffer limit lifted rustls takes all of it; were it not to, the rest follows.
        let taken = self.conn.writer().write_vectored(&parts).unwrap_or(0);
        let (h, p) = (taken.min(header.len()), taken.saturating_sub(header.len()).min(payload.len()));
        self.send(&header[h..]);
        self.send(&payload[p..]);
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

/// A greeting connection's bytes go through the handshake: the plaintext is its request head.
impl crate::proto::greeting::Decrypt for TlsStream {
    fn decrypt(&mut self, cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), crate::proto::greeting::HandshakeFailed> {
        self.receive(cipher, plain).map(|_| ()).map_err(|_| crate::proto::greeting::HandshakeFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// A server stream and a client that completed the handshake with it, in memory.
    fn pair() -> (TlsStream, ClientConnection) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = TlsStream::new(Arc::new(server)).unwrap();
        let mut client = ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
        let mut plain = Vec::new();
        for _ in 0..10 {
            let mut out = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut out).unwrap();
            }
            server.receive(&out, &mut plain).unwrap();
            if let Some(back) = server.take_outgoing() {
                client.read_tls(&mut &back[..]).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        assert!(!client.is_handshaking());
        (server, client)
    }

    fn decrypt(client: &mut ClientConnection, cipher: &[u8]) -> Vec<u8> {
        let mut cipher = cipher;
        let mut plain = Vec::new();
        while !cipher.is_empty() {
            client.read_tls(&mut cipher).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut plain);
        }
        plain
    }

    #[test]
    fn a_frame_header_shares_its_payloads_record() {
        let (mut server, mut client) = pair();
        let (header, payload) = ([0x82u8, 0x7e, 0x05, 0xdc], vec![0x24u8; 1500]);
        server.send(&header);
        server.send(&payload);
        let separate = server.take_outgoing().unwrap();
        server.send_framed(&header, &payload);
        let framed = server.take_outgoing().unwrap();
        let expected: Vec<u8> = header.iter().chain(&payload).copied().collect();
        assert_eq!(decrypt(&mut client, &separate), expected);
        assert_eq!(decrypt(&mut client, &framed), expected);
        // One record instead of two: one record header, tag and content type fewer.
        assert!(framed.len() < separate.len(), "{} vs {}", framed.len(), separate.len());
    }
}
