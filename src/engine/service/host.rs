//! The engine's side of a [`Service`]: [`Host`] owns the service and the
//! session of every connection (indexed by the connection's slot), and
//! hides the `Session` type behind [`Handler`], so that the shard holds
//! any service as one `Box<dyn Handler>`.

use std::time::Duration;

use super::{Answer, Closed, Context, Message, Opened, Redirect, Reply, Service, Upstream};
use crate::engine::driver::Token;

/// A service and its sessions, as the shard calls them. Every `token` is a
/// client connection of this shard that `open` was called for and `close`
/// not yet.
pub(crate) trait Handler: Send {
    fn open(&mut self, opened: &Opened, cx: &mut Context<'_>);
    fn close(&mut self, closed: &Closed);
    fn reply_reserve(&self, token: Token, frame: &[u8]) -> usize;
    fn call(&mut self, cx: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>);
    fn deliver_reserve(&self, token: Token, message: &Message<'_>) -> usize;
    fn deliver(&mut self, token: Token, message: &Message<'_>, out: &mut Reply<'_>);
    fn heartbeat(&mut self, token: Token, out: &mut Reply<'_>) -> bool;
    fn tick(&mut self) -> Option<Duration>;
    fn answer_reserve(&self, answer: &Answer<'_>) -> usize;
    fn answer(&mut self, answer: &Answer<'_>, reply: &mut Reply<'_>);
    fn redirect(&mut self, reply: &[u8]) -> Option<Redirect>;
    fn upstreams(&mut self, upstreams: &[Upstream<'_>]);
}

/// A service with its connections' sessions.
pub(crate) struct Host<S: Service> {
    service: S,
    /// By slot; `None` where no connection is open.
    sessions: Vec<Option<S::Session>>,
}

impl<S: Service> Host<S> {
    pub(crate) fn new(service: S) -> Host<S> {
        Host {
            service,
            sessions: Vec::new(),
        }
    }

    fn session(&self, token: Token) -> &S::Session {
        self.sessions[slot(token)]
            .as_ref()
            .expect("a session for every open connection")
    }
}

impl<S: Service> Handler for Host<S> {
    fn open(&mut self, opened: &Opened, cx: &mut Context<'_>) {
        let slot = slot(opened.handle.token());
        if self.sessions.len() <= slot {
            self.sessions.resize_with(slot + 1, || None);
        }
        let session = self.service.open(opened, cx);
        self.sessions[slot] = Some(session);
    }

    fn close(&mut self, closed: &Closed) {
        let taken = self
            .sessions
            .get_mut(slot(closed.handle.token()))
            .and_then(Option::take);
        // None: its open panicked, so it never had a session.
        if let Some(session) = taken {
            self.service.close(session, closed);
        }
    }

    fn reply_reserve(&self, token: Token, frame: &[u8]) -> usize {
        self.service.reply_reserve(self.session(token), frame)
    }

    fn call(&mut self, cx: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>) {
        let slot = slot(cx.handle().token());
        let session = self.sessions[slot]
            .as_mut()
            .expect("a session for every open connection");
        self.service.call(session, cx, frame, reply);
    }

    fn deliver_reserve(&self, token: Token, message: &Message<'_>) -> usize {
        self.service.deliver_reserve(self.session(token), message)
    }

    fn deliver(&mut self, token: Token, message: &Message<'_>, out: &mut Reply<'_>) {
        let slot = slot(token);
        let session = self.sessions[slot]
            .as_mut()
            .expect("a session for every open connection");
        self.service.deliver(session, message, out);
    }

    fn heartbeat(&mut self, token: Token, out: &mut Reply<'_>) -> bool {
        let session = self.sessions[slot(token)]
            .as_mut()
            .expect("a session for every open connection");
        self.service.heartbeat(session, out)
    }

    fn tick(&mut self) -> Option<Duration> {
        self.service.tick()
    }

    fn answer_reserve(&self, answer: &Answer<'_>) -> usize {
        self.service.answer_reserve(answer)
    }

    fn answer(&mut self, answer: &Answer<'_>, reply: &mut Reply<'_>) {
        self.service.answer(answer, reply)
    }

    fn redirect(&mut self, reply: &[u8]) -> Option<Redirect> {
        self.service.redirect(reply)
    }

    fn upstreams(&mut self, upstreams: &[Upstream<'_>]) {
        self.service.upstreams(upstreams)
    }
}

/// A client token's slot.
fn slot(token: Token) -> usize {
    token.0 & 0xffff_ffff
}
