//! Redis Pub/Sub (after Redis 7.0's src/pubsub.c) on the engine's groups:
//! a channel is the group `\x00` + its name, a pattern the group `\x01` +
//! the pattern, so the directory lists the patterns by their prefix alone.
//! SUBSCRIBE and PSUBSCRIBE join groups, the UNSUBSCRIBEs leave them (a
//! connection that closes leaves them all, in the engine); PUBLISH sends
//! one message to the channel's group and every pattern group whose
//! pattern matches the channel (one `publish_to`: one message per shard
//! with members, however many they are), and each receiving connection's
//! [`deliver`] writes it as a `message` or `pmessage` frame in its own
//! protocol (RESP2 arrays, RESP3 push frames).
//!
//! A message carries the channel and the payload: the channel's length
//! (4 bytes, little-endian), the channel, the payload.
//!
//! The (un)subscribe commands answer one frame per channel, however many:
//! the frames that do not fit the reply window go to the connection
//! itself as pushes right behind it ([`Spill`]), so no reply is bounded by
//! the output ring.

use super::glob;
use super::reply::{Out, Sink, TOO_LARGE, Text, bulk_len};
use super::session::Session;
use super::{Kv, SMALL_REPLY};
use crate::engine::service::{Context, JoinError, Message, PushError};

/// The group name prefix of a channel.
pub const CHANNEL: u8 = 0;
/// The group name prefix of a pattern.
pub const PATTERN: u8 = 1;

/// Room a (un)subscribe frame takes besides its name: the header, the
/// longest kind word, the name's header, the count.
const FRAME_OVERHEAD: usize = 64;

/// What a (un)subscribe command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
}

impl Kind {
    fn prefix(self) -> u8 {
        match self {
            Kind::Channel => CHANNEL,
            Kind::Pattern => PATTERN,
        }
    }

    fn subscribe(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
        }
    }

    fn unsubscribe(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
        }
    }
}

/// `prefix` + `name` into `group`.
fn group_name(group: &mut Vec<u8>, prefix: u8, name: &[u8]) {
    group.clear();
    group.push(prefix);
    group.extend_from_slice(name);
}

/// A published message: the channel's length, the channel, the payload.
fn encode(channel: &[u8], payload: &[u8], into: &mut Vec<u8>) {
    into.clear();
    into.extend_from_slice(&(channel.len() as u32).to_le_bytes());
    into.extend_from_slice(channel);
    into.extend_from_slice(payload);
}

