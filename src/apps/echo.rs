//! The built-in echo service: every frame comes back as it came.

use crate::engine::service::{Context, Reply, Service};

/// Replies to each frame with the same payload.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Service for Echo {
    type Session = ();

    fn reply_reserve(&self, _: &(), frame: &[u8]) -> usize {
        frame.len()
    }

    fn call(&mut self, _: &mut (), _: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>) {
        // Cannot overflow: exactly the reserve.
        let _ = reply.put(frame);
    }
}
