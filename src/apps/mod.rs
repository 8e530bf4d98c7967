//! The services built on the engine, each behind a `holdfast` subcommand or
//! protocol: [`echo`] (the default), [`kv`] (`--protocol resp`, a Redis 7
//! string store) and [`proxy`] (`holdfast proxy`, a RESP proxy over Redis
//! servers). They see the engine only through its
//! [`Service`](crate::engine::service::Service) API.

pub mod echo;
pub mod kv;
pub mod proxy;