/// The channel and the payload of a published message.
fn decode(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Bytes of the `message` (no pattern) or `pmessage` frame.
fn message_len(pattern: Option<&[u8]>, channel: &[u8], payload: &[u8]) -> usize {
    // `*3\r\n` and `$7\r\nmessage\r\n`, or `*4\r\n` and `$8\r\npmessage\r\n`
    // and the pattern.
    let head = pattern.map_or(4 + 13, |pattern| 4 + 14 + bulk_len(pattern));
    head + bulk_len(channel) + bulk_len(payload)
}

/// Writes the `message` frame (for a channel's group) or the `pmessage`
/// frame (for a pattern's).
fn write_message(group: &[u8], channel: &[u8], payload: &[u8], out: &mut dyn Sink) {
    match group.split_first() {
        Some((&PATTERN, pattern)) => {
            out.push(4);
            out.bulk(b"pmessage");
            out.bulk(pattern);
        }
        _ => {
            out.push(3);
            out.bulk(b"message");
        }
    }
    out.bulk(channel);
    out.bulk(payload);
}

/// Whether delivering `message` to `session` is one of its own messages
/// that its PUBLISH reply already carried.
fn already_written(session: &Session, message: &Message<'_>) -> bool {
    session.skip_own > 0 && message.from.is_some() && message.from == session.handle
}

/// [`Service::deliver_reserve`](crate::engine::service::Service::deliver_reserve):
/// the frame's exact size.
pub fn deliver_reserve(session: &Session, message: &Message<'_>) -> usize {
    let Some(group) = message.group else {
        return message.bytes.len();
    };
    match decode(message.bytes) {
        Some(_) if already_written(session, message) => 0,
        Some((channel, payload)) => {
            let pattern = (group.first() == Some(&PATTERN)).then(|| &group[1..]);
            message_len(pattern, channel, payload)
        }
        None => 0,
    }
}

/// [`Service::deliver`](crate::engine::service::Service::deliver): a
/// published message as `message` or `pmessage`, in the connection's
/// protocol (the frame rendered once for all the shard's subscribers of
/// a group, see [`Frames`]); a push to the connection itself (replies
/// past its reply window) as it came.
pub fn deliver(
    frames: &mut Frames,
    session: &mut Session,
    message: &Message<'_>,
    out: &mut Out<'_, '_>,
) {
    let Some(group) = message.group else {
        return out.put(message.bytes);
    };
    if already_written(session, message) {
        session.skip_own -= 1;
        return;
    }
    if let Some(frame) = frames.get(group, message.bytes, session.resp3) {
        out.put(frame);
    }
}

/// The last message frame rendered on this shard: a message goes to every
/// subscriber of its group in turn, and they all get the same bytes (one
/// frame per protocol), so it is rendered once and then copied whole.
/// Found again by the group and message bytes themselves (never by where
/// they lie: a later message may come at the same address).
#[derive(Default)]
pub struct Frames {
    group: Vec<u8>,
    message: Vec<u8>,
    resp3: bool,
    frame: Text,
}

impl Frames {
    /// The frame of `message` to `group` for a RESP2 or RESP3 connection;
    /// `None` if the message is not one PUBLISH made.
    fn get(&mut self, group: &[u8], message: &[u8], resp3: bool) -> Option<&[u8]> {
        let (channel, payload) = decode(message)?;
        let hit = !self.frame.bytes.is_empty()
            && self.resp3 == resp3
            && self.group == group
            && self.message == message;
        if !hit {
            self.frame.resp3 = resp3;
            self.frame.reset(usize::MAX);
            write_message(group, channel, payload, &mut self.frame);
            self.resp3 = resp3;
            self.group.clear();
            self.group.extend_from_slice(group);
            self.message.clear();
            self.message.extend_from_slice(message);
        }
        Some(&self.frame.bytes)
    }
}

/// Frames of one reply written in order: into the reply window while
/// they fit, then (once one did not) into pushes to the connection
/// itself, a ring's worth at most each, which the engine writes right
/// after the reply and before the reply to the next command. Frames are
/// never split, so a pushed chunk the slow-consumer policy drops loses
/// whole frames.
struct Spill<'o, 'r, 'a> {
    out: &'o mut Out<'r, 'a>,
    /// The frame being built.
    frame: Text,
    /// Frames waiting to be pushed.
    chunk: Vec<u8>,
    spilled: bool,
    chunk_max: usize,
}

impl<'o, 'r, 'a> Spill<'o, 'r, 'a> {
    fn new(out: &'o mut Out<'r, 'a>, chunk_max: usize) -> Self {
        let mut frame = Text {
            resp3: out.resp3,
            ..Text::default()
        };
        frame.reset(chunk_max);
        Spill {
            out,
            frame,
            chunk: Vec::new(),
            spilled: false,
            chunk_max,
        }
    }

    /// The next frame, empty.
    fn frame(&mut self) -> &mut Text {
        self.frame.reset(self.chunk_max);
        &mut self.frame
    }

    /// Sends the frame built.
    fn commit(&mut self, cx: &mut Context<'_>) -> Result<(), PushError> {
        if self.frame.too_large {
            return Err(PushError::TooLarge);
        }
        let bytes = &self.frame.bytes;
        if !self.spilled && bytes.len() <= self.out.room() {
            self.out.put(bytes);
            return Ok(());
        }
        self.spilled = true;
        if self.chunk.len() + bytes.len() > self.chunk_max {
            self.flush(cx)?;
        }
        self.chunk.extend_from_slice(&self.frame.bytes);
        Ok(())
    }

    /// Pushes what waits.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), PushError> {
        if !self.chunk.is_empty() {
            cx.push(cx.handle(), &self.chunk)?;
            self.chunk.clear();
        }
        Ok(())
    }
}

