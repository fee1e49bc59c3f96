//! The relay's own authentication towards a camera (DESIGN.md §2): on a 401 the relay answers
//! the challenge (Digest, with or without qop; Basic) over the *rewritten* URI and retries.
//! Camera credentials never leave the relay.

use super::rtsp::Message;

/// Credentials taken from a route's upstream URL (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub pass: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &"***")
            .finish()
    }
}

/// What to do after a camera's 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    /// A new challenge (or a stale nonce): resend the request with fresh `Authorization`.
    Retry,
    /// These credentials were already refused for this challenge (or no usable challenge): give up.
    GiveUp,
}

/// Per-session client authentication state towards one camera.
#[derive(Debug, Clone)]
pub struct UpstreamAuth {
    _todo: (),
}

impl UpstreamAuth {
    /// `cnonce_seed` is randomness from the shell (proto reads no entropy source itself).
    pub fn new(creds: Credentials, cnonce_seed: u64) -> Self {
        let _ = (creds, cnonce_seed);
        todo!("implemented by the rewrite/auth work")
    }

    /// Digests a camera's 401 response. `was_authorized`: the refused request already carried
    /// our `Authorization`.
    pub fn on_unauthorized(&mut self, resp: &Message, was_authorized: bool) -> AuthVerdict {
        let _ = (resp, was_authorized);
        todo!()
    }

    /// Adds `Authorization` to a request about to go to the camera, if a challenge is known.
    /// Returns whether it did.
    pub fn authorize(&mut self, req: &mut Message) -> bool {
        let _ = req;
        todo!()
    }
}