impl Kv {
    /// The reserve of a (un)subscribe command's reply: a frame per
    /// argument, or (no argument) a guess for a frame per subscription
    /// (see [`Spill`] for what does not fit it).
    pub(super) fn pubsub_reserve(&self, session: &Session, argv: &[&[u8]]) -> usize {
        let frames = if argv.len() > 1 {
            argv[1..].iter().map(|a| a.len() + FRAME_OVERHEAD).sum()
        } else {
            2 * FRAME_OVERHEAD * session.subscriptions as usize
        };
        (SMALL_REPLY + frames).min(self.reply_max)
    }

    /// The reserve of PUBLISH: its count, and in RESP3 the messages it
    /// sends to this connection itself (see [`Kv::publish`]).
    pub(super) fn publish_reserve(&self, session: &Session, argv: &[&[u8]]) -> usize {
        if !(session.resp3 && session.subscriptions > 0) {
            return SMALL_REPLY;
        }
        let frame = argv.iter().map(|a| a.len() + FRAME_OVERHEAD).sum::<usize>();
        let own = session.subscriptions as usize;
        (SMALL_REPLY + own * frame).min(self.reply_max)
    }

    /// SUBSCRIBE channel ... / PSUBSCRIBE pattern ...: one confirmation
    /// per argument, with the count of subscriptions after it (a join the
    /// bounds refuse answers their error instead).
    pub(super) fn subscribe(
        &mut self,
        kind: Kind,
        session: &mut Session,
        cx: &mut Context<'_>,
        argv: &[&[u8]],
        out: &mut Out<'_, '_>,
    ) {
        let mut spill = Spill::new(out, self.reply_max);
        for name in &argv[1..] {
            let frame = spill.frame();
            if bulk_len(name) + FRAME_OVERHEAD > frame.limit {
                frame.put(TOO_LARGE);
            } else {
                group_name(&mut self.group, kind.prefix(), name);
                match cx.join(&self.group) {
                    Ok(_) => {
                        session.subscriptions = cx.group_count() as u32;
                        frame.push(3);
                        frame.bulk(kind.subscribe());
                        frame.bulk(name);
                        frame.integer(i64::from(session.subscriptions));
                    }
                    Err(JoinError::TooManyGroups) => {
                        frame.error(b"max groups reached (max-groups)")
                    }
                    Err(JoinError::TooManyMemberships) => {
                        frame.error(b"max memberships reached (max-memberships)")
                    }
                }
            }
            if spill.commit(cx).is_err() {
                break;
            }
        }
        let _ = spill.flush(cx);
    }

    /// UNSUBSCRIBE [channel ...] / PUNSUBSCRIBE [pattern ...]: one
    /// confirmation per argument, or with none, per subscription left (in
    /// the order subscribed), or one with a null name if there was none.
    pub(super) fn unsubscribe(
        &mut self,
        kind: Kind,
        session: &mut Session,
        cx: &mut Context<'_>,
        argv: &[&[u8]],
        out: &mut Out<'_, '_>,
    ) {
        let names: Vec<Box<[u8]>> = if argv.len() > 1 {
            argv[1..].iter().map(|&name| name.into()).collect()
        } else {
            cx.groups()
                .filter(|group| group.first() == Some(&kind.prefix()))
                .map(|group| group[1..].into())
                .collect()
        };
        let mut spill = Spill::new(out, self.reply_max);
        if names.is_empty() {
            let frame = spill.frame();
            frame.push(3);
            frame.bulk(kind.unsubscribe());
            frame.null();
            frame.integer(i64::from(session.subscriptions));
            let _ = spill.commit(cx);
        }
        for name in &names {
            let frame = spill.frame();
            if bulk_len(name) + FRAME_OVERHEAD > frame.limit {
                frame.put(TOO_LARGE);
            } else {
                group_name(&mut self.group, kind.prefix(), name);
                cx.leave(&self.group);
                session.subscriptions = cx.group_count() as u32;
                frame.push(3);
                frame.bulk(kind.unsubscribe());
                frame.bulk(name);
                frame.integer(i64::from(session.subscriptions));
            }
            if spill.commit(cx).is_err() {
                break;
            }
        }
        let _ = spill.flush(cx);
    }

    /// PUBLISH channel message: to the channel's subscribers and every
    /// pattern subscriber whose pattern matches it; answers how many
    /// receive it, over all shards. In RESP3 a subscriber may publish, and
    /// Redis writes its own messages before the count: so does this, and
    /// the engine's delivery of them to it is skipped.
    pub(super) fn publish(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        argv: &[&[u8]],
        out: &mut Out<'_, '_>,
    ) {
        let (channel, payload) = (argv[1], argv[2]);
        session.skip_own = 0;
        if message_len(None, channel, payload) > self.reply_max {
            return out.error(b"message too large for the connection buffer");
        }
        self.route(channel, cx);
        encode(channel, payload, &mut self.message);
        let published = match self.ranges.as_slice() {
            // No pattern matches (the usual case): nothing to collect.
            [_] => cx.publish_to(&[self.names.as_slice()], &self.message),
            ranges => {
                let groups: Vec<&[u8]> = ranges.iter().map(|r| &self.names[r.clone()]).collect();
                cx.publish_to(&groups, &self.message)
            }
        };
        let receivers = match published {
            Ok(receivers) => receivers,
            Err(PushError::Full) => {
                return out.error(b"publish refused: mailbox full (mailbox-bytes)");
            }
            Err(_) => return out.error(b"message too large for the connection buffer"),
        };
        if !(session.resp3 && session.subscriptions > 0) {
            // Not a subscriber: none of the messages is its own.
            return out.integer(receivers as i64);
        }
        let mut spill = Spill::new(out, self.reply_max);
        let mut own = 0;
        for range in &self.ranges {
            let group = &self.names[range.clone()];
            if own == u16::MAX || !cx.groups().any(|g| g == group) {
                continue;
            }
            write_message(group, channel, payload, spill.frame());
            if spill.commit(cx).is_err() {
                break;
            }
            own += 1;
        }
        spill.frame().integer(receivers as i64);
        let _ = spill.commit(cx);
        let _ = spill.flush(cx);
        session.skip_own = own;
    }

    /// The groups a message on `channel` goes to, into `names`/`ranges`:
    /// the channel's, then each matching pattern's, in name order.
    fn route(&mut self, channel: &[u8], cx: &Context<'_>) {
        self.names.clear();
        self.ranges.clear();
        self.names.push(CHANNEL);
        self.names.extend_from_slice(channel);
        self.ranges.push(0..self.names.len());
        let (names, ranges) = (&mut self.names, &mut self.ranges);
        cx.directory().scan(&[PATTERN], |group, _| {
            if glob::matches(&group[1..], channel) {
                let start = names.len();
                names.extend_from_slice(group);
                ranges.push(start..names.len());
            }
        });
    }

    /// PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT |
    /// SHARDCHANNELS [pattern] | SHARDNUMSUB [channel ...] | HELP, rendered
    /// ahead from the process-wide directory. Sharded Pub/Sub is not
    /// served: its channels are always none.
    pub(super) fn pubsub(&self, argv: &[&[u8]], out: &mut dyn Sink) {
        let directory = self.pusher.directory();
        let sub = argv[1].to_ascii_lowercase();
        let argc = argv.len();
        match sub.as_slice() {
            b"channels" | b"shardchannels" if argc <= 3 => {
                let mut found = Vec::new();
                if sub == b"channels" {
                    directory.scan(&[CHANNEL], |group, _| {
                        if argv.get(2).is_none_or(|p| glob::matches(p, &group[1..])) {
                            found.push(group[1..].to_vec());
                        }
                    });
                }
                out.array(found.len());
                for channel in &found {
                    out.bulk(channel);
                }
            }
            b"numsub" | b"shardnumsub" => {
                out.array(2 * (argc - 2));
                let mut group = Vec::new();
                for channel in &argv[2..] {
                    group_name(&mut group, CHANNEL, channel);
                    let members = if sub == b"numsub" {
                        directory.members(&group)
                    } else {
                        0
                    };
                    out.bulk(channel);
                    out.integer(members as i64);
                }
            }
            b"numpat" | b"help" if argc != 2 => {
                out.wrong_arity(&format!("pubsub|{}", String::from_utf8_lossy(&sub)));
            }
            b"numpat" => out.integer(self.pubsub_counts().1 as i64),
            b"help" => {
                out.array(HELP.len());
                for line in HELP {
                    out.put(b"+");
                    out.put(line.as_bytes());
                    out.put(b"\r\n");
                }
            }
            b"channels" | b"shardchannels" => {
                let mut text = b"unknown subcommand or wrong number of arguments for '".to_vec();
                text.extend_from_slice(super::reply::c_str(argv[1]));
                text.extend_from_slice(b"'. Try PUBSUB HELP.");
                out.error(&text);
            }
            _ => super::server::unknown_subcommand("pubsub", argv[1], out),
        }
    }

    /// Channels and patterns with a subscriber, over all shards (INFO).
    pub(super) fn pubsub_counts(&self) -> (usize, usize) {
        let (mut channels, mut patterns) = (0, 0);
        self.pusher
            .directory()
            .scan(&[CHANNEL], |_, _| channels += 1);
        self.pusher
            .directory()
            .scan(&[PATTERN], |_, _| patterns += 1);
        (channels, patterns)
    }

    /// RESET: every subscription dropped without a word, RESP2 again.
    pub(super) fn reset(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        out: &mut dyn Sink,
    ) {
        let groups: Vec<Box<[u8]>> = cx.groups().map(Box::from).collect();
        for group in &groups {
            cx.leave(group);
        }
        session.reset();
        out.put(b"+RESET\r\n");
    }
}

/// PUBSUB HELP, as Redis 7.0 words it.
const HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_channel_and_payload() {
        let mut bytes = Vec::new();
        encode(b"news", b"hello", &mut bytes);
        assert_eq!(decode(&bytes), Some((&b"news"[..], &b"hello"[..])));
        encode(b"", b"", &mut bytes);
        assert_eq!(decode(&bytes), Some((&b""[..], &b""[..])));
        assert_eq!(decode(b"\x05\0\0\0abc"), None);
        assert_eq!(decode(b"ab"), None);
    }

    fn rendered(resp3: bool, group: &[u8]) -> Vec<u8> {
        let mut text = Text {
            resp3,
            ..Text::default()
        };
        text.reset(1 << 10);
        write_message(group, b"ch", b"hi", &mut text);
        text.bytes
    }

    #[test]
    fn a_kept_frame_is_used_only_for_the_same_message_group_and_protocol() {
        let mut frames = Frames::default();
        let mut bytes = Vec::new();
        encode(b"ch", b"hi", &mut bytes);
        let first = frames.get(b"\0ch", &bytes, false).unwrap().to_vec();
        assert_eq!(first, rendered(false, b"\0ch"));
        assert_eq!(frames.get(b"\0ch", &bytes, false).unwrap(), first);
        assert_eq!(
            frames.get(b"\0ch", &bytes, true).unwrap(),
            rendered(true, b"\0ch")
        );
        assert_eq!(
            frames.get(b"\x01c*", &bytes, true).unwrap(),
            rendered(true, b"\x01c*")
        );
        encode(b"ch", b"ho", &mut bytes);
        let other = frames.get(b"\x01c*", &bytes, true).unwrap();
        assert!(other.ends_with(b"$2\r\nho\r\n"), "{other:?}");
        assert_eq!(frames.get(b"\0ch", b"\x09", false), None);
    }

    #[test]
    fn message_frames_are_redis_frames_and_sized_exactly() {
        let message = rendered(false, b"\0ch");
        assert_eq!(message, b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");
        assert_eq!(message.len(), message_len(None, b"ch", b"hi"));
        let pmessage = rendered(false, b"\x01c*");
        assert_eq!(
            pmessage,
            b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert_eq!(pmessage.len(), message_len(Some(b"c*"), b"ch", b"hi"));
        assert_eq!(
            rendered(true, b"\0ch"),
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        );
        assert!(rendered(true, b"\x01c*").starts_with(b">4\r\n$8\r\npmessage\r\n"));
    }
}
